/**
 * Byte channels to instances on the multikernel vsock transport (docs/kernel-interface.md,
 * "AF_VSOCK"): a connect to an instance's port, a listener for connections from instances, and
 * the liveness probe built on the transport's answer to a port nobody uses. The host is CID 0 on
 * this transport and an instance's CID is its id.
 */
import { MultikernelError, isSystemError } from './errors';
import type { System, VsockServer, VsockStream } from './system/system';

export interface ConnectOptions {
  /** bind this local port first (ports up to 1023 need root) */
  localPort?: number;
  /** give up after this many ms (default: the kernel's own 2 s connect timeout) */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Connects to `port` of instance `id` (`name` for messages); typed errors for a reset and a timeout. */
export async function connectChannel(system: System, id: number, name: string, port: number, options: ConnectOptions = {}): Promise<VsockStream> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) throw new MultikernelError('ERR_MK_INVALID_SPEC', `port must be 0..4294967295, got ${port}`);
  const limit = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
  const signals = [options.signal, limit].filter((s): s is AbortSignal => s !== undefined);
  const signal = signals.length === 0 ? undefined : AbortSignal.any(signals);
  try {
    return await system.vsockConnect({ cid: id, port, ...(options.localPort !== undefined ? { localPort: options.localPort } : {}), ...(signal ? { signal } : {}) });
  } catch (err) {
    options.signal?.throwIfAborted();
    if (isSystemError(err, 'ECONNRESET', 'ECONNREFUSED')) {
      throw new MultikernelError('ERR_MK_CHANNEL_REFUSED', `nothing listens on vsock port ${port} in instance "${name}" (it answered with a reset)`, {
        cause: err,
        details: { name, id, port },
      });
    }
    if (isSystemError(err, 'ETIMEDOUT') || limit?.aborted) {
      throw new MultikernelError('ERR_MK_CHANNEL_TIMEOUT', `instance "${name}" did not answer a connect to vsock port ${port}: it may hang (instance.probe() tells)`, {
        cause: err,
        details: { name, id, port },
      });
    }
    throw err;
  }
}

/** Listens for connections from instances on `port` of the host (CID 0 on the multikernel transport). */
export function listenChannel(system: System, port: number, options: { backlog?: number } = {}): Promise<VsockServer> {
  return system.vsockListen({ port, multikernel: true, ...(options.backlog !== undefined ? { backlog: options.backlog } : {}) });
}

/** A port no agent or service this library knows binds: a connect to it is answered with a reset by a live kernel. */
export const PROBE_PORT = 0xfffffffe;

export type Liveness = 'alive' | 'hung' | 'stopped';

export interface ProbeOptions {
  /** connects tried before calling the instance hung (default 5) */
  attempts?: number;
  /** how long each connect waits, ms (default 100: multikernel/kmorph's lib/probe.c uses 5 x 100 ms) */
  attemptMs?: number;
  signal?: AbortSignal;
}

/**
 * An `active` instance's kernel answers a connect to a port nobody listens on at once, with a
 * reset (mk_transport.c mk_vsock_send_rst); a hung one answers nothing. `status` is read by the
 * caller first: anything but `active` is `stopped`.
 */
export async function probeLiveness(system: System, id: number, options: ProbeOptions = {}): Promise<'alive' | 'hung'> {
  const attempts = options.attempts ?? 5;
  const attemptMs = options.attemptMs ?? 100;
  if (!Number.isInteger(attempts) || attempts < 1) throw new MultikernelError('ERR_MK_INVALID_SPEC', `attempts must be a positive integer, got ${attempts}`);
  for (let i = 0; i < attempts; i++) {
    options.signal?.throwIfAborted();
    const limit = AbortSignal.timeout(attemptMs);
    try {
      const stream = await system.vsockConnect({ cid: id, port: PROBE_PORT, signal: options.signal ? AbortSignal.any([options.signal, limit]) : limit });
      // someone listens even there: the kernel answered, so it lives
      stream.destroy();
      return 'alive';
    } catch (err) {
      options.signal?.throwIfAborted();
      if (isSystemError(err, 'ECONNRESET', 'ECONNREFUSED')) return 'alive';
      if (!limit.aborted && !isSystemError(err, 'ETIMEDOUT')) throw err;
    }
  }
  return 'hung';
}
