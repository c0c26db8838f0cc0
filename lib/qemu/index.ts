/** The QEMU harness: boot a kernel under TCG and run one command in a generated initramfs. */
export { runQemu, type QemuOptions, type QemuResult, type QemuFile, type QemuFailure } from './run';
export { buildQemuArgs, hostQemuArch, kernelCmdline, parseMemory, qemuArchFor, qemuBinaryFor, type QemuArch, type QemuMachine } from './args';
export { type QemuPhase, PHASE_LABELS, SerialParser, type SerialEvent, parseStatus, type GuestStatus } from './serial';
export { buildInitramfs, renderInit, parseLdd, shellQuote, MARKER, type InitramfsSpec } from './initramfs';
export { writeCpio, type CpioEntry } from './cpio';
export { readKernelCache, type KernelCache } from './cache';
