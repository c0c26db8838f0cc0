/**
 * The seam between the simulated kernel core (kernfs, overlays, kexec, reboot: simulated/kernel)
 * and its communication channels (/dev/mktty, vsock and the kerf-init agent: simulated/mktty,
 * simulated/vsock, simulated/agent). The core owns instance state; the channels ask it afresh
 * on every decision (state may have been changed by another process sharing the state directory).
 */
import type { DeviceHandle, VsockConnectOptions, VsockListenOptions, VsockServer, VsockStream } from '../system';
import type { FaultInjector } from './faults';

export type SimInstanceStatus = 'ready' | 'loaded' | 'active';

/** How a spawn kernel went down (SimChannels.instanceStopped). */
export type SimStopCause = 'halt' | 'poweroff' | 'panic' | 'forced';

/** What the channels may know of an instance, read fresh from the core. */
export interface SimInstanceInfo {
  id: number;
  name: string;
  status: SimInstanceStatus;
  /** the spawn kernel hangs: status stays 'active' while console and vsock fall silent */
  hung: boolean;
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
   * The spawn kernel went down and parked its CPUs: after a graceful halt ('halt'), a poweroff
   * from inside ('poweroff'), a panic ('panic': panic_timeout -1 makes it halt to the pool) or a
   * forced halt ('forced', an NMI). The console shows what that kernel printed on the way down,
   * then nothing. None of these paths releases the spawn's sockets (kernel/multikernel/core.c
   * mk_notify_down_and_park), so vsock peers are sent nothing: their connections stay open and
   * silent.
   */
  instanceStopped(id: number, how: SimStopCause): void;
  /** the spawn kernel hangs: console output and vsock traffic stop, nothing closes, nothing is answered */
  instanceHung(id: number): void;
  /** closes every open channel (used when the simulated host is disposed) */
  close(): Promise<void>;
}

export type CreateSimChannels = (host: SimChannelHost) => SimChannels;
