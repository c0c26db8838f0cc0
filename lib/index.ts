/**
 * multikernel: run kernels side by side on a multikernel host from Node.js.
 *
 * The package root is the lifecycle API: `Host` (open the kernel, detect what it offers, read the
 * topology), its `Pool` (the CPUs, memory and devices lent to instances) and `Instance` (create,
 * load, start, stop, update, unload, delete), the overlay transactions underneath, kernel images,
 * and the errors and types they use. Tooling has subpath exports: `multikernel/system` (the raw
 * kernel door and ABI constants), `multikernel/simulated` (the simulated kernel),
 * `multikernel/model` and `multikernel/fdt` (device trees), `multikernel/exec` (the kerf-init
 * agent protocol), `multikernel/qemu` (the QEMU harness) and `multikernel/selftest`.
 * Importing this module loads no native code: the real kernel's adapter loads the addon the first
 * time it needs it.
 */
export { Host, type HostFeatures, type HostFeature, type HostOpenOptions, type InstanceSpec } from './host';
export { Pool, type PoolSnapshot, type PoolCpu, type PoolChunk, type PoolRequest, type PoolShrinkRequest, type MemoryRequest } from './pool';
export {
  Instance,
  type InstanceStatus,
  type InstanceInfo,
  type InstanceUpdate,
  type LoadOptions,
  type StopOptions,
  type StopResult,
  type WaitOptions,
  type ExecFileOptions,
  type ExecFileResult,
} from './instance';
export { ConsoleStream } from './console';
export { ExecProcess, type ExecOptions, type ExecExit } from './exec-process';
export type { ConnectOptions, Liveness, ProbeOptions } from './channels';
export { HostWatcher, type WatchEvent, type WatchOptions, type StatusCause } from './watch';
export type { CpuRequest } from './select';
export type { HostTopology, HostCpu, HostNumaNode } from './topology';
export { applyOverlay, applyOverlayBlob, type ApplyOverlayOptions, type TxResult, type TxStatus } from './transaction';
export {
  prepareKernelImage,
  identifyKernelImage,
  type KernelArch,
  type KernelImageKind,
  type ImageCompression,
  type PreparedKernelImage,
  type PrepareKernelImageOptions,
} from './image';
export { MultikernelError, isSystemError, type SystemError, type MultikernelErrorCode } from './errors';
export { OldKerfFormatError } from './model/errors';
export type { OverlayOp, VirtioDevice, TreeDevice, MkDevice } from './model';
export type { System } from './system/system';
