/**
 * AF_VSOCK client and server streams over the native binding (Node's `net` has no vsock).
 * Used by the Linux `System` adapter; takes the binding as a parameter so it can be tested
 * with a fake binding on machines without vsock.
 */
import { getSystemErrorName } from 'node:util';
import type { FdWatcher, NativeBinding, VsockAddress } from '../../binding';
import { systemError } from '../../errors';
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

/** A connected vsock socket. */
class VsockSocket extends FdDuplex implements VsockStream {
  readonly localCid: number;
  readonly localPort: number;
  readonly remoteCid: number;
  readonly remotePort: number;
  constructor(binding: NativeBinding, fd: number, local: VsockAddress, remote: VsockAddress) {
    super(binding, fd);
    this.localCid = local.cid;
    this.localPort = local.port;
    this.remoteCid = remote.cid;
    this.remotePort = remote.port;
  }
}

/** Resolves when `fd` is writable (a non-blocking connect finished); rejects on abort. */
/** Resolves with the poll status once the socket is writable or has failed (status < 0). */
function waitWritable(binding: NativeBinding, fd: number, signal: AbortSignal | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      watcher.close();
      reject(signal?.reason);
    };
    const watcher = new binding.FdWatcher(fd, (status) => {
      watcher.close();
      signal?.removeEventListener('abort', onAbort);
      resolve(status);
    });
    watcher.start(binding.constants.UV_WRITABLE);
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

  const fd = binding.vsockSocket(multikernel);
  try {
    if (localPort !== undefined) binding.vsockBind(fd, VMADDR_CID_ANY, localPort);
    const status = binding.vsockConnect(fd, cid, port) ? 0 : await waitWritable(binding, fd, signal);
    // A failed connect shows as POLLERR, which libuv reports as EBADF: the socket's own error
    // (SO_ERROR, e.g. ECONNRESET) says what happened.
    const err = binding.socketError(fd);
    if (err !== 0) throw systemError(getSystemErrorName(-err), 'connect');
    if (status < 0) throw systemError(getSystemErrorName(status), 'connect');
    return new VsockSocket(binding, fd, binding.vsockLocalAddress(fd), binding.vsockRemoteAddress(fd));
  } catch (error) {
    binding.close(fd);
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
  readonly #fd: number;
  readonly #watcher: FdWatcher;
  readonly #waiters: Waiter[] = [];
  #watching = false;
  #closed: Promise<void> | undefined;

  constructor(binding: NativeBinding, fd: number, port: number) {
    this.port = port;
    this.#binding = binding;
    this.#fd = fd;
    this.#watcher = new binding.FdWatcher(fd, (status) => this.#onReadable(status));
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
      const error = systemError(getSystemErrorName(status), 'accept4');
      for (const waiter of [...this.#waiters]) {
        this.#remove(waiter);
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
      let conn: { fd: number; cid: number; port: number } | null;
      let stream: VsockStream;
      try {
        conn = this.#binding.vsockAccept(this.#fd);
        if (conn === null) break;
        try {
          stream = new VsockSocket(this.#binding, conn.fd, this.#binding.vsockLocalAddress(conn.fd), conn);
        } catch (error) {
          this.#binding.close(conn.fd);
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
    if (want) this.#watcher.start(this.#binding.constants.UV_READABLE);
    else this.#watcher.stop();
  }

  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      const error = serverClosedError();
      for (const waiter of [...this.#waiters]) {
        this.#remove(waiter);
        waiter.reject(error);
      }
      this.#watcher.close();
      this.#binding.close(this.#fd);
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
  const fd = binding.vsockSocket(multikernel);
  try {
    binding.vsockBind(fd, cid, port);
    binding.vsockListen(fd, backlog);
    return new NativeVsockServer(binding, fd, binding.vsockLocalAddress(fd).port);
  } catch (error) {
    binding.close(fd);
    throw error;
  }
}
