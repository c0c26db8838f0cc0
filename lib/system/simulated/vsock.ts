/**
 * AF_VSOCK in the simulated kernel: the multikernel transport (CID = instance id, host = CID 0)
 * and the loopback transport (CID 1), following net/vmw_vsock/mk_transport.c,
 * net/vmw_vsock/af_vsock.c and kernel/multikernel/ipi.c (docs/kernel-interface.md, "Console, vsock and the exec agent").
 * Connected sockets are in-memory Duplex pairs. On the multikernel transport there is no flow
 * control (mk_transport.c@a92c0e12: stream_has_space is a constant, notify_poll_out always says
 * writable, mk_vsock_rx_pkt queues every packet on the receiving socket whatever its reader does):
 * a write completes at once and the peer's queue grows. A kernel that no longer runs (stopped or
 * hung) drains nothing: its IPI ring (MK_IPI_RING_SIZE slots of one packet each) takes what fits
 * and a write that does not fit waits for room, as the real adapter waits out ENOSPC. The loopback
 * transport (virtio-vsock's credit scheme) has a 64 KiB window per direction and back-pressure: a
 * write completes once the peer has room for it.
 */
import { Duplex } from 'node:stream';
import { systemError } from '../../errors';
import { VMADDR_CID_ANY, VMADDR_CID_LOCAL, VMADDR_PORT_ANY } from '../../uapi';
import type { VsockConnectOptions, VsockListenOptions, VsockServer, VsockStream } from '../system';
import type { SimChannelHost, SimInstanceInfo } from './channels';

/** The host's CID on the multikernel transport (the host is instance 0). */
export const HOST_CID = 0;
/** Per-direction window of the loopback transport. */
export const VSOCK_BUFFER_BYTES = 64 * 1024;
/**
 * Bytes of one multikernel vsock packet: MK_MAX_DATA_SIZE (4096, include/linux/multikernel.h)
 * less struct mk_message (24) less struct virtio_vsock_hdr (44); MK_VSOCK_MAX_PKT_SIZE in
 * mk_transport.c is the first difference, stream_enqueue sends at most it less the header.
 */
export const MK_PACKET_PAYLOAD = 4096 - 24 - 44;
/** MK_IPI_RING_SIZE: the slots of an instance's IPI ring (include/linux/multikernel.h). */
export const MK_RING_SLOTS = 64;

/** The free slots of a silent kernel's IPI ring, shared by its connections. */
export interface SimRing {
  free: number;
}
/** af_vsock's VSOCK_DEFAULT_CONNECT_TIMEOUT (2 * HZ). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
/** Ports up to this one need CAP_NET_BIND_SERVICE (af_vsock LAST_RESERVED_PORT). */
export const LAST_RESERVED_PORT = 1023;
const DEFAULT_BACKLOG = 128;

export interface VsockEndpoint {
  cid: number;
  port: number;
}

/** One end of a connected pair. */
export class SimVsockStream extends Duplex implements VsockStream {
  readonly localCid: number;
  readonly localPort: number;
  readonly remoteCid: number;
  readonly remotePort: number;
  peer!: SimVsockStream;
  /** set by freeze(): nothing moves any more, nothing is sent to the peer */
  frozen = false;
  /** the silent kernel's ring this end writes into, once frozen */
  #ring: SimRing | undefined;
  /** a write that found the silent kernel's ring full: it waits until this end is destroyed */
  #stuckWrite: ((error?: Error | null) => void) | undefined;
  #blockedWrite: (() => void) | undefined;
  readonly #onClose: () => void;
  readonly #flowControl: boolean;

  /** `flowControl`: the loopback transport's window; false on the multikernel transport. */
  constructor(local: VsockEndpoint, remote: VsockEndpoint, onClose: () => void, flowControl: boolean) {
    super({ highWaterMark: VSOCK_BUFFER_BYTES, allowHalfOpen: true });
    this.localCid = local.cid;
    this.localPort = local.port;
    this.remoteCid = remote.cid;
    this.remotePort = remote.port;
    this.#onClose = onClose;
    this.#flowControl = flowControl;
  }

  /**
   * The kernel at the other end stopped running: from now on nothing moves; what is written goes
   * into its IPI ring (`ring`, shared by its connections) until the ring is full.
   */
  freeze(ring: SimRing): void {
    this.frozen = true;
    this.#ring = ring;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.frozen) {
      // A hung or stopped kernel never drains its ring: what fits vanishes there, the rest waits.
      const ring = this.#ring!;
      const packets = Math.ceil(chunk.length / MK_PACKET_PAYLOAD);
      if (packets <= ring.free) {
        ring.free -= packets;
        callback();
      } else {
        ring.free = 0;
        this.#stuckWrite = callback;
      }
      return;
    }
    const peer = this.peer;
    if (peer.destroyed || peer.readableEnded) {
      callback(systemError('EPIPE', 'write'));
      return;
    }
    // multikernel: always writable, the receiving socket queues everything
    if (peer.push(chunk) || !this.#flowControl) callback();
    else this.#blockedWrite = () => callback();
  }

  override _read(): void {
    const blocked = this.peer.#blockedWrite;
    this.peer.#blockedWrite = undefined;
    blocked?.();
  }

  override _final(callback: (error?: Error | null) => void): void {
    // shutdown(SHUT_WR): the peer reads end of file.
    if (!this.frozen && !this.peer.destroyed) this.peer.push(null);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#onClose();
    const stuck = this.#stuckWrite;
    this.#stuckWrite = undefined;
    stuck?.(error ?? Object.assign(new Error('Cannot call write after a stream was destroyed'), { code: 'ERR_STREAM_DESTROYED' }));
    const peer = this.peer;
    if (!this.frozen && !peer.destroyed) {
      // release() sends OP_SHUTDOWN: the peer reads end of file, its writes fail.
      if (!peer.readableEnded) peer.push(null);
      const blocked = peer.#blockedWrite;
      peer.#blockedWrite = undefined;
      blocked?.();
    }
    callback(error);
  }
}

class SimVsockServer implements VsockServer {
  readonly port: number;
  readonly backlog: number;
  readonly #queue: SimVsockStream[] = [];
  readonly #waiters: { resolve: (s: SimVsockStream) => void; reject: (e: unknown) => void }[] = [];
  #closed = false;
  readonly #onClose: () => void;

  constructor(port: number, backlog: number, onClose: () => void) {
    this.port = port;
    this.backlog = backlog;
    this.#onClose = onClose;
  }

  /** sk_acceptq_is_full */
  get full(): boolean {
    return this.#queue.length >= this.backlog;
  }

  enqueue(stream: SimVsockStream): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(stream);
    else this.#queue.push(stream);
  }

  accept(options: { signal?: AbortSignal } = {}): Promise<SimVsockStream> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#closed) return Promise.reject(systemError('EBADF', 'accept'));
    const ready = this.#queue.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(signal!.reason);
      };
      const waiter = {
        resolve: (s: SimVsockStream) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(s);
        },
        reject: (e: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
    for (const waiter of this.#waiters.splice(0)) waiter.reject(systemError('EBADF', 'accept'));
    // Connections never accepted are reset, as when a listening socket with a backlog is closed.
    for (const pending of this.#queue.splice(0)) pending.peer.destroy(systemError('ECONNRESET', 'read'));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SimVsockStream> {
    while (!this.#closed) {
      try {
        yield await this.accept();
      } catch {
        return; // without a signal, accept() only fails once the listener is closed
      }
    }
  }
}

/** What the vsock layer needs from the rest of the simulated kernel. */
export interface SimVsockOptions {
  /** may bind ports <= 1023 (CAP_NET_BIND_SERVICE) */
  privileged: boolean;
  connectTimeoutMs: number;
  /** the socket listening on `port` inside the instance, if any: it takes the instance's end of a new connection */
  instanceListener(info: SimInstanceInfo, port: number): ((stream: SimVsockStream) => void) | undefined;
}

interface InstanceConnection {
  hostSide: SimVsockStream;
  guestSide: SimVsockStream;
}

export class SimVsock {
  readonly #host: SimChannelHost;
  readonly #options: SimVsockOptions;
  /** ports bound by host sockets: listeners and connecting sockets share one table, as in af_vsock */
  readonly #boundPorts = new Set<number>();
  readonly #listeners = new Map<number, SimVsockServer>();
  readonly #byInstance = new Map<number, Set<InstanceConnection>>();
  readonly #loopback = new Set<SimVsockStream>();
  #nextEphemeral = LAST_RESERVED_PORT + 1;

  constructor(host: SimChannelHost, options: SimVsockOptions) {
    this.#host = host;
    this.#options = options;
  }

  #bind(port: number | undefined, syscall: string): number {
    if (port === undefined || port === VMADDR_PORT_ANY) {
      // af_vsock starts its counter at a random port above 1023; the simulator counts from 1024.
      while (this.#boundPorts.has(this.#nextEphemeral)) this.#nextEphemeral++;
      port = this.#nextEphemeral++;
    } else {
      if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) throw systemError('EINVAL', syscall);
      if (port <= LAST_RESERVED_PORT && !this.#options.privileged) throw systemError('EACCES', syscall);
      if (this.#boundPorts.has(port)) throw systemError('EADDRINUSE', syscall);
    }
    this.#boundPorts.add(port);
    return port;
  }

  async listen(options: VsockListenOptions): Promise<VsockServer> {
    const cid = options.cid ?? VMADDR_CID_ANY;
    if (cid !== VMADDR_CID_ANY && cid !== (options.multikernel === false ? VMADDR_CID_LOCAL : HOST_CID)) throw systemError('EADDRNOTAVAIL', 'bind');
    const port = this.#bind(options.port, 'bind');
    const server = new SimVsockServer(port, options.backlog ?? DEFAULT_BACKLOG, () => {
      this.#listeners.delete(port);
      this.#boundPorts.delete(port);
    });
    this.#listeners.set(port, server);
    return server;
  }

  async connect(options: VsockConnectOptions): Promise<VsockStream> {
    const { signal } = options;
    if (signal?.aborted) throw signal.reason;
    const multikernel = options.multikernel ?? true;
    // The loopback transport only reaches CID 1; without a guest/host transport other CIDs have none.
    if (!multikernel && options.cid !== VMADDR_CID_LOCAL) throw systemError('ENODEV', 'connect');
    const localPort = this.#bind(options.localPort, options.localPort === undefined ? 'connect' : 'bind');
    let ok = false;
    try {
      // halfway: the request goes out and is lost, so the connect times out.
      if ((await this.#host.faults.hit('vsock.connect', { id: options.cid, syscall: 'connect' })) === 'halfway') await this.#timeout(signal);
      const stream = multikernel ? await this.#connectInstance(options.cid, options.port, localPort, signal) : this.#connectLoopback(options.port, localPort);
      ok = true;
      return stream;
    } finally {
      if (!ok) this.#boundPorts.delete(localPort);
    }
  }

  #pair(local: VsockEndpoint, remote: VsockEndpoint, onClose: () => void, flowControl: boolean): [SimVsockStream, SimVsockStream] {
    let open = 2;
    const release = (): void => {
      if (--open === 0) onClose();
    };
    const hostSide = new SimVsockStream(
      local,
      remote,
      () => {
        this.#boundPorts.delete(local.port);
        release();
      },
      flowControl,
    );
    const other = new SimVsockStream(remote, local, release, flowControl);
    hostSide.peer = other;
    other.peer = hostSide;
    return [hostSide, other];
  }

  #connectLoopback(port: number, localPort: number): SimVsockStream {
    const server = this.#listeners.get(port);
    // vsock_loopback answers a request nobody listens for with a reset, so connect() fails ECONNRESET.
    if (!server || server.full) throw systemError('ECONNRESET', 'connect');
    const [client, accepted] = this.#pair(
      { cid: VMADDR_CID_LOCAL, port: localPort },
      { cid: VMADDR_CID_LOCAL, port },
      () => {
        this.#loopback.delete(client);
      },
      true,
    );
    this.#loopback.add(client);
    server.enqueue(accepted);
    return client;
  }

  async #connectInstance(cid: number, port: number, localPort: number, signal: AbortSignal | undefined): Promise<SimVsockStream> {
    const info = await this.#host.instanceById(cid);
    // multikernel_send_ipi_data(): no such instance → EINVAL; no IPI area (no image loaded) → ENODEV.
    if (!info) throw systemError('EINVAL', 'connect');
    if (info.status === 'ready') throw systemError('ENODEV', 'connect');
    // A stopped (loaded) or hung kernel never answers the request: the connect times out.
    if (info.status !== 'active' || info.hung) return this.#timeout(signal);
    const listener = this.#options.instanceListener(info, port);
    // No socket bound to that port in a live instance: mk_vsock_rx_pkt() answers with
    // mk_vsock_send_rst(); OP_RST sets sk_err = ECONNRESET, which vsock_connect() returns.
    if (!listener) throw systemError('ECONNRESET', 'connect');
    const connection = {} as InstanceConnection;
    const [hostSide, guestSide] = this.#pair(
      { cid: HOST_CID, port: localPort },
      { cid, port },
      () => {
        this.#byInstance.get(cid)?.delete(connection);
      },
      false,
    );
    connection.hostSide = hostSide;
    connection.guestSide = guestSide;
    let set = this.#byInstance.get(cid);
    if (!set) this.#byInstance.set(cid, (set = new Set()));
    set.add(connection);
    listener(guestSide);
    return hostSide;
  }

  #timeout(signal: AbortSignal | undefined): Promise<never> {
    return new Promise((_resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        reject(systemError('ETIMEDOUT', 'connect'));
      }, this.#options.connectTimeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * The spawn kernel went down, whichever way (core.c mk_notify_down_and_park). It released no
   * sockets, so nothing reaches the host: the host's ends stay open and silent, and what it
   * writes vanishes. The spawn's ends go away without a word (its processes died with it).
   */
  instanceStopped(id: number): void {
    const ring: SimRing = { free: MK_RING_SLOTS };
    for (const { hostSide, guestSide } of this.#byInstance.get(id) ?? []) {
      hostSide.freeze(ring);
      guestSide.freeze(ring);
      guestSide.destroy();
    }
    this.#byInstance.delete(id);
  }

  /** The spawn kernel hangs: its connections fall silent in both directions and stay open. */
  instanceHung(id: number): void {
    const ring: SimRing = { free: MK_RING_SLOTS };
    for (const { hostSide, guestSide } of this.#byInstance.get(id) ?? []) {
      hostSide.freeze(ring);
      guestSide.freeze(ring);
    }
  }

  async close(): Promise<void> {
    for (const server of [...this.#listeners.values()]) await server.close();
    // The simulated host goes away: its end of every instance connection is reset.
    for (const streams of this.#byInstance.values()) {
      for (const { hostSide, guestSide } of streams) {
        hostSide.destroy(systemError('ECONNRESET', 'read'));
        guestSide.destroy();
      }
    }
    this.#byInstance.clear();
    for (const stream of [...this.#loopback]) stream.destroy();
  }
}
