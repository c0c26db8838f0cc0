/**
 * Reading overlays back (e.g. `overlays/tx_N/dtbo`, or a blob kerf wrote) the way the kernel
 * reads them (overlay.c@14213ee5, dts.c@0a54b0b4). Everything the kernel reads becomes part of
 * an op; kerf's `cpu-affinity`, `memory-policy` and `device-names` are kept too, so a kerf blob
 * re-encodes to the same tree; what the model does not carry is listed in `ignored`.
 */
import { decodeFdt } from '../fdt/codec';
import { getChild, getProperty, readStrings, readU32, readU32s, readU64, readU64s } from '../fdt/tree';
import type { FdtLimits, FdtNode } from '../fdt/types';
import { cpuNumber, malformed, optString, optU32, readDevicesNode, reqProp, reqString, reqU32, show } from './common';
import { OldKerfFormatError } from './errors';
import {
  INSTANCE_OP_ORDER,
  INSTANCES_PATH,
  POOL_OP_ORDER,
  POOL_PATH,
  type CpuOp,
  type DeviceOp,
  type InstanceCreateOp,
  type InstanceMemoryAddOp,
  type MemoryRemoveOp,
  type OverlayOpName,
  type OverlayTarget,
  type ParsedOverlay,
  type PoolMemoryAddOp,
  type ResourceOp,
  type VirtioDevice,
} from './overlay';
import { readMemReg } from './trees';

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

/** Properties each node kind carries in the model; others are listed in `ignored`. */
const KNOWN_CREATE = ['instance-name', 'id'];
const KNOWN_RESOURCES = ['memory-bytes', 'cpus', 'numa-nodes', 'device-names', 'cpu-affinity', 'memory-policy'];
const KNOWN_ITEM: Record<string, string[]> = {
  memory: ['reg', 'size', 'numa-node-id', 'mem-type'],
  cpu: ['reg', 'numa-node-id', 'flags'],
  pci: ['pci-id', 'alias', 'driver', 'flags'],
};

function unknownProps(n: FdtNode, known: string[], where: string, ignored: string[]): void {
  for (const p of n.properties) if (!known.includes(p.name)) ignored.push(`${where}/${p.name}`);
}

function parseInstanceCreate(n: FdtNode, where: string, ignored: string[]): InstanceCreateOp {
  const op: InstanceCreateOp = { op: 'instance-create', name: reqString(n, 'instance-name') };
  const id = optU32(n, 'id');
  if (id !== undefined) op.id = id;
  unknownProps(n, KNOWN_CREATE, where, ignored);
  const resources = getChild(n, 'resources');
  if (resources === undefined) malformed(`${where}: instance-create has no resources node (the kernel fails with EINVAL)`);
  const at = `${where}/resources`;
  unknownProps(resources, KNOWN_RESOURCES, at, ignored);
  const cpus = getProperty(resources, 'cpus');
  if (cpus !== undefined) op.cpus = readU64s(cpus).map((c) => cpuNumber(`${at}/cpus`, c));
  const bytes = getProperty(resources, 'memory-bytes');
  if (bytes !== undefined) op.memoryBytes = readU64(bytes);
  const names = getProperty(resources, 'device-names');
  if (names !== undefined) op.deviceNames = readStrings(names);
  const numa = getProperty(resources, 'numa-nodes');
  if (numa !== undefined) op.numaNodes = readU32s(numa);
  const affinity = optString(resources, 'cpu-affinity');
  if (affinity !== undefined) op.cpuAffinity = affinity;
  const policy = optString(resources, 'memory-policy');
  if (policy !== undefined) op.memoryPolicy = policy;
  for (const c of resources.children) {
    if (c.name === 'devices') op.devices = readDevicesNode(c);
    else if (c.name === 'virtio') {
      op.virtio = c.children.map((v) => {
        const dev: VirtioDevice = { name: v.name, deviceId: reqU32(v, 'device-id'), queues: reqU32(v, 'queues') };
        const size = optU32(v, 'queue-size');
        if (size !== undefined) dev.queueSize = size;
        return dev;
      });
    } else ignored.push(`${at}/${c.name}`);
  }
  for (const c of n.children) if (c.name !== 'resources') ignored.push(`${where}/${c.name}`);
  return op;
}

function parseItem(name: OverlayOpName, item: FdtNode, target: OverlayTarget, where: string, ignored: string[]): ResourceOp {
  unknownProps(item, KNOWN_ITEM[ITEM_PREFIX[name]!.slice(0, -1)]!, where, ignored);
  const numaNode = optU32(item, 'numa-node-id');
  const flags = optU32(item, 'flags');
  const extra = <T extends object>(o: T): T => {
    if (numaNode !== undefined && !name.startsWith('device')) Object.assign(o, { numaNode });
    if (flags !== undefined && name !== 'memory-add' && name !== 'memory-remove') Object.assign(o, { flags });
    return o;
  };
  switch (name) {
    case 'memory-add': {
      if (target === 'pool') {
        if (getProperty(item, 'reg') !== undefined) malformed(`${where}: pool memory-add takes a size, not a reg (the kernel fails with EINVAL)`);
        return extra<PoolMemoryAddOp>({ op: name, target, size: readU64(reqProp(item, 'size')) });
      }
      const op = extra<InstanceMemoryAddOp>({ op: name, target, ...readMemReg(item, where) });
      const memType = optU32(item, 'mem-type');
      if (memType !== undefined) op.memType = memType;
      return op;
    }
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
 * kerf 0.1 wrote fragments without `target-path` (the op named its instance with `mk,instance`,
 * memory items were `region@N`): the newest kernel fails every such fragment with EINVAL
 * (overlay.c mk_overlay_resolve_target: "fragment without a valid target-path").
 */
function checkOldKerf(frag: FdtNode, overlay: FdtNode | undefined): void {
  if (getProperty(frag, 'target-path') !== undefined || overlay === undefined) return;
  const ops = overlay.children.filter((c) => INSTANCE_OP_ORDER.includes(c.name as OverlayOpName));
  if (ops.length === 0) return;
  const named = ops.find((c) => getProperty(c, 'mk,instance') !== undefined);
  throw new OldKerfFormatError(
    `overlay: /${frag.name} has no target-path${named ? ` and names its instance with mk,instance` : ''}: this overlay was written by kerf 0.1, ` +
      'whose fragments the newest kernel refuses (EINVAL, overlay.c mk_overlay_resolve_target). Write it again with a newer kerf (0.2 or later) ' +
      "or with this package's encodeOverlay; do not send this blob.",
    { fragment: frag.name, ops: ops.map((c) => c.name) },
  );
}

/**
 * Parse an overlay DTBO (e.g. `overlays/tx_N/dtbo`) the way the kernel reads it. Throws
 * ERR_MK_INVALID_FDT where the kernel would fail the transaction on the blob's shape, and
 * ERR_MK_OLD_KERF_FORMAT (OldKerfFormatError) for kerf 0.1's fragments without target-path.
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
  for (const { node: frag } of fragments) checkOldKerf(frag, getChild(frag, '__overlay__'));
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
        unknownProps(opn, ['instance-name'], at, out.ignored);
      } else {
        for (const item of opn.children) {
          if (item.name.startsWith(ITEM_PREFIX[name]!)) out.ops.push(parseItem(name, item, target as OverlayTarget, `${at}/${item.name}`, out.ignored));
          else out.ignored.push(`${at}/${item.name}`);
        }
      }
    }
  }
  return out;
}
