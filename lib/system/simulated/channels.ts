/**
 * The seam between the simulated kernel core (kernfs, overlays, kexec, reboot: simulated/kernel)
 * and its communication channels (/dev/mktty, vsock and the kerf-init agent: simulated/mktty,
 * simulated/vsock, simulated/agent). The core owns instance state; the channels ask it afresh
 * on every decision (state may have been changed by another process sharing the state directory).
 */
import type { DeviceHandle, VsockConnectOptions, VsockListenOptions, VsockServer, VsockStream } from '../system';
import type { FaultInjector } from './faults';

export type SimInstanceStatus = 'ready' | 'loaded' | 'active';

/** What the channels may know of an instance, read fresh from the core. */
export interface SimInstanceInfo {
  id: number;
  name: string;
  status: SimInstanceStatus;
  /** true after a simulated panic: status stays 'active' while console and vsock fall silent */
  panicked: boolean;
  /** the command line the image was loaded with ('' when none is loaded) */
  cmdline: string;
}

/** Provided by the core to the channels. */
export interface SimChannelHost {
  instanceById(id: number): Promise<SimInstanceInfo | undefined>;
  readonly faults: FaultInjector;
}

/** Implemented by the channels (createSimChannels in simulated/channels-impl.ts), used by the core. */
export interface SimChannels {
  /** open("/dev/mktty", O_RDWR|O_NONBLOCK) */
  openMktty(): Promise<DeviceHandle>;
  vsockConnect(options: VsockConnectOptions): Promise<VsockStream>;
  vsockListen(options: VsockListenOptions): Promise<VsockServer>;
  /** the instance was just started: its boot log goes to the console, its agent starts listening on port 1023 */
  instanceStarted(id: number): void;
  /**
   * The instance stopped and its console stops. How it stopped decides what its vsock peers see
   * (net/vmw_vsock/mk_transport.c): after a graceful halt or a poweroff from inside ('shutdown')
   * the spawn released its sockets, which sends OP_SHUTDOWN: the host reads end of file and its
   * writes then fail. A forced halt ('forced') stops the spawn's CPUs: nothing is sent, and the
   * connections stay open and silent, as after a panic.
   */
  instanceStopped(id: number, how: 'shutdown' | 'forced'): void;
  /** the instance panicked: console output and vsock traffic stop without any reset */
  instancePanicked(id: number): void;
  /** closes every open channel (used when the simulated host is disposed) */
  close(): Promise<void>;
}

export type CreateSimChannels = (host: SimChannelHost) => SimChannels;
