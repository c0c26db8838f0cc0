/**
 * multikernel: a toolkit for Linux hosts running the multikernel kernel.
 *
 * The layers, top to bottom: the end-to-end selftest and overlay transactions; the typed
 * multikernel tree shapes (model) over a device-tree codec (fdt); the `System` interface, the one
 * door to the kernel, with a real adapter (LinuxSystem, over the native addon) and a simulated
 * multikernel kernel (SimulatedSystem); the exec protocol of the in-instance agent; and a QEMU
 * harness for integration tests. Importing this module loads no native code: LinuxSystem loads
 * the addon the first time it needs it.
 */
export * from './errors';
export * from './uapi';
export * from './kernfs';
export type {
  System,
  FileStat,
  FileType,
  DeviceHandle,
  KexecFileLoadArgs,
  LockOptions,
  LockHandle,
  VsockConnectOptions,
  VsockListenOptions,
  VsockServer,
  VsockStream,
} from './system/system';
export { LinuxSystem, decodeKexecFlags, type LinuxSystemOptions } from './system/linux';
export { SimulatedSystem, type SimulatedSystemOptions, type SimCpu, type SimTopology } from './system/simulated';
export type { FaultRule, FaultAction } from './system/simulated/faults';
export { probeMultikernelSupport, explainNoSupport, isStockKernelAnswer, type SupportReport } from './support';
export * from './fdt';
export * from './model';
export {
  prepareKernelImage,
  placeholderImage,
  identifyKernelImage,
  compressionOf,
  type KernelArch,
  type KernelImageKind,
  type ImageCompression,
  type PreparedKernelImage,
  type PrepareKernelImageOptions,
} from './image';
export {
  applyOverlay,
  applyOverlayBlob,
  transactionTag,
  type ApplyOverlayOptions,
  type ApplyOverlayBlobOptions,
  type TxResult,
  type TxBlobResult,
  type TxStatus,
} from './transaction';
export { runSelftest, type SelftestOptions, type SelftestResult, type SelftestStep } from './selftest';
export { execOverStream, ExecRemoteError, ExecLostConnectionError, type ExecRequest, type ExecResult } from './exec/client';
export { AGENT_PORT } from './exec/protocol';
export { runQemu, readKernelCache, type QemuOptions, type QemuResult, type KernelCache } from './qemu';
