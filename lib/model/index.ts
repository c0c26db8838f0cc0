/**
 * Typed multikernel tree shapes: the baseline request, overlay transactions, and the pool and
 * instance trees the kernel renders. Build with `buildBaseline` / `buildOverlay` (trees) or
 * `encodeBaseline` / `encodeOverlay` (blobs ready for one write), read back with `parsePool`,
 * `parseInstance`, `parseOverlay`. Validation errors are MultikernelError ERR_MK_INVALID_SPEC;
 * malformed blobs raise ERR_MK_INVALID_FDT; blobs in kerf 0.1's format (which the newest kernel refuses)
 * raise ERR_MK_OLD_KERF_FORMAT (OldKerfFormatError).
 */
export {
  PAGE_SIZE,
  MAX_NUMA_NODE_ID,
  MAX_BASELINE_MEMORY_NODES,
  MAX_BASELINE_BYTES,
  MAX_PLATFORM_DEVICE_NAME,
  MAX_ACPI_HID,
  type MkDevice,
  type MkPciDevice,
  type MkPlatformDevice,
} from './common';
export { BASELINE_COMPATIBLE, buildBaseline, encodeBaseline, parseBaseline, type BaselineSpec, type BaselineMemory } from './baseline';
export { ERR_MK_OLD_KERF_FORMAT, OldKerfFormatError } from './errors';
export {
  parsePool,
  parseInstance,
  type PoolState,
  type PoolMemoryChunk,
  type InstanceTree,
  type TreeDevice,
  type TreePciDevice,
  type TreePlatformDevice,
} from './trees';
export {
  OVERLAY_COMPATIBLE,
  MAX_OVERLAY_WRITE_BYTES,
  MAX_RESOURCES_DESCRIPTION,
  MAX_VIRTIO_DEVICES,
  MAX_VIRTIO_QUEUES,
  DEFAULT_VIRTIO_QUEUES,
  INSTANCE_OP_ORDER,
  POOL_OP_ORDER,
  overlayApplyOrder,
  checkInstanceName,
  targetPath,
  type OverlayOp,
  type OverlayOpName,
  type OverlayTarget,
  type OverlayOptions,
  type ParsedOverlay,
  type InstanceCreateOp,
  type InstanceRemoveOp,
  type MemoryAddOp,
  type PoolMemoryAddOp,
  type InstanceMemoryAddOp,
  type MemoryRemoveOp,
  type CpuOp,
  type DeviceOp,
  type ResourceOp,
  type VirtioDevice,
} from './overlay';
export { buildOverlay, encodeOverlay } from './overlay-encode';
export { parseOverlay } from './overlay-parse';
