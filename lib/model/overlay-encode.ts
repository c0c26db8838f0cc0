/**
 * Building and encoding overlays (types and validation in overlay.ts). The node layout follows
 * kerf's writer (kerf `src/kerf/dtc/overlay.py`, branch pool-reinit): instance-create resources
 * in kerf's property order, CPU items named by their physical id, memory and PCI items by
 * index. So the ops parseOverlay reads from a kerf blob re-encode to the same tree, and with
 * `strings: 'libfdt'` to the same bytes.
 */
import { encodeFdt } from '../fdt/codec';
import { node, prop } from '../fdt/tree';
import type { Fdt, FdtNode, FdtProperty } from '../fdt/types';
import { devicesNode, invalid } from './common';
import {
  DEFAULT_VIRTIO_QUEUES,
  INSTANCE_OP_ORDER,
  MAX_OVERLAY_WRITE_BYTES,
  MAX_RESOURCES_DESCRIPTION,
  OVERLAY_COMPATIBLE,
  POOL_OP_ORDER,
  POOL_PATH,
  groupFragments,
  type InstanceCreateOp,
  type InstanceRemoveOp,
  type OverlayOp,
  type OverlayOpName,
  type OverlayOptions,
  type ResourceOp,
} from './overlay';
import { checkText } from './common';

function opt<T>(v: T | undefined, make: (v: T) => FdtProperty): FdtProperty[] {
  return v === undefined ? [] : [make(v)];
}

function instanceCreateNode(op: InstanceCreateOp): FdtNode {
  // kerf's property order: cpus, memory-bytes, device-names, numa-nodes, cpu-affinity, memory-policy
  const resources = node(
    'resources',
    [
      ...opt(op.cpus, (c) => prop.u64('cpus', ...c)),
      ...opt(op.memoryBytes, (m) => prop.u64('memory-bytes', m)),
      ...opt(op.deviceNames, (d) => prop.strings('device-names', d)),
      ...opt(op.numaNodes, (n) => prop.u32('numa-nodes', ...n)),
      ...opt(op.cpuAffinity, (a) => prop.string('cpu-affinity', a)),
      ...opt(op.memoryPolicy, (p) => prop.string('memory-policy', p)),
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
        ...opt(op.target === 'pool' ? undefined : op.memType, (m) => prop.u32('mem-type', m)),
      ]);
    case 'memory-remove':
      return node(`memory@${unit}`, [prop.u64('reg', op.base, op.size), ...opt(op.numaNode, (n) => prop.u32('numa-node-id', n))]);
    case 'cpu-add':
    case 'cpu-remove':
      return node(`cpu@${op.id}`, [
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
  const fragments = groupFragments(ops, options);
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

/**
 * Build and encode; refuses a DTBO over MAX_OVERLAY_WRITE_BYTES (4096): kernfs would hand the
 * kernel only its first page (a short write), so the kernel would see a cut blob.
 */
export function encodeOverlay(ops: OverlayOp[], options: OverlayOptions = {}): Buffer {
  const blob = encodeFdt(buildOverlay(ops, options), { strings: options.strings ?? 'dtc' });
  if (blob.length > MAX_OVERLAY_WRITE_BYTES) {
    invalid(
      `overlay: the encoded DTBO is ${blob.length} bytes but overlays/new takes at most ${MAX_OVERLAY_WRITE_BYTES} bytes in one write (kernfs passes one page per write(2); more arrives cut); split the ${ops.length} operations into several overlays`,
      { bytes: blob.length, limit: MAX_OVERLAY_WRITE_BYTES },
    );
  }
  return blob;
}

