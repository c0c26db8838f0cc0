/**
 * A `stream.Duplex` over a non-blocking socket fd (vsock, AF_UNIX socketpair), driven by the
 * binding's `FdWatcher` (uv_poll) and its read/write/shutdownWrite/close calls.
 *
 * - Reads happen only while the consumer wants data: when `push()` returns false the watcher
 *   stops asking for READABLE until `_read` is called again (back-pressure reaches the peer).
 * - Writes go straight to write(2); on EAGAIN the rest of the chunk waits for WRITABLE.
 * - `end()` half-closes (shutdown(SHUT_WR)); end of file from the peer pushes null; with the
 *   default `allowHalfOpen` the other direction keeps working.
 * - `destroy()` stops and closes the watcher first, then closes the fd when the stream owns it
 *   (libuv requires that order).
 */
import { Duplex } from 'node:stream';
import { getSystemErrorName } from 'node:util';
import type { FdWatcher, NativeBinding } from '../../binding';
import { systemError } from '../../errors';

export interface FdDuplexOptions {
  /** close the fd on destroy (default true) */
  ownsFd?: boolean;
  /** bytes per read(2) (default 64 KiB); also the readable high-water mark */
  readSize?: number;
  /** writable high-water mark in bytes (default 64 KiB) */
  writableHighWaterMark?: number;
}

const DEFAULT_CHUNK = 64 * 1024;

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (error?: Error | null) => void;
}

export class FdDuplex extends Duplex {
  readonly fd: number;
  readonly #binding: NativeBinding;
  readonly #watcher: FdWatcher;
  readonly #ownsFd: boolean;
  readonly #readSize: number;
  #wantRead = false;
  #pendingWrite: PendingWrite | null = null;
  #events = 0;
  #readBuffer: Buffer | undefined;

  constructor(binding: NativeBinding, fd: number, options: FdDuplexOptions = {}) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd must be an integer >= 0, got ${String(fd)}`);
    const readSize = options.readSize ?? DEFAULT_CHUNK;
    if (!Number.isInteger(readSize) || readSize < 1) {
      throw new RangeError(`readSize must be an integer >= 1, got ${String(readSize)}`);
    }
    super({
      allowHalfOpen: true,
      readableHighWaterMark: readSize,
      writableHighWaterMark: options.writableHighWaterMark ?? DEFAULT_CHUNK,
      decodeStrings: true,
    });
    this.fd = fd;
    this.#binding = binding;
    this.#ownsFd = options.ownsFd ?? true;
    this.#readSize = readSize;
    this.#watcher = new binding.FdWatcher(fd, (status, events) => this.#onPoll(status, events));
  }

  #onPoll(status: number, events: number): void {
    if (status < 0) {
      // libuv stops the handle and reports POLLERR as EBADF; the socket's pending error
      // (SO_ERROR, e.g. ECONNRESET when the peer closed with unread data) says what happened.
      this.#events = 0;
      let error = systemError(getSystemErrorName(status), 'uv_poll');
      try {
        const pending = this.#binding.socketError(this.fd);
        if (pending !== 0) error = systemError(getSystemErrorName(-pending), this.#pendingWrite !== null ? 'write' : 'read');
      } catch {
        // not a socket (ENOTSOCK): keep libuv's error
      }
      this.destroy(error);
      return;
    }
    const { UV_READABLE, UV_WRITABLE, UV_DISCONNECT } = this.#binding.constants;
    if (events & UV_WRITABLE && this.#pendingWrite !== null) this.#flush();
    if (events & (UV_READABLE | UV_DISCONNECT) && this.#wantRead && !this.destroyed) this.#readNow();
  }

  /** Watch exactly the readiness the stream is waiting for. */
  #watch(): void {
    if (this.destroyed) return;
    const { UV_READABLE, UV_WRITABLE } = this.#binding.constants;
    const events = (this.#wantRead ? UV_READABLE : 0) | (this.#pendingWrite !== null ? UV_WRITABLE : 0);
    if (events === this.#events) return;
    this.#events = events;
    if (events === 0) this.#watcher.stop();
    else this.#watcher.start(events);
  }

  override _read(): void {
    this.#wantRead = true;
    this.#readNow();
  }

  #readNow(): void {
    try {
      for (;;) {
        const buffer = (this.#readBuffer ??= Buffer.allocUnsafe(this.#readSize));
        const n = this.#binding.read(this.fd, buffer, 0, buffer.length);
        if (n < 0) break; // EAGAIN: wait for READABLE
        if (n === 0) {
          this.#wantRead = false;
          this.push(null);
          break;
        }
        // A mostly full buffer is handed over; a short read is copied out and the buffer
        // reused, so small chunks neither pin nor reallocate a whole read buffer.
        let chunk: Buffer;
        if (n * 2 >= buffer.length) {
          chunk = buffer.subarray(0, n);
          this.#readBuffer = undefined;
        } else {
          chunk = Buffer.from(buffer.subarray(0, n));
        }
        // push() can run a 'data' listener that destroys the stream (and closes the fd).
        if (!this.push(chunk) || this.destroyed) {
          this.#wantRead = false;
          break;
        }
      }
    } catch (error) {
      this.destroy(error as Error);
      return;
    }
    this.#watch();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#pendingWrite = { chunk, offset: 0, callback };
    this.#flush();
  }

  #flush(): void {
    const pending = this.#pendingWrite as PendingWrite;
    try {
      while (pending.offset < pending.chunk.length) {
        const n = this.#binding.write(this.fd, pending.chunk, pending.offset, pending.chunk.length - pending.offset);
        if (n < 0) {
          this.#watch(); // EAGAIN: wait for WRITABLE
          return;
        }
        pending.offset += n;
      }
    } catch (error) {
      this.#pendingWrite = null;
      this.#watch();
      pending.callback(error as Error);
      return;
    }
    this.#pendingWrite = null;
    this.#watch();
    pending.callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    try {
      this.#binding.shutdownWrite(this.fd);
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#wantRead = false;
    this.#pendingWrite = null;
    this.#watcher.close();
    if (this.#ownsFd) {
      try {
        this.#binding.close(this.fd);
      } catch (closeError) {
        callback(error ?? (closeError as Error));
        return;
      }
    }
    callback(error);
  }
}
