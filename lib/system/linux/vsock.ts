/**
 * AF_VSOCK client and server streams over the native binding (Node's `net` has no vsock).
 * Used by the Linux `System` adapter; takes the binding as a parameter so it can be tested
 * with a fake binding on machines without vsock.
 */
import type { FdHandle, NativeBinding, VsockAddress } from '../../binding';
import { errnoError } from '../../errors';
import { FdDuplex } from './fd-stream';
import type { VsockConnectOptions, VsockListenOptions, VsockServer, VsockStream } from '../system';
import { VMADDR_CID_ANY } from '../../uapi';

const U32_MAX = 0xffffffff;
const DEFAULT_BACKLOG = 128;

function checkU32(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new RangeError(`${name} must be an integer 0..${U32_MAX}, got ${value}`);
  }
  return value;
}

function checkBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${typeof value}`);
  return value;
}

function checkSignal(value: unknown): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value;
  throw new TypeError('signal must be an AbortSignal');
}

/**
 * Bytes per write(2) on the multikernel transport. It has no flow control (mk_transport.c@a92c0e12:
 * stream_has_space is a constant 64 KiB, notify_poll_out always says writable, and the receiving
 * kernel queues every packet whatever its reader does); each write(2) becomes packets of at most
 * one IPI slot (4 KiB less headers) in the instance's 64-slot ring, which `ENOSPC` reports full.
 * 16 KiB per write keeps one write to a handful of slots, so console and control messages still
 * find room, and a full ring is waited out (FdDuplexOptions.paced) instead of failing the stream.
 */
export const MULTIKERNEL_MAX_WRITE = 16 * 1024;

/** A connected vsock socket. */
class VsockSocket extends FdDuplex implements VsockStream {
  readonly localCid: number;
  readonly localPort: number;
  readonly remoteCid: number;
  readonly remotePort: number;
  constructor(binding: NativeBinding, socket: FdHandle, local: VsockAddress, remote: VsockAddress, multikernel: boolean) {
    super(binding, socket, multikernel ? { paced: { maxWrite: MULTIKERNEL_MAX_WRITE } } : {});
    this.localCid = local.cid;
    this.localPort = local.port;
    this.remoteCid = remote.cid;
    this.remotePort = remote.port;
  }
}

/**
 * Resolves with the poll status once the socket is writable (a non-blocking connect finished) or
 * has failed (status < 0); rejects with the reason on abort.
 */
function waitWritable(binding: NativeBinding, socket: FdHandle, signal: AbortSignal | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      socket.unwatch();
      reject(signal?.reason);
    };
    socket.watch(binding.constants.UV_WRITABLE, (status) => {
      socket.unwatch();
      signal?.removeEventListener('abort', onAbort);
      resolve(status);
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * socket, optional bind to `localPort`, non-blocking connect, wait until writable, SO_ERROR.
 * On any failure or abort the socket is closed and the promise rejects (with `signal.reason`
 * when aborted).
 */
export async function vsockConnect(binding: NativeBinding, options: VsockConnectOptions): Promise<VsockStream> {
  const cid = checkU32(options.cid, 'cid');
  const port = checkU32(options.port, 'port');
  const localPort = options.localPort === undefined ? undefined : checkU32(options.localPort, 'localPort');
  const multikernel = checkBoolean(options.multikernel, 'multikernel', true);
  const signal = checkSignal(options.signal);
  signal?.throwIfAborted();

  const socket = binding.vsockSocket(multikernel);
  try {
    if (localPort !== undefined) binding.vsockBind(socket, VMADDR_CID_ANY, localPort);
    const status = binding.vsockConnect(socket, cid, port) ? 0 : await waitWritable(binding, socket, signal);
    // A failed connect shows as POLLERR, which libuv reports as EBADF: the socket's own error
    // (SO_ERROR, e.g. ECONNRESET) says what happened.
    const err = socket.socketError();
    if (err !== 0) throw errnoError(err, 'connect');
    if (status < 0) throw errnoError(-status, 'connect');
    return new VsockSocket(binding, socket, binding.vsockLocalAddress(socket), binding.vsockRemoteAddress(socket), multikernel);
  } catch (error) {
    socket.close();
    throw error;
  }
}

interface Waiter {
  resolve(stream: VsockStream): void;
  reject(error: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

class NativeVsockServer implements VsockServer {
  readonly port: number;
  readonly #binding: NativeBinding;
  readonly #socket: FdHandle;
  readonly #onReadableCallback = (status: number): void => this.#onReadable(status);
  readonly #waiters: Waiter[] = [];
  #watching = false;
  #closed: Promise<void> | undefined;
  /** on the multikernel transport: accepted connections are paced */
  readonly #multikernel: boolean;

  constructor(binding: NativeBinding, socket: FdHandle, port: number, multikernel: boolean) {
    this.port = port;
    this.#binding = binding;
    this.#socket = socket;
    this.#multikernel = multikernel;
  }

  accept(options: { signal?: AbortSignal } = {}): Promise<VsockStream> {
    return new Promise((resolve, reject) => {
      const signal = checkSignal(options.signal);
      signal?.throwIfAborted();
      if (this.#closed !== undefined) throw serverClosedError();
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          this.#remove(waiter);
          reject(signal?.reason);
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#acceptPending();
    });
  }

  #remove(waiter: Waiter): void {
    this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
    waiter.signal?.removeEventListener('abort', waiter.onAbort);
    this.#updateWatch();
  }

  #onReadable(status: number): void {
    if (status < 0) {
      this.#watching = false; // libuv stopped the watch with the error
      const error = errnoError(-status, 'accept4');
      for (const waiter of this.#waiters.splice(0)) {
        waiter.signal?.removeEventListener('abort', waiter.onAbort);
        waiter.reject(error);
      }
      return;
    }
    this.#acceptPending();
  }

  /** Hands pending connections to waiters, in order, until one side runs out. */
  #acceptPending(): void {
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0] as Waiter;
      let conn: { socket: FdHandle; cid: number; port: number } | null;
      let stream: VsockStream;
      try {
        conn = this.#binding.vsockAccept(this.#socket);
        if (conn === null) break;
        try {
          stream = new VsockSocket(this.#binding, conn.socket, this.#binding.vsockLocalAddress(conn.socket), conn, this.#multikernel);
        } catch (error) {
          conn.socket.close();
          throw error;
        }
      } catch (error) {
        this.#remove(waiter);
        waiter.reject(error);
        continue;
      }
      this.#remove(waiter);
      waiter.resolve(stream);
    }
    this.#updateWatch();
  }

  #updateWatch(): void {
    const want = this.#waiters.length > 0 && this.#closed === undefined;
    if (want === this.#watching) return;
    this.#watching = want;
    if (want) this.#socket.watch(this.#binding.constants.UV_READABLE, this.#onReadableCallback);
    else this.#socket.unwatch();
  }

  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      const error = serverClosedError();
      for (const waiter of [...this.#waiters]) {
        this.#remove(waiter);
        waiter.reject(error);
      }
      this.#socket.close();
      resolve();
    });
    return this.#closed;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<VsockStream> {
    while (this.#closed === undefined) {
      try {
        yield await this.accept();
      } catch (error) {
        if (this.#closed !== undefined) return;
        throw error;
      }
    }
  }
}

function serverClosedError(): Error {
  return Object.assign(new Error('The vsock server is closed'), { code: 'ERR_SERVER_NOT_RUNNING' });
}

/** socket, bind(cid, port), listen; the server's `port` is the bound one (useful with VMADDR_PORT_ANY). */
export async function vsockListen(binding: NativeBinding, options: VsockListenOptions): Promise<VsockServer> {
  const port = checkU32(options.port, 'port');
  const cid = options.cid === undefined ? VMADDR_CID_ANY : checkU32(options.cid, 'cid');
  const multikernel = checkBoolean(options.multikernel, 'multikernel', true);
  const backlog = options.backlog ?? DEFAULT_BACKLOG;
  if (!Number.isInteger(backlog) || backlog < 0 || backlog > 65535) {
    throw new RangeError(`backlog must be an integer 0..65535, got ${String(backlog)}`);
  }
  const socket = binding.vsockSocket(multikernel);
  try {
    binding.vsockBind(socket, cid, port);
    binding.vsockListen(socket, backlog);
    return new NativeVsockServer(binding, socket, binding.vsockLocalAddress(socket).port, multikernel);
  } catch (error) {
    socket.close();
    throw error;
  }
}
