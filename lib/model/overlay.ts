/**
 * Overlay transactions written to `/sys/fs/multikernel/overlays/new` (kernel-interface.md 3.5,
 * kernel/multikernel/overlay.c, dts.c).
 *
 * Shape (kerf style, no `/plugin/` metadata): root `compatible = "linux,multikernel-overlay"`,
 * optional `mk,resources` (shown in `tx_N/resources`), and `fragment@<hex>` nodes each with a
 * `target-path` ("/instances", "/instances/<name>", "/resources") and `__overlay__ { <ops> }`.
 *
 * How the kernel runs it, and what this builder does about it:
 * - Fragments run in ascending unit-address order. The builder makes one fragment per target,
 *   numbered in the order the targets first appear in `ops`.
 * - Inside a fragment the kernel runs the ops in a FIXED order, whatever order the nodes have:
 *   instance fragments (and /instances): create, memory-remove, memory-add, cpu-remove, cpu-add,
 *   device-remove, device-add, instance-remove (`INSTANCE_OP_ORDER`); /resources: cpu-remove,
 *   device-remove, memory-remove, memory-add, cpu-add, device-add (`POOL_OP_ORDER`).
 *   `overlayApplyOrder(ops)` returns the ops in the order the kernel will apply them.
 * - The kernel looks up each op node by name (the first match only), so ops of one kind on one
 *   target are MERGED into one node with one item per op (`cpu-add { cpu@0 {...}; cpu@1 {...}; }`):
 *   the kernel walks every `memory@` / `cpu@` / `pci@` item. instance-create and
 *   instance-remove cannot be merged (one `instance-name` per node): an overlay takes at most one
 *   of each; write several overlays for more.
 * - Unknown op names are silently ignored by the kernel, so nothing else is ever emitted, and
 *   `device-names` is never emitted (the newest kernel rejects it).
 * - Failures are not rolled back automatically; each op is validated here before anything is
 *   written, and orders the kernel would turn around (an op on an instance before its creation or
 *   after its removal, an instance-remove listed before an instance-create) are refused.
 */
import { isValidMkId, MK_ID_MAX, MK_ID_MIN } from '../uapi';
import { decodeFdt, encodeFdt, getChild, getProperty, node, prop, readU32, readU32s, readU64, readU64s } from '../fdt';
import type { Fdt, FdtLimits, FdtNode, FdtProperty } from '../fdt/types';
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
  cpuNumber,
  devicesNode,
  invalid,
  malformed,
  optString,
  optU32,
  readDevicesNode,
  reqProp,
  reqString,
  reqU32,
  show,
} from './common';
import { readMemReg } from './trees';

export const OVERLAY_COMPATIBLE = 'linux,multikernel-overlay';
/** `overlays/new` has no atomic_write_len: a write larger than a page may be split and rejected. */
export const MAX_OVERLAY_BYTES = 4096;
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
  /** 1..8; default 2 */
  queues?: number;
  /** power of two; the kernel uses 256 when absent */
  queueSize?: number;
}

export interface InstanceCreateOp {
  op: 'instance-create';
  name: string;
  /** 1..2047; the kernel assigns one from 1 when absent */
  id?: number;
  /** `resources/memory-bytes`; parseOverlay returns 0n when the property is absent */
  memoryBytes: bigint;
  /** `resources/cpus`, physical ids; parseOverlay returns [] when absent */
  cpus: number[];
  /** `resources/numa-nodes`; the kernel uses the first one only */
  numaNodes?: number[];
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
}

export interface ParsedOverlay {
  /** in the order the kernel applies them (fragments by unit address, then the fixed op order) */
  ops: OverlayOp[];
  resources?: string;
  /**
   * Paths of nodes under `__overlay__` that were not turned into ops: op names the kernel
   * ignores, items without the `memory@`/`cpu@`/`pci@` prefix, and instance-create's `chosen`
   * boot handoff, which this model does not represent.
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

const INSTANCES_PATH = '/instances';
const POOL_PATH = '/resources';
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
    if (v.queueSize !== undefined) {
      const q = v.queueSize;
      if (!Number.isInteger(q) || q < 1 || q > 32768 || (q & (q - 1)) !== 0) {
        invalid(`${where}[${i}].queueSize: ${show(q)} must be a power of two 1..32768 (the kernel default is 256)`);
      }
    }
  });
}

function checkTarget(where: string, target: unknown): void {
  if (target === 'pool') return;
  if (typeof target !== 'object' || target === null) invalid(`${where}: target must be 'pool' or { instance: '<name>' }`);
  checkInstanceName(`${where}: target.instance`, (target as { instance?: unknown }).instance);
}

/** Validate one op on its own (kernel rules that need no other op). */
function checkOp(op: OverlayOp, i: number): void {
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
      checkSize(`${w}: memoryBytes`, op.memoryBytes);
      checkCpuList(`${w}: cpus`, op.cpus);
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

interface Fragment {
  path: string;
  ops: Map<OverlayOpName, OverlayOp[]>;
}

/** Validate `ops` and group them into fragments, as buildOverlay emits them. */
function groupFragments(ops: OverlayOp[]): Fragment[] {
  if (!Array.isArray(ops) || ops.length === 0) invalid('overlay: ops must be a non-empty array; the kernel rejects an overlay without fragments');
  const fragments: Fragment[] = [];
  const created = new Map<string, number>();
  const removed = new Map<string, number>();
  const seenItems = new Set<string>();
  ops.forEach((op, i) => {
    checkOp(op, i);
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

function opt<T>(v: T | undefined, make: (v: T) => FdtProperty): FdtProperty[] {
  return v === undefined ? [] : [make(v)];
}

function instanceCreateNode(op: InstanceCreateOp): FdtNode {
  const resources = node(
    'resources',
    [
      prop.u64('memory-bytes', op.memoryBytes),
      prop.u64('cpus', ...op.cpus),
      ...opt(op.numaNodes, (n) => prop.u32('numa-nodes', ...n)),
    ],
    [
      ...(op.devices === undefined || op.devices.length === 0 ? [] : [devicesNode(op.devices)]),
      ...(op.virtio === undefined || op.virtio.length === 0
        ? []
        : [
            node(
              'virtio',
              [],
              op.virtio.map((v) =>
                node(v.name, [
                  prop.u32('device-id', v.deviceId),
                  prop.u32('queues', v.queues ?? DEFAULT_VIRTIO_QUEUES),
                  ...opt(v.queueSize, (q) => prop.u32('queue-size', q)),
                ]),
              ),
            ),
          ]),
    ],
  );
  return node('instance-create', [prop.string('instance-name', op.name), ...opt(op.id, (id) => prop.u32('id', id))], [resources]);
}

function itemNode(op: ResourceOp, index: number): FdtNode {
  const unit = index.toString(16);
  switch (op.op) {
    case 'memory-add':
      return node(`memory@${unit}`, [
        op.target === 'pool' ? prop.u64('size', op.size) : prop.u64('reg', op.base, op.size),
        ...opt(op.numaNode, (n) => prop.u32('numa-node-id', n)),
      ]);
    case 'memory-remove':
      return node(`memory@${unit}`, [prop.u64('reg', op.base, op.size), ...opt(op.numaNode, (n) => prop.u32('numa-node-id', n))]);
    case 'cpu-add':
    case 'cpu-remove':
      return node(`cpu@${unit}`, [
        prop.u64('reg', op.id),
        ...opt(op.numaNode, (n) => prop.u32('numa-node-id', n)),
        ...opt(op.flags, (f) => prop.u32('flags', f)),
      ]);
    case 'device-add':
    case 'device-remove':
      return node(`pci@${unit}`, [
        prop.string('pci-id', op.pciId),
        ...opt(op.alias, (a) => prop.string('alias', a)),
        ...opt(op.driver, (d) => prop.string('driver', d)),
        ...opt(op.flags, (f) => prop.u32('flags', f)),
      ]);
  }
}

function opNode(name: OverlayOpName, ops: OverlayOp[]): FdtNode {
  if (name === 'instance-create') return instanceCreateNode(ops[0] as InstanceCreateOp);
  if (name === 'instance-remove') return node(name, [prop.string('instance-name', (ops[0] as InstanceRemoveOp).name)]);
  return node(name, [], (ops as ResourceOp[]).map(itemNode));
}

/**
 * Build the overlay tree (validated): one `fragment@<hex>` per target in first-seen order, op
 * nodes in the kernel's application order, ops of one kind on one target merged into one node.
 */
export function buildOverlay(ops: OverlayOp[], options: OverlayOptions = {}): Fdt {
  const fragments = groupFragments(ops);
  if (options.resources !== undefined) checkText('overlay options: resources', options.resources, MAX_RESOURCES_DESCRIPTION);
  const root = node(
    '',
    [prop.string('compatible', OVERLAY_COMPATIBLE), ...opt(options.resources, (r) => prop.string('mk,resources', r))],
    fragments.map((frag, i) => {
      const order = frag.path === POOL_PATH ? POOL_OP_ORDER : INSTANCE_OP_ORDER;
      const opNodes = order.filter((name) => frag.ops.has(name)).map((name) => opNode(name, frag.ops.get(name)!));
      return node(`fragment@${i.toString(16)}`, [prop.string('target-path', frag.path)], [node('__overlay__', [], opNodes)]);
    }),
  );
  return { root, reservations: [], bootCpuId: 0 };
}

/** Build and encode; refuses a DTBO over 4096 bytes (one kernfs write of `overlays/new`). */
export function encodeOverlay(ops: OverlayOp[], options: OverlayOptions = {}): Buffer {
  const blob = encodeFdt(buildOverlay(ops, options));
  if (blob.length > MAX_OVERLAY_BYTES) {
    invalid(`overlay: the encoded DTBO is ${blob.length} bytes but overlays/new takes at most ${MAX_OVERLAY_BYTES} bytes in one write; split the ${ops.length} operations into several overlays`);
  }
  return blob;
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

function parseTarget(path: string): OverlayTarget | 'instances' {
  if (path === POOL_PATH) return 'pool';
  if (path === INSTANCES_PATH) return 'instances';
  const name = path.startsWith(`${INSTANCES_PATH}/`) ? path.slice(INSTANCES_PATH.length + 1) : '';
  if (name === '' || name.includes('/')) {
    malformed(`overlay: target-path ${show(path)} is not /resources, /instances or /instances/<name> (the kernel fails with EINVAL)`);
  }
  return { instance: name };
}

const ITEM_PREFIX: Record<string, string> = {
  'memory-add': 'memory@',
  'memory-remove': 'memory@',
  'cpu-add': 'cpu@',
  'cpu-remove': 'cpu@',
  'device-add': 'pci@',
  'device-remove': 'pci@',
};

function parseInstanceCreate(n: FdtNode, where: string, ignored: string[]): InstanceCreateOp {
  const op: InstanceCreateOp = { op: 'instance-create', name: reqString(n, 'instance-name'), memoryBytes: 0n, cpus: [] };
  const id = optU32(n, 'id');
  if (id !== undefined) op.id = id;
  const resources = getChild(n, 'resources');
  if (resources === undefined) malformed(`${where}: instance-create has no resources node (the kernel fails with EINVAL)`);
  if (getProperty(resources, 'device-names') !== undefined) {
    malformed(`${where}/resources: device-names is rejected by the kernel; devices are assigned with device-add`);
  }
  const bytes = getProperty(resources, 'memory-bytes');
  if (bytes !== undefined) op.memoryBytes = readU64(bytes);
  const cpus = getProperty(resources, 'cpus');
  if (cpus !== undefined) op.cpus = readU64s(cpus).map((c) => cpuNumber(`${where}/resources/cpus`, c));
  const numa = getProperty(resources, 'numa-nodes');
  if (numa !== undefined) op.numaNodes = readU32s(numa);
  const devices = getChild(resources, 'devices');
  if (devices !== undefined) op.devices = readDevicesNode(devices);
  const virtio = getChild(resources, 'virtio');
  if (virtio !== undefined) {
    op.virtio = virtio.children.map((v) => {
      const dev: VirtioDevice = { name: v.name, deviceId: reqU32(v, 'device-id'), queues: reqU32(v, 'queues') };
      const size = optU32(v, 'queue-size');
      if (size !== undefined) dev.queueSize = size;
      return dev;
    });
  }
  if (getChild(n, 'chosen') !== undefined) ignored.push(`${where}/chosen`);
  return op;
}

function parseItem(name: OverlayOpName, item: FdtNode, target: OverlayTarget, where: string): ResourceOp {
  const numaNode = optU32(item, 'numa-node-id');
  const flags = optU32(item, 'flags');
  const extra = <T extends object>(o: T): T => {
    if (numaNode !== undefined && !name.startsWith('device')) Object.assign(o, { numaNode });
    if (flags !== undefined && name !== 'memory-add' && name !== 'memory-remove') Object.assign(o, { flags });
    return o;
  };
  switch (name) {
    case 'memory-add':
      if (target === 'pool') {
        if (getProperty(item, 'reg') !== undefined) malformed(`${where}: pool memory-add takes a size, not a reg (the kernel fails with EINVAL)`);
        return extra<PoolMemoryAddOp>({ op: name, target, size: readU64(reqProp(item, 'size')) });
      }
      return extra<InstanceMemoryAddOp>({ op: name, target, ...readMemReg(item, where) });
    case 'memory-remove':
      return extra<MemoryRemoveOp>({ op: name, target, ...readMemReg(item, where) });
    case 'cpu-add':
    case 'cpu-remove': {
      const reg = reqProp(item, 'reg');
      const id = reg.value.length === 4 ? readU32(reg) : cpuNumber(`${where}/reg`, readU64(reg));
      return extra<CpuOp>({ op: name, target, id });
    }
    default: {
      const op: DeviceOp = extra<DeviceOp>({ op: name as DeviceOp['op'], target, pciId: reqString(item, 'pci-id') });
      const alias = optString(item, 'alias');
      const driver = optString(item, 'driver');
      if (alias !== undefined) op.alias = alias;
      if (driver !== undefined) op.driver = driver;
      return op;
    }
  }
}

/**
 * Parse an overlay DTBO (e.g. `overlays/tx_N/dtbo`) the way the kernel reads it. Throws
 * ERR_MK_INVALID_FDT where the kernel would fail the transaction on the blob's shape.
 */
export function parseOverlay(dtb: Uint8Array, limits?: FdtLimits): ParsedOverlay {
  const root = decodeFdt(dtb, limits).root;
  const out: ParsedOverlay = { ops: [], ignored: [] };
  const resources = optString(root, 'mk,resources');
  if (resources !== undefined) out.resources = resources;
  const fragments = root.children
    .filter((c) => c.name.startsWith('fragment@'))
    .map((c) => {
      const unit = c.name.slice('fragment@'.length);
      if (!/^(0x)?[0-9a-fA-F]{1,8}$/.test(unit)) malformed(`overlay: ${show(c.name)} has no valid hexadecimal unit address (the kernel fails with EINVAL)`);
      return { unit: parseInt(unit, 16), node: c };
    })
    .sort((a, b) => a.unit - b.unit);
  if (fragments.length === 0) malformed('overlay: no fragment@<hex> node (the kernel fails with EINVAL)');
  for (const { node: frag } of fragments) {
    const where = `/${frag.name}`;
    const target = parseTarget(reqString(frag, 'target-path'));
    const overlay = getChild(frag, '__overlay__');
    if (overlay === undefined) malformed(`${where}: no __overlay__ node (the kernel fails with EINVAL)`);
    for (const child of overlay.children) {
      if (!INSTANCE_OP_ORDER.includes(child.name as OverlayOpName)) out.ignored.push(`${where}/__overlay__/${child.name}`);
    }
    // the kernel's pool order also looks up the two instance ops, only to reject them there
    const order = target === 'pool' ? ['instance-create' as const, ...POOL_OP_ORDER, 'instance-remove' as const] : INSTANCE_OP_ORDER;
    for (const name of order) {
      const opn = getChild(overlay, name);
      if (opn === undefined) continue;
      const at = `${where}/__overlay__/${name}`;
      if ((name === 'instance-create' || name === 'instance-remove') !== (target === 'instances')) {
        malformed(`${at}: ${name} does not belong in a fragment targeting ${reqString(frag, 'target-path')} (the kernel fails with EINVAL)`);
      }
      if (name === 'instance-create') {
        out.ops.push(parseInstanceCreate(opn, at, out.ignored));
      } else if (name === 'instance-remove') {
        out.ops.push({ op: name, name: reqString(opn, 'instance-name') });
      } else {
        for (const item of opn.children) {
          if (item.name.startsWith(ITEM_PREFIX[name]!)) out.ops.push(parseItem(name, item, target as OverlayTarget, `${at}/${item.name}`));
          else out.ignored.push(`${at}/${item.name}`);
        }
      }
    }
  }
  return out;
}

