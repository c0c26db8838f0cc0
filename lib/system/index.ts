/**
 * `multikernel/system`: the raw kernel door. The `System` interface and its real adapter, the
 * kernel ABI constants, the kernfs and procfs paths, and support probing. Programs that drive
 * instances want the package root (Host, Pool, Instance); this is for tools that speak to the
 * kernel in its own terms.
 */
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
} from './system';
export { LinuxSystem, decodeKexecFlags, type LinuxSystemOptions } from './linux';
export * from '../uapi';
export * from '../kernfs';
export { probeMultikernelSupport, explainNoSupport, isStockKernelAnswer, type SupportReport } from '../support';
