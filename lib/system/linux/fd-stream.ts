/**
 * A `stream.Duplex` over a non-blocking socket (vsock, AF_UNIX socketpair) held by an addon
 * `FdHandle`, driven by the handle's readiness watch (uv_poll) and its read/write/shutdownWrite.
 *
 * - Reads happen only while the consumer wants data: when `push()` returns false the watcher
 *   stops asking for READABLE until `_read` is called again (back-pressure reaches the peer).
 * - Writes go straight to write(2); on EAGAIN the rest of the chunk waits for WRITABLE. A paced
 *   stream (a transport without flow control) writes at most `maxWrite` bytes per write(2) and
 *   waits out a full ring (ENOSPC, ENOBUFS, ENOMEM) on a timer, so its writer sees back-pressure
 *   (write() returns false past the high-water mark) instead of an error, and its memory stays
 *   bounded by that mark.
 * - `end()` half-closes (shutdown(SHUT_WR)); end of file from the peer pushes null; with the
 *   default `allowHalfOpen` the other direction keeps working.
 * - `destroy()` closes the handle (the addon stops the watch, closes the uv handle, then the fd,
 *   as libuv requires); a write still waiting for WRITABLE fails with the destroy error (or
 *   ERR_STREAM_DESTROYED, as Node fails writes it had buffered).
 */
import { Duplex } from 'node:stream';
import type { FdHandle, NativeBinding } from '../../binding';
import { errnoError } from '../../errors';

export interface FdDuplexOptions {
  /** bytes per read(2) (default 64 KiB); also the readable high-water mark */
  readSize?: number;
  /** writable high-water mark in bytes (default 64 KiB) */
  writableHighWaterMark?: number;
  /**
   * For a transport without flow control (the multikernel vsock transport: always writable, every
   * write goes into the instance's IPI ring): at most this many bytes per write(2), and a write
   * the kernel refuses for lack of room (`ENOSPC` from a full ring, `ENOBUFS`, `ENOMEM`) is tried
   * again after a pause (1 ms, doubling up to 64 ms) instead of failing the stream. Default: off.
   */
  paced?: { maxWrite: number };
}

/** errnos that mean "no room now" on a transport without flow control */
const NO_ROOM = new Set(['ENOSPC', 'ENOBUFS', 'ENOMEM']);
const FIRST_PAUSE_MS = 1;
const LONGEST_PAUSE_MS = 64;

const DEFAULT_CHUNK = 64 * 1024;

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (error?: Error | null) => void;
}

function destroyedError(): Error {
  return Object.assign(new Error('Cannot call write after a stream was destroyed'), { code: 'ERR_STREAM_DESTROYED' });
}

/** The stream owns its handle: destroy() closes it. */
export class FdDuplex extends Duplex {
  /** the fd number (for diagnostics; it is free for reuse once the stream is closed) */
  readonly fd: number;
  readonly #binding: NativeBinding;
  readonly #handle: FdHandle;
  readonly #onPollCallback = (status: number, events: number): void => this.#onPoll(status, events);
  readonly #readSize: number;
  #wantRead = false;
  #pendingWrite: PendingWrite | null = null;
  #events = 0;
  #readBuffer: Buffer | undefined;
  readonly #maxWrite: number;
  readonly #paced: boolean;
  #pauseMs = FIRST_PAUSE_MS;
  #retry: NodeJS.Timeout | undefined;

  constructor(binding: NativeBinding, handle: FdHandle, options: FdDuplexOptions = {}) {
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
    this.fd = handle.fd;
    this.#binding = binding;
    this.#handle = handle;
    this.#readSize = readSize;
    this.#paced = options.paced !== undefined;
    this.#maxWrite = options.paced?.maxWrite ?? Number.MAX_SAFE_INTEGER;
    if (!Number.isInteger(this.#maxWrite) || this.#maxWrite < 1) throw new RangeError(`paced.maxWrite must be an integer >= 1, got ${String(this.#maxWrite)}`);
  }

  #onPoll(status: number, events: number): void {
    if (status < 0) {
      // libuv stops the handle and reports POLLERR as EBADF; the socket's pending error
      // (SO_ERROR, e.g. ECONNRESET when the peer closed with unread data) says what happened.
      this.#events = 0;
      let error = errnoError(-status, 'uv_poll');
      try {
        const pending = this.#handle.socketError();
        if (pending !== 0) error = errnoError(pending, this.#pendingWrite !== null ? 'write' : 'read');
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
    if (events === 0) this.#handle.unwatch();
    else this.#handle.watch(events, this.#onPollCallback);
  }

  override _read(): void {
    this.#wantRead = true;
    this.#readNow();
  }

  #readNow(): void {
    try {
      for (;;) {
        const buffer = (this.#readBuffer ??= Buffer.allocUnsafe(this.#readSize));
        const n = this.#handle.read(buffer, 0, buffer.length);
        if (n < 0) break; // EAGAIN: wait for READABLE
        if (n === 0) {
          this.#wantRead = false;
          this.push(null);
          break;
        }
        // A mostly full buffer is handed over; a short read is copied out and the buffer
        // reused, so small chunks neither pin nor reallocate a whole read buffer.
        const short = n < buffer.length;
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
        // A short read from a stream socket took all it had: wait for READABLE (the watch is
        // level-triggered, so data that came meanwhile wakes it at once) instead of a read(2)
        // that would only say EAGAIN. libuv's streams stop after a short read the same way; for
        // a ping-pong this is one system call in four.
        if (short) break;
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
        const n = this.#handle.write(pending.chunk, pending.offset, Math.min(pending.chunk.length - pending.offset, this.#maxWrite));
        if (n < 0) {
          this.#watch(); // EAGAIN: wait for WRITABLE
          return;
        }
        pending.offset += n;
        this.#pauseMs = FIRST_PAUSE_MS;
      }
    } catch (error) {
      if (this.#paced && NO_ROOM.has(String((error as NodeJS.ErrnoException).code))) {
        // the ring is full: no readiness event will say when it drains, so look again later
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.#flush();
        }, this.#pauseMs);
        this.#pauseMs = Math.min(this.#pauseMs * 2, LONGEST_PAUSE_MS);
        return;
      }
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
      this.#handle.shutdownWrite();
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#wantRead = false;
    clearTimeout(this.#retry);
    const pending = this.#pendingWrite;
    this.#pendingWrite = null;
    let closeError: Error | null = null;
    try {
      this.#handle.close();
    } catch (e) {
      closeError = e as Error;
    }
    // The write waiting for WRITABLE will never finish: fail it, or the writer waits forever.
    pending?.callback(error ?? closeError ?? destroyedError());
    callback(error ?? closeError);
  }
}
