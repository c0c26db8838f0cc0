/**
 * Overlay transactions written to `/sys/fs/multikernel/overlays/new` (docs/kernel-interface.md,
 * kernel/multikernel/overlay.c, dts.c): the operation types and their validation. Building and
 * encoding is in overlay-encode.ts, parsing in overlay-parse.ts.
 *
 * Shape (kerf style, no `/plugin/` metadata): root `compatible = "linux,multikernel-overlay"`,
 * optional `mk,resources` (shown in `tx_N/resources`), and `fragment@<hex>` nodes each with a
 * `target-path` ("/instances", "/instances/<name>", "/resources") and `__overlay__ { <ops> }`.
 *
 * How the kernel runs it, and what the builder does about it:
 * - Fragments run in ascending unit-address order. The builder makes one fragment per target,
 *   numbered in the order the targets first appear in `ops`.
 * - Inside a fragment the kernel runs the ops in a FIXED order, whatever order the nodes have:
 *   instance fragments (and /instances): create, memory-remove, memory-add, cpu-remove, cpu-add,
 *   device-remove, device-add, instance-remove (`INSTANCE_OP_ORDER`); /resources: cpu-remove,
 *   device-remove, memory-remove, memory-add, cpu-add, device-add (`POOL_OP_ORDER`).
 *   `overlayApplyOrder(ops)` returns the ops in the order the kernel will apply them.
 * - The kernel looks up each op node by name (the first match only), so ops of one kind on one
 *   target are MERGED into one node with one item per op (`cpu-add { cpu@4 {...}; cpu@6 {...}; }`):
 *   the kernel walks every `memory@` / `cpu@` / `pci@` item. instance-create and
 *   instance-remove cannot be merged (one `instance-name` per node): an overlay takes at most one
 *   of each; write several overlays for more.
 * - Failures are not rolled back automatically; each op is validated here before anything is
 *   written, and orders the kernel would turn around (an op on an instance before its creation or
 *   after its removal, an instance-remove listed before an instance-create) are refused.
 */
import { isValidMkId, MK_ID_MAX, MK_ID_MIN } from '../uapi';
import {
  type MkDevice,
  checkAliasName,
  checkBase,
  checkCpuId,
  checkCpuList,
  checkDevices,
  checkNodeName,
  checkNumaNode,
  checkPciId,
  checkSize,
  checkText,
  checkU32,
  invalid,
  show,
} from './common';

export const OVERLAY_COMPATIBLE = 'linux,multikernel-overlay';
/**
 * The most this library writes to `overlays/new` in one write(2). The file has no
 * atomic_write_len, so kernfs hands the kernel's handler at most PAGE_SIZE bytes per call: a
 * longer write is a short write of 4096 bytes and the handler sees a cut blob. (The handler's
 * own 1 MiB EFBIG limit is never reached through kernfs.) encodeOverlay refuses more up front.
 */
export const MAX_OVERLAY_WRITE_BYTES = 4096;
/** `mk,resources` is copied into a 256-byte buffer (255 characters and the NUL). */
export const MAX_RESOURCES_DESCRIPTION = 255;
/** MK_VIRTIO_MAX_DEVICES / MK_VIRTIO_MAX_QUEUES (include/uapi/linux/multikernel_virtio.h). */
export const MAX_VIRTIO_DEVICES = 16;
export const MAX_VIRTIO_QUEUES = 8;
/** Queues emitted when a virtio device gives none (the kernel requires the property): one rx/tx pair. */
export const DEFAULT_VIRTIO_QUEUES = 2;

export type OverlayTarget = 'pool' | { instance: string };

export interface VirtioDevice {
  /** node name under `virtio`, e.g. "net0" */
  name: string;
  /** virtio device id: 1 = net */
  deviceId: number;
  /** 1..8 (the kernel requires the property); default 2 */
  queues?: number;
  /** any u32 (dts.c mk_dt_parse_virtio does not bound it); the kernel uses 256 when absent */
  queueSize?: number;
}

export interface InstanceCreateOp {
  op: 'instance-create';
  name: string;
  /** 1..2047; the kernel assigns one from 1 when absent */
  id?: number;
  /**
   * `resources/memory-bytes`. Optional (dts.c@0a54b0b4 mk_dt_parse_memory): an instance created
   * without it holds no memory until a memory-add; it cannot load a kernel before.
   */
  memoryBytes?: bigint;
  /** `resources/cpus`, physical ids; optional, non-empty when given (the kernel rejects an empty list) */
  cpus?: number[];
  /** `resources/numa-nodes`: the first one picks the node the memory comes from (dts.c mk_dt_parse_numa) */
  numaNodes?: number[];
  /**
   * `resources/device-names`, baseline device node names: what kerf writes for `create --devices`.
   * The newest kernel fails the create with EINVAL (dts.c@0a54b0b4 mk_dt_parse_devices: "assign
   * devices with device-add"); an older one (dts.c@92464783) resolved the names against the
   * baseline. Kept by parseOverlay; encodeOverlay refuses it unless `legacyDeviceNames` is set.
   */
  deviceNames?: string[];
  /** `resources/cpu-affinity`, written by kerf; no dts.c reads it (the kernel ignores it) */
  cpuAffinity?: string;
  /** `resources/memory-policy`, written by kerf; no dts.c reads it (the kernel ignores it) */
  memoryPolicy?: string;
  /** full device nodes, as in the baseline (platform devices need deviceName or acpiHid) */
  devices?: MkDevice[];
  virtio?: VirtioDevice[];
}

export interface InstanceRemoveOp {
  op: 'instance-remove';
  name: string;
}

/** memory-add on the pool: the pool picks the base (a `reg` is rejected there). */
export interface PoolMemoryAddOp {
  op: 'memory-add';
  target: 'pool';
  size: bigint;
  numaNode?: number;
}

/**
 * memory-add on an instance: `reg = <base size>`. On a stopped instance the size is taken from
 * the pool (the base is effectively ignored); on a running one the range is hot-added and must be
 * memory_block_size aligned (128 MiB on x86).
 */
export interface InstanceMemoryAddOp {
  op: 'memory-add';
  target: { instance: string };
  base: bigint;
  size: bigint;
  numaNode?: number;
  /** `mem-type`, passed to the spawn kernel when it hot-adds the range */
  memType?: number;
}

/**
 * memory-remove: for the pool, `base`/`size` must match a whole chunk as `parsePool` shows it.
 * `numaNode` only matters if the transaction is rolled back (`rmdir tx_N`): the pool then
 * regrows by `size` on that node.
 */
export interface MemoryRemoveOp {
  op: 'memory-remove';
  target: OverlayTarget;
  base: bigint;
  size: bigint;
  numaNode?: number;
}

/**
 * From the target's point of view: on the pool cpu-add moves a host CPU into the pool and
 * cpu-remove returns a free pool CPU to the host; on an instance cpu-add gives it a pool CPU and
 * cpu-remove gives it back. `numaNode`/`flags` are used by pool cpu-remove and instance cpu-add.
 */
export interface CpuOp {
  op: 'cpu-add' | 'cpu-remove';
  target: OverlayTarget;
  /** physical id (APIC id / MPIDR / hart id); never 0 for cpu-add */
  id: number;
  numaNode?: number;
  flags?: number;
}

export interface DeviceOp {
  op: 'device-add' | 'device-remove';
  target: OverlayTarget;
  /** "DDDD:BB:SS.F" */
  pciId: string;
  /** pool device-add only: alias the pool records for the device */
  alias?: string;
  /** instance device-add only: driver to bind, e.g. "vfio-pci" */
  driver?: string;
  /** instance device-add flags */
  flags?: number;
}

export type MemoryAddOp = PoolMemoryAddOp | InstanceMemoryAddOp;
export type ResourceOp = MemoryAddOp | MemoryRemoveOp | CpuOp | DeviceOp;
export type OverlayOp = InstanceCreateOp | InstanceRemoveOp | ResourceOp;
export type OverlayOpName = OverlayOp['op'];

export interface OverlayOptions {
  /** root `mk,resources`: free text shown in `overlays/tx_N/resources`, at most 255 characters */
  resources?: string;
  /**
   * Allow instance-create's `deviceNames`, for a kernel older than dts.c@0a54b0b4 (the newest
   * fails such a create with EINVAL).
   */
  legacyDeviceNames?: boolean;
  /** strings block layout of the blob (encodeFdt): 'dtc' (default) or 'libfdt' (as kerf writes) */
  strings?: 'dtc' | 'libfdt';
}

export interface ParsedOverlay {
  /** in the order the kernel applies them (fragments by unit address, then the fixed op order) */
  ops: OverlayOp[];
  resources?: string;
  /**
   * Paths of nodes and properties under `__overlay__` that were not turned into ops: op names
   * the kernel ignores, items without the `memory@`/`cpu@`/`pci@` prefix, properties and
   * subnodes the kernel does not read (kerf's `uring`, `options`), and instance-create's
   * `chosen` boot handoff, which this model does not represent. Re-encoding the ops drops them.
   */
  ignored: string[];
}

/** Op order inside an instance or /instances fragment (overlay.c mk_overlay_order). */
export const INSTANCE_OP_ORDER: readonly OverlayOpName[] = [
  'instance-create',
  'memory-remove',
  'memory-add',
  'cpu-remove',
  'cpu-add',
  'device-remove',
  'device-add',
  'instance-remove',
];

/** Op order inside a /resources fragment (overlay.c mk_overlay_pool_order). */
export const POOL_OP_ORDER: readonly OverlayOpName[] = [
  'cpu-remove',
  'device-remove',
  'memory-remove',
  'memory-add',
  'cpu-add',
  'device-add',
];

export const INSTANCES_PATH = '/instances';
export const POOL_PATH = '/resources';
const INSTANCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,30}$/;

/**
 * Instance names: 1..31 characters from `A-Za-z0-9._+-` starting with a letter or digit. That is
 * a valid DT path component (`/instances/<name>`), and its first 9 characters make a valid
 * netdev name in mk_vnet's `mk-<name:9>-<index>`.
 */
export function checkInstanceName(where: string, name: unknown): string {
  if (typeof name !== 'string' || !INSTANCE_NAME.test(name)) {
    invalid(`${where}: ${show(name)} is not a valid instance name; use 1 to 31 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit`);
  }
  return name;
}

/** The `target-path` of an op's fragment. */
export function targetPath(op: OverlayOp): string {
  if (op.op === 'instance-create' || op.op === 'instance-remove') return INSTANCES_PATH;
  return op.target === 'pool' ? POOL_PATH : `${INSTANCES_PATH}/${op.target.instance}`;
}

function describe(op: OverlayOp, i: number): string {
  if (op.op === 'instance-create' || op.op === 'instance-remove') return `ops[${i}] ${op.op} ${show(op.name)}`;
  return `ops[${i}] ${op.op} on ${op.target === 'pool' ? 'pool' : `instance ${show(op.target.instance)}`}`;
}

function checkVirtio(where: string, list: unknown): void {
  if (!Array.isArray(list)) invalid(`${where}: must be an array of { name, deviceId, queues?, queueSize? }`);
  if (list.length > MAX_VIRTIO_DEVICES) {
    invalid(`${where}: ${list.length} devices; an instance takes at most ${MAX_VIRTIO_DEVICES} virtio devices (the kernel fails with E2BIG)`);
  }
  const names = new Set<string>();
  list.forEach((v: Partial<VirtioDevice>, i) => {
    checkNodeName(`${where}[${i}].name`, v?.name);
    if (names.has(v.name!)) invalid(`${where}[${i}].name: ${show(v.name)} is used twice; virtio device names must be unique`);
    names.add(v.name!);
    checkU32(`${where}[${i}].deviceId`, v.deviceId, 'a virtio device id');
    if (v.queues !== undefined && (!Number.isInteger(v.queues) || v.queues < 1 || v.queues > MAX_VIRTIO_QUEUES)) {
      invalid(`${where}[${i}].queues: ${show(v.queues)} must be an integer 1..${MAX_VIRTIO_QUEUES}`);
    }
    if (v.queueSize !== undefined) checkU32(`${where}[${i}].queueSize`, v.queueSize, 'a queue size');
  });
}

function checkTarget(where: string, target: unknown): void {
  if (target === 'pool') return;
  if (typeof target !== 'object' || target === null) invalid(`${where}: target must be 'pool' or { instance: '<name>' }`);
  checkInstanceName(`${where}: target.instance`, (target as { instance?: unknown }).instance);
}

/** Validate one op on its own (kernel rules that need no other op). */
function checkOp(op: OverlayOp, i: number, options: OverlayOptions): void {
  if (typeof op !== 'object' || op === null) invalid(`ops[${i}]: must be an operation object with an 'op' field`);
  const kind = (op as { op?: unknown }).op;
  if (kind === 'instance-create' || kind === 'instance-remove') {
    checkInstanceName(`ops[${i}] ${kind}: name`, (op as InstanceCreateOp | InstanceRemoveOp).name);
  } else if (typeof kind === 'string' && INSTANCE_OP_ORDER.includes(kind as OverlayOpName)) {
    checkTarget(`ops[${i}] ${kind}`, (op as ResourceOp).target);
  } else {
    invalid(`ops[${i}].op: ${show(kind)} is not an overlay operation; use one of ${INSTANCE_OP_ORDER.join(', ')}`);
  }
  const w = describe(op, i);
  const pool = op.op !== 'instance-create' && op.op !== 'instance-remove' && op.target === 'pool';
  switch (op.op) {
    case 'instance-create':
      if (op.id !== undefined && !isValidMkId(op.id)) {
        invalid(`${w}: id: ${show(op.id)} is not a valid instance id; use an integer ${MK_ID_MIN}..${MK_ID_MAX} or leave it out to let the kernel pick`);
      }
      if (op.memoryBytes !== undefined) checkSize(`${w}: memoryBytes`, op.memoryBytes);
      if (op.cpus !== undefined) checkCpuList(`${w}: cpus`, op.cpus);
      if (op.deviceNames !== undefined) {
        if (!options.legacyDeviceNames) {
          invalid(`${w}: deviceNames: the kernel fails an instance-create that carries device-names with EINVAL (dts.c mk_dt_parse_devices); describe the devices in full (devices) or give them with a device-add after the create. Set legacyDeviceNames only for a kernel that still resolves the names`);
        }
        if (!Array.isArray(op.deviceNames) || op.deviceNames.length === 0) invalid(`${w}: deviceNames: must be a non-empty array of baseline device node names`);
        op.deviceNames.forEach((d, j) => checkNodeName(`${w}: deviceNames[${j}]`, d));
      }
      if (op.cpuAffinity !== undefined) checkText(`${w}: cpuAffinity`, op.cpuAffinity, 255);
      if (op.memoryPolicy !== undefined) checkText(`${w}: memoryPolicy`, op.memoryPolicy, 255);
      if (op.numaNodes !== undefined) {
        if (!Array.isArray(op.numaNodes) || op.numaNodes.length === 0) invalid(`${w}: numaNodes: must be a non-empty array or left out`);
        op.numaNodes.forEach((n, j) => checkNumaNode(`${w}: numaNodes[${j}]`, n));
      }
      if (op.devices !== undefined) checkDevices(`${w}: devices`, op.devices, true);
      if (op.virtio !== undefined) checkVirtio(`${w}: virtio`, op.virtio);
      return;
    case 'instance-remove':
      return;
    case 'memory-add':
      checkSize(`${w}: size`, op.size);
      if (pool && (op as unknown as Partial<InstanceMemoryAddOp>).base !== undefined) {
        invalid(`${w}: base: the pool picks the base of memory it grows by (the kernel rejects reg here); give only size`);
      }
      if (!pool) checkBase(`${w}: base`, (op as InstanceMemoryAddOp).base);
      if (!pool && (op as InstanceMemoryAddOp).memType !== undefined) checkU32(`${w}: memType`, (op as InstanceMemoryAddOp).memType);
      if (op.numaNode !== undefined) checkNumaNode(`${w}: numaNode`, op.numaNode);
      return;
    case 'memory-remove':
      checkBase(`${w}: base`, op.base);
      checkSize(`${w}: size`, op.size);
      if (op.numaNode !== undefined) checkNumaNode(`${w}: numaNode`, op.numaNode);
      return;
    case 'cpu-add':
    case 'cpu-remove':
      checkCpuId(`${w}: id`, op.id, op.op === 'cpu-add');
      if (op.numaNode !== undefined) checkNumaNode(`${w}: numaNode`, op.numaNode);
      if (op.flags !== undefined) checkU32(`${w}: flags`, op.flags);
      return;
    case 'device-add':
    case 'device-remove':
      checkPciId(`${w}: pciId`, op.pciId);
      if (op.alias !== undefined) {
        if (op.op !== 'device-add' || !pool) invalid(`${w}: alias: only a device-add on the pool records an alias; leave it out`);
        checkAliasName(`${w}: alias`, op.alias);
      }
      if (op.driver !== undefined) {
        if (op.op !== 'device-add' || pool) invalid(`${w}: driver: only a device-add on an instance binds a driver; leave it out`);
        checkText(`${w}: driver`, op.driver, 63);
      }
      if (op.flags !== undefined) checkU32(`${w}: flags`, op.flags);
      return;
  }
}

/** A key telling whether two resource ops of one kind would name the same item. */
function itemKey(op: ResourceOp): string {
  switch (op.op) {
    case 'cpu-add':
    case 'cpu-remove':
      return `cpu ${op.id}`;
    case 'device-add':
    case 'device-remove':
      return `device ${op.pciId.toLowerCase()}`;
    case 'memory-remove':
      return `range ${op.base}+${op.size}`;
    case 'memory-add':
      return op.target === 'pool' ? `` : `range ${op.base}+${op.size}`;
  }
}

export interface Fragment {
  path: string;
  ops: Map<OverlayOpName, OverlayOp[]>;
}

/** Validate `ops` and group them into fragments, as buildOverlay emits them. */
export function groupFragments(ops: OverlayOp[], options: OverlayOptions = {}): Fragment[] {
  if (!Array.isArray(ops) || ops.length === 0) invalid('overlay: ops must be a non-empty array; the kernel rejects an overlay without fragments');
  const fragments: Fragment[] = [];
  const created = new Map<string, number>();
  const removed = new Map<string, number>();
  const seenItems = new Set<string>();
  ops.forEach((op, i) => {
    checkOp(op, i, options);
    const path = targetPath(op);
    let fi = fragments.findIndex((f) => f.path === path);
    if (fi < 0) fi = fragments.push({ path, ops: new Map() }) - 1;
    const frag = fragments[fi]!;
    const w = describe(op, i);
    if (op.op === 'instance-create' || op.op === 'instance-remove') {
      if (frag.ops.has(op.op)) {
        invalid(`${w}: an overlay carries one ${op.op} (the kernel reads one instance-name per ${op.op} node); write one overlay per instance`);
      }
      if (op.op === 'instance-create' && frag.ops.has('instance-remove')) {
        invalid(`${w}: the kernel applies instance-create before instance-remove inside one overlay, the reverse of the order given; write the instance-remove overlay first`);
      }
      (op.op === 'instance-create' ? created : removed).set(op.name, fi);
    } else {
      const key = `${path} ${op.op} ${itemKey(op)}`;
      if (itemKey(op) !== '' && seenItems.has(key)) {
        invalid(`${w}: the same ${itemKey(op)} appears twice in ${op.op} on this target; list it once`);
      }
      seenItems.add(key);
    }
    frag.ops.set(op.op, [...(frag.ops.get(op.op) ?? []), op]);
  });
  fragments.forEach((frag, fi) => {
    if (frag.path === POOL_PATH || frag.path === INSTANCES_PATH) return;
    const name = frag.path.slice(INSTANCES_PATH.length + 1);
    if ((created.get(name) ?? -1) > fi) {
      invalid(`overlay: changes to instance ${show(name)} are listed before its instance-create; list the instance-create first (fragments run in the order given)`);
    }
    if ((removed.get(name) ?? Infinity) <= fi) {
      invalid(`overlay: changes to instance ${show(name)} are listed after its instance-remove (or in the overlay that creates and removes it); the kernel would find no instance to change`);
    }
  });
  return fragments;
}

/**
 * The ops in the order the kernel will apply them: fragments in first-seen target order, inside
 * each the fixed op order, ops of one kind in the order given. Equals
 * `parseOverlay(encodeOverlay(ops)).ops` (up to the virtio queue default).
 */
export function overlayApplyOrder(ops: OverlayOp[]): OverlayOp[] {
  return groupFragments(ops).flatMap((frag) =>
    (frag.path === POOL_PATH ? POOL_OP_ORDER : INSTANCE_OP_ORDER).flatMap((name) => frag.ops.get(name) ?? []),
  );
}
