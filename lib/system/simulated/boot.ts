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
import { dv, KErr, neg } from './props';
import type { SimImage, SimInstance } from './state';

/** MK_MSG_SYSTEM + 2 (include/linux/multikernel.h) */
const MK_SYS_SHUTDOWN = 0x3002;
/** enum mk_instance_state: EMPTY 0, READY 1, LOADED 2, ACTIVE 3, FAILED 4 (include/linux/multikernel.h) */
const MK_STATE_READY = 1;

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
  // The log lines are the kernel's format strings: kexec_core.c@0646f02c multikernel_kexec_by_id,
  // core.c@843ebe12 (mk_instance_set_kexec_active, multikernel_halt_by_id,
  // multikernel_force_halt_by_id, mk_instance_settle_halted), messaging.c@99bad5db.

  /** Returns a follow-up to run after the state is saved (a graceful halt that waits). */
  async reboot(cmd: number, mkId: number): Promise<(() => Promise<void>) | undefined> {
    const mk = [LINUX_REBOOT_CMD_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL_HALT, LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE];
    if (this.k.env.stockKernel || !mk.includes(cmd)) throw new KErr('EINVAL');
    await this.k.env.faults.hit('reboot', { id: mkId, syscall: 'reboot' });
    const inst = this.k.instanceById(mkId);
    if (cmd === LINUX_REBOOT_CMD_MULTIKERNEL) return this.start(mkId, inst);
    if (!inst) throw new KErr('ENOENT');
    const id = inst.id;
    if (cmd === LINUX_REBOOT_CMD_MULTIKERNEL_HALT) {
      if (inst.status !== 'active') throw new KErr('EINVAL');
      if (inst.hung) {
        // MK_SYS_SHUTDOWN is never acknowledged: mk_msg_pending_wait gives up, the status stays.
        return async () => {
          await this.k.env.sleep(this.k.env.haltTimeoutMs);
          await this.k.env.later((k) => k.log(`Timeout waiting for operation 0x${MK_SYS_SHUTDOWN.toString(16)} on resource ${id}`));
          throw systemError('ETIMEDOUT', 'reboot');
        };
      }
      inst.status = 'loaded';
      this.k.log(`Multikernel instance ${id} halted (graceful)`);
      return async () => this.k.env.events.stopped(id, 'halt');
    }
    if (inst.status === 'ready') {
      this.k.log(`Instance ${id} not running (state=${MK_STATE_READY}), nothing to force halt`);
      throw new KErr('EINVAL');
    }
    if (inst.cpus.length === 0) {
      this.k.log(`Instance ${id}: no force-halt targets: ${neg('EINVAL')}`);
      throw new KErr('EINVAL');
    }
    // Allowed from 'loaded' too: a retry for a CPU that missed its NMI.
    this.k.log(`Force halting multikernel instance ${id} via NMI`);
    this.k.log(`Sent NMI to ${inst.cpus.length} CPUs in instance ${id}`);
    this.halted(inst);
    return async () => this.k.env.events.stopped(id, 'forced');
  }

  /** multikernel_kexec_by_id */
  private start(mkId: number, inst: SimInstance | undefined): () => Promise<void> {
    if (!inst || !inst.image) {
      this.k.log(`No multikernel image found with ID ${mkId}`);
      throw new KErr('EINVAL');
    }
    const id = inst.id;
    if (inst.status === 'active') {
      // Running or hung, its CPUs are not parked: mk_instance_confirm_parked() fails for each
      // (the x86 claim of a park slot times out, -ETIMEDOUT).
      for (const cpu of inst.cpus) this.k.log(`Instance ${id} (${inst.name}): CPU ${cpu} is not parked: ${neg('ETIMEDOUT')}`);
      this.k.log(`Multikernel instance ${id} is still active`);
      throw new KErr('EBUSY');
    }
    if (inst.cpus.length === 0) {
      this.k.log(`No CPU assignment found for multikernel instance ${id} - CPU assignment is required`);
      throw new KErr('EINVAL');
    }
    const boot = inst.cpus[0]!;
    this.k.log(`multikernel kexec: using physical CPU ${boot} (logical ${this.k.cpuIndex(boot)}), ${inst.cpus.length} CPUs assigned`);
    this.k.log('Manifest finalized for multikernel instance');
    inst.status = 'active';
    inst.hung = false;
    this.k.log(`Multikernel instance ${id} is now active`);
    return async () => this.k.env.events.started(id);
  }

  /**
   * The host settles an instance whose spawn went down (MK_SYS_HALTED after a panic or a
   * poweroff inside, or a forced halt): mk_instance_settle_halted. The image stays loaded.
   */
  halted(inst: SimInstance): void {
    inst.status = 'loaded';
    inst.hung = false;
    this.k.log(`Instance ${inst.id} (${inst.name}) halted, CPUs parking in pool`);
  }
}
