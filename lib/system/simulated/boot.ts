/** kexec_file_load and the multikernel reboot commands (kexec_file.c, kexec_core.c, reboot.c, core.c). */
import { systemError } from '../../errors';
import {
  COMMAND_LINE_SIZE,
  KEXEC_FILE_DEBUG,
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_ON_CRASH,
  KEXEC_FILE_UNLOAD,
  KEXEC_MK_ID_MASK,
  KEXEC_MULTIKERNEL,
  kexecGetMkId,
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
} from '../../uapi';
import type { ImageFile, Kernel } from './kernel';
import { dv, KErr } from './props';
import type { SimImage, SimInstance } from './state';

export class Boot {
  constructor(private readonly k: Kernel) {}


  async kexecFileLoad(
    args: { kernelFd: number; initrdFd: number; cmdline: string; flags: number },
    fds: Map<number, ImageFile>,
  ): Promise<void> {
    const { flags } = args;
    const known = KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG
      | (this.k.env.stockKernel ? 0 : KEXEC_MULTIKERNEL | KEXEC_MK_ID_MASK);
    if (!Number.isInteger(flags) || flags < 0 || (flags & ~known) !== 0 || flags > 0xffffffff) throw new KErr('EINVAL');
    if (!(flags & KEXEC_MULTIKERNEL)) {
      // A host kexec (default/crash image) is outside what this simulator models.
      throw new KErr('EPERM');
    }
    if (flags & KEXEC_FILE_ON_CRASH) throw new KErr('EINVAL');
    const id = kexecGetMkId(flags);
    if (id <= 0) throw new KErr('EINVAL');
    await this.k.env.faults.hit('kexec_file_load', { id, syscall: 'kexec_file_load' });
    const inst = this.k.instanceById(id);
    if (flags & KEXEC_FILE_UNLOAD) {
      if (!inst || !inst.image) throw new KErr('ENOENT');
      if (inst.status === 'active') throw new KErr('EBUSY');
      delete inst.image;
      inst.status = 'ready';
      this.k.log(`Unloaded multikernel image for instance ${id}`);
      return;
    }
    if (!inst) throw new KErr('ENOENT');
    if (inst.image) throw new KErr('EBUSY');
    const kernel = fds.get(args.kernelFd);
    if (!kernel) throw new KErr('EBADF');
    let initrd: ImageFile | undefined;
    if (!(flags & KEXEC_FILE_NO_INITRAMFS)) {
      initrd = fds.get(args.initrdFd);
      if (!initrd) throw new KErr('EBADF');
    }
    const cmdlineLen = Buffer.byteLength(args.cmdline) + 1;
    if (args.cmdline.includes('\0') || cmdlineLen > COMMAND_LINE_SIZE) throw new KErr('EINVAL');
    const kind = this.probe(kernel.bytes);
    const total = kernel.bytes.length + (initrd?.bytes.length ?? 0);
    const memory = inst.memory.reduce((a, r) => a + r.size, 0);
    if (total > memory) throw new KErr('ENOMEM');
    const image: SimImage = {
      kind,
      kernelBytes: kernel.bytes.length,
      initrdBytes: initrd?.bytes.length ?? 0,
      cmdline: args.cmdline,
      segments: 2 + (initrd ? 1 : 0),
      entry: inst.memory[0]!.base,
    };
    inst.image = image;
    inst.status = 'loaded';
    if (flags & KEXEC_FILE_DEBUG) this.k.log(`kexec_file: Loaded kernel at 0x${image.entry.toString(16)} bufsz=0x${image.kernelBytes.toString(16)}`);
  }

  /** kexec_file's loader probe: x86_64 takes an ELF64 EM_X86_64 vmlinux, arm64 an `Image`. */
  private probe(b: Uint8Array): SimImage['kind'] {
    if (this.k.env.arch === 'x86_64') {
      const elf = b.length >= 64 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46 && b[4] === 2;
      if (elf && dv(b).getUint16(18, true) === 62) return 'elf';
    } else if (b.length >= 64 && dv(b).getUint32(56, true) === 0x644d5241) {
      return 'arm64-image';
    }
    throw new KErr('ENOEXEC');
  }

  // ---------------------------------------------------------------- reboot (reboot.c, kexec_core.c, core.c)

  /** Returns a follow-up to run after the state is saved (a graceful halt that waits). */
  async reboot(cmd: number, mkId: number): Promise<(() => Promise<void>) | undefined> {
    const mk = [LINUX_REBOOT_CMD_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL_HALT, LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE];
    if (this.k.env.stockKernel || !mk.includes(cmd)) throw new KErr('EINVAL');
    await this.k.env.faults.hit('reboot', { id: mkId, syscall: 'reboot' });
    const inst = this.k.instanceById(mkId);
    if (cmd === LINUX_REBOOT_CMD_MULTIKERNEL) {
      if (!inst || !inst.image) throw new KErr('EINVAL');
      if (inst.status !== 'loaded') throw new KErr('EBUSY');
      if (inst.cpus.length === 0) throw new KErr('EINVAL');
      inst.status = 'active';
      inst.panicked = false;
      this.k.log(`multikernel: starting instance ${inst.id} (${inst.name}) on CPU ${inst.cpus[0]}`);
      const id = inst.id;
      return async () => this.k.env.events.started(id);
    }
    if (!inst) throw new KErr('ENOENT');
    if (cmd === LINUX_REBOOT_CMD_MULTIKERNEL_HALT) {
      if (inst.status !== 'active') throw new KErr('EINVAL');
      if (inst.panicked) {
        this.k.log(`multikernel: instance ${inst.id} (${inst.name}) did not acknowledge the shutdown request`);
        return async () => {
          await this.k.env.sleep(this.k.env.haltTimeoutMs);
          throw systemError('ETIMEDOUT', 'reboot');
        };
      }
      this.stop(inst, 'halted');
      const id = inst.id;
      return async () => this.k.env.events.stopped(id, 'shutdown');
    }
    if (inst.status === 'ready') throw new KErr('EINVAL');
    if (inst.cpus.length === 0) throw new KErr('EINVAL');
    this.stop(inst, 'force-halted');
    const id = inst.id;
    return async () => this.k.env.events.stopped(id, 'forced');
  }

  stop(inst: SimInstance, how: string): void {
    inst.status = 'loaded';
    inst.panicked = false;
    this.k.log(`multikernel: instance ${inst.id} (${inst.name}) ${how}`);
  }
}
