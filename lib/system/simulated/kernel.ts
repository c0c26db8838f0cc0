/**
 * The simulated multikernel kernel: baseline pool, overlay transactions, instances, kexec and the
 * multikernel reboot commands, acting on a `SimState`. Each concern has its own file (allocator,
 * baseline, overlay engine, boot); this class holds the state they share. Every rule names the
 * kernel source it follows; docs/kernel-interface.md lists them with the errno of each refusal.
 *
 * Failures inside the kernel are thrown as `KErr` (an errno name) and turned into Node-shaped
 * system errors, or into a failed transaction, by the caller.
 */
import { MemoryAllocator } from './allocator';
import type { Baseline } from './baseline';
import type { Boot } from './boot';
import type { SimStopCause } from './channels';
import type { FaultInjector } from './faults';
import type { OverlayEngine } from './overlay-engine';
import type { SimInstance, SimState, SimTx } from './state';

export { KErr, PAGE_SIZE } from './props';

/** the kernel log keeps the newest lines only, as the printk ring buffer does */
export const DMESG_LINES = 2000;

export interface KernelEnv {
  faults: FaultInjector;
  arch: 'x86_64' | 'arm64';
  stockKernel: boolean;
  haltTimeoutMs: number;
  /** how long a resource change to a running instance waits for its acknowledgement (kernel: 10 s) */
  resourceAckTimeoutMs: number;
  /** forget applied transactions beyond this many, oldest first (SimulatedSystemOptions) */
  keepAppliedTransactions?: number;
  sleep(ms: number): Promise<void>;
  /** runs `fn` on the state as it is then, under the state lock: for a step that ends after the call that began it returned */
  later(fn: (k: Kernel) => void): Promise<void>;
  /** tells the console/vsock side about instance life-cycle events, after the state was saved */
  events: { started(id: number): void; stopped(id: number, how: SimStopCause): void };
}

export interface ImageFile {
  name: string;
  bytes: Uint8Array;
}

export class Kernel {
  readonly mem: MemoryAllocator;
  // The writers of the kernel, loaded and made when a call first needs them: most calls read a
  // file, and a short mkctl command that only reads does not pay for loading them.
  #baseline: Baseline | undefined;
  #overlays: OverlayEngine | undefined;
  #boot: Boot | undefined;
  get baseline(): Baseline {
    return (this.#baseline ??= new (require('./baseline') as typeof import('./baseline')).Baseline(this));
  }
  get overlays(): OverlayEngine {
    return (this.#overlays ??= new (require('./overlay-engine') as typeof import('./overlay-engine')).OverlayEngine(this));
  }
  get boot(): Boot {
    return (this.#boot ??= new (require('./boot') as typeof import('./boot')).Boot(this));
  }

  constructor(readonly s: SimState, readonly env: KernelEnv) {
    this.mem = new MemoryAllocator(s, (line) => this.log(line));
  }

  log(line: string): void {
    this.s.dmesg.push(line);
    const over = this.s.dmesg.length - DMESG_LINES;
    if (over > 0) {
      this.s.dmesg.splice(0, over);
      this.s.dmesgDropped = (this.s.dmesgDropped ?? 0) + over;
    }
  }

  // ---------------------------------------------------------------- topology helpers

  cpuIndex(apicId: number): number {
    return this.s.topology.cpus.findIndex((c) => c.apicId === apicId);
  }
  isPoolCpu(apicId: number): boolean {
    return this.s.pool !== null && this.s.pool.cpus.includes(apicId);
  }
  owner(apicId: number): SimInstance | undefined {
    return this.s.instances.find((i) => i.cpus.includes(apicId));
  }
  instanceByName(name: string): SimInstance | undefined {
    return this.s.instances.find((i) => i.name === name);
  }
  instanceById(id: number): SimInstance | undefined {
    return this.s.instances.find((i) => i.id === id);
  }

  // ---------------------------------------------------------------- the entry points index.ts calls

  writeBaseline(data: Uint8Array): number {
    return this.baseline.write(data);
  }
  writeOverlay(data: Uint8Array): Promise<number> {
    return this.overlays.write(data);
  }
  rmdirTx(tx: SimTx): Promise<void> {
    return this.overlays.rmdir(tx);
  }
  kexecFileLoad(args: { kernelFd: number; initrdFd: number; cmdline: string; flags: number }, fds: Map<number, ImageFile>): Promise<void> {
    return this.boot.kexecFileLoad(args, fds);
  }
  reboot(cmd: number, mkId: number): Promise<(() => Promise<void>) | undefined> {
    return this.boot.reboot(cmd, mkId);
  }
  halted(inst: SimInstance): void {
    this.boot.halted(inst);
  }
}
