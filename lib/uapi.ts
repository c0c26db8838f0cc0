/**
 * Multikernel user-space ABI values, defined here (and in native/uapi/multikernel.h) rather than
 * taken from distro headers: mainline reuses 0x10 in the kexec flag word for KEXEC_FILE_NO_CMA.
 * A native test asserts these equal the addon's frozen `constants`.
 * Sources: docs/kernel-interface.md sections "kexec_file_load" and "reboot".
 */
export const KEXEC_FILE_UNLOAD = 0x1;
export const KEXEC_FILE_ON_CRASH = 0x2;
export const KEXEC_FILE_NO_INITRAMFS = 0x4;
export const KEXEC_FILE_DEBUG = 0x8;
export const KEXEC_MULTIKERNEL = 0x10;
export const KEXEC_MK_ID_SHIFT = 5;
export const KEXEC_MK_ID_MASK = 0xffe0;
export const MK_ID_MIN = 1;
export const MK_ID_MAX = 2047;

export const LINUX_REBOOT_MAGIC1 = 0xfee1dead;
export const LINUX_REBOOT_MAGIC2 = 672274793;
export const LINUX_REBOOT_CMD_MULTIKERNEL = 0x4d4b4c49;
export const LINUX_REBOOT_CMD_MULTIKERNEL_HALT = 0x4d4b4c48;
export const LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE = 0x4d4b4c46;
export const MULTIKERNEL_REBOOT_COMMANDS = [
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
] as const;
export type MultikernelRebootCommand = (typeof MULTIKERNEL_REBOOT_COMMANDS)[number];

/** The kernel's COMMAND_LINE_SIZE on x86_64 and arm64, including the terminating NUL. */
export const COMMAND_LINE_SIZE = 2048;

export const AF_VSOCK = 40;
export const SO_VM_SOCKETS_TRANSPORT = 9;
export const VSOCK_TRANSPORT_MULTIKERNEL = 1;
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_LOCAL = 1;
export const VMADDR_PORT_ANY = 0xffffffff;

export const MULTIKERNEL_FS_TYPE = 'multikernel';
export const MULTIKERNEL_FS_MAGIC = 0x6d6b6673;
export const MULTIKERNEL_MOUNT_POINT = '/sys/fs/multikernel';

/** `KEXEC_MK_ID(id)`: the instance id in bits 5..15 of the kexec flag word. */
export function kexecMkId(id: number): number {
  return (id << KEXEC_MK_ID_SHIFT) & KEXEC_MK_ID_MASK;
}

/** `KEXEC_GET_MK_ID(flags)`. */
export function kexecGetMkId(flags: number): number {
  return (flags & KEXEC_MK_ID_MASK) >>> KEXEC_MK_ID_SHIFT;
}

/** True for an integer instance id the kexec id field can carry (1..2047). */
export function isValidMkId(id: unknown): id is number {
  return Number.isInteger(id) && (id as number) >= MK_ID_MIN && (id as number) <= MK_ID_MAX;
}
