/**
 * Option checking and the QEMU argument vector (an array: QEMU is never started through a shell).
 */
import { parseMemoryMiB } from '../units';

export type QemuArch = 'x86_64' | 'aarch64';

export interface QemuMachine {
  arch: QemuArch;
  /** x86_64: q35 (default) or pc; aarch64: virt,gic-version=3 (default) */
  machine?: string;
  cpus: number;
  /** MiB */
  memoryMiB: number;
  kernel: string;
  initrd: string;
  /** the full kernel command line */
  cmdline: string;
  /** host directory shared read-only over 9p with mount tag `share` */
  share?: string;
  /**
   * host file that receives what /init writes to its status device (x86_64: a second 16550 UART,
   * the guest's ttyS1; aarch64: the virtio-serial port `mkqemu.status`), which only /init opens
   */
  status: string;
}

/** Host `process.arch` → QEMU architecture name, or undefined when QEMU guests of it are not supported. */
export function qemuArchFor(nodeArch: string): QemuArch | undefined {
  return nodeArch === 'x64' ? 'x86_64' : nodeArch === 'arm64' ? 'aarch64' : undefined;
}

/** The guest architecture matching the host (the default): a RangeError on other hosts. */
export function hostQemuArch(nodeArch: string = process.arch): QemuArch {
  const arch = qemuArchFor(nodeArch);
  if (arch === undefined) throw new RangeError(`no QEMU guest architecture for host ${nodeArch}; pass arch`);
  return arch;
}

/** Name of the aarch64 guest's virtio-serial status port (`name` in /sys/class/virtio-ports/vportNpM). */
export const STATUS_PORT_NAME = 'mkqemu.status';

export function qemuBinaryFor(arch: QemuArch): string {
  return `qemu-system-${arch}`;
}

/** The console device the kernel should print to. */
export function consoleFor(arch: QemuArch): string {
  return arch === 'x86_64' ? 'ttyS0' : 'ttyAMA0';
}

/** Guest memory in MiB from "512", "512M", "2G" (MiB by default) or a number; QEMU guests get at least 64. */
export function parseMemory(value: string | number): number {
  const mib = parseMemoryMiB(value);
  if (mib < 64) throw new RangeError(`memory must be at least 64 MiB, got ${mib} MiB`);
  return mib;
}

export function checkCpus(cpus: number): number {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new RangeError(`cpus must be a whole number from 1 to 64, got ${cpus}`);
  return cpus;
}

/** The kernel command line: console, quiet boot, no reboot loop on panic, then the caller's text. */
export function kernelCmdline(arch: QemuArch, append: string | undefined): string {
  const base = `console=${consoleFor(arch)} rdinit=/init panic=-1 quiet`;
  return append === undefined || append.trim() === '' ? base : `${base} ${append.trim()}`;
}

export function buildQemuArgs(m: QemuMachine): string[] {
  const args: string[] = [];
  if (m.arch === 'x86_64') {
    const machine = m.machine ?? 'q35';
    if (!/^(q35|pc)(,|$)/.test(machine)) throw new RangeError(`x86_64 machine must be q35 or pc, got ${JSON.stringify(machine)}`);
    args.push('-machine', machine, '-accel', 'tcg');
  } else {
    const machine = m.machine ?? 'virt,gic-version=3';
    if (!/^virt(,|$)/.test(machine)) throw new RangeError(`aarch64 machine must be virt, got ${JSON.stringify(machine)}`);
    args.push('-machine', machine, '-accel', 'tcg', '-cpu', 'max');
  }
  args.push(
    '-smp', String(checkCpus(m.cpus)),
    '-m', `${parseMemory(m.memoryMiB)}M`,
    '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', m.kernel,
    '-initrd', m.initrd,
    '-append', m.cmdline,
  );
  // ",," is a literal comma inside a QEMU option value
  args.push('-chardev', `file,id=mkstatus,path=${m.status.replaceAll(',', ',,')}`);
  if (m.arch === 'x86_64') {
    // a -serial of our own ends -nographic's default one, so the console is named first
    args.push('-serial', 'mon:stdio', '-serial', 'chardev:mkstatus', '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04');
  } else {
    args.push('-device', 'virtio-serial-pci,id=mkstatus-bus', '-device', `virtserialport,bus=mkstatus-bus.0,chardev=mkstatus,name=${STATUS_PORT_NAME}`);
  }
  if (m.share !== undefined) {
    if (m.share.includes(',')) throw new RangeError(`the share directory must not contain a comma (QEMU option syntax): ${m.share}`);
    args.push('-virtfs', `local,path=${m.share},mount_tag=share,security_model=none,readonly=on,multidevs=remap`);
  }
  return args;
}
