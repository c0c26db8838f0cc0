import t from 'tap';
import fc from 'fast-check';
import { decodeFdt, encodeFdt, findNode, getProperty, node, parseDts, printDts, prop, readString, readU32, readU64, readU64s } from '../../lib/fdt';
import type { FdtNode } from '../../lib/fdt/types';
import {
  DEFAULT_VIRTIO_QUEUES,
  MAX_OVERLAY_WRITE_BYTES,
  buildOverlay,
  encodeOverlay,
  overlayApplyOrder,
  parseOverlay,
  targetPath,
  type InstanceCreateOp,
  type OverlayOp,
} from '../../lib/model';

const MiB = 1n << 20n;

function create(): InstanceCreateOp {
  return {
    op: 'instance-create',
    name: 'web',
    id: 1,
    memoryBytes: 512n * MiB,
    cpus: [4, 5],
    numaNodes: [0],
    devices: [{ type: 'pci', name: 'nic0', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e }],
    virtio: [{ name: 'net0', deviceId: 1, queues: 2, queueSize: 256 }],
  };
}

const fullOps = (): OverlayOp[] => [
  create(),
  { op: 'cpu-add', target: { instance: 'web' }, id: 6, numaNode: 0, flags: 1 },
  { op: 'memory-add', target: 'pool', size: 256n * MiB, numaNode: 1 },
  { op: 'cpu-remove', target: 'pool', id: 9, numaNode: 0, flags: 2 },
  { op: 'memory-add', target: { instance: 'web' }, base: 0x100000000n, size: 128n * MiB, numaNode: 0 },
  { op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:05.0', driver: 'vfio-pci', flags: 3 },
  { op: 'device-add', target: 'pool', pciId: '0000:00:06.0', alias: 'nvme0' },
  { op: 'memory-remove', target: 'pool', base: 0x200000000n, size: 1024n * MiB, numaNode: 1 },
  { op: 'cpu-add', target: { instance: 'web' }, id: 7 },
  { op: 'device-remove', target: 'pool', pciId: '0000:00:07.0' },
  { op: 'cpu-add', target: 'pool', id: 10 },
  { op: 'instance-remove', name: 'old' },
];

const byPath = (fdt: { root: FdtNode }, path: string): FdtNode => {
  const n = findNode(fdt.root, path);
  if (n === undefined) throw new Error(`no node ${path}`);
  return n;
};

t.test('fragments: one per target in first-seen order, ops in the kernel order, same-kind ops merged', async (t) => {
  const fdt = buildOverlay(fullOps(), { resources: 'web: +cpu 6 7' });
  t.same(fdt.root.children.map((c) => c.name), ['fragment@0', 'fragment@1', 'fragment@2']);
  t.same(fdt.root.children.map((c) => readString(getProperty(c, 'target-path')!)), ['/instances', '/instances/web', '/resources']);
  t.equal(readString(getProperty(fdt.root, 'compatible')!), 'linux,multikernel-overlay');
  t.equal(readString(getProperty(fdt.root, 'mk,resources')!), 'web: +cpu 6 7');
  t.same(byPath(fdt, '/fragment@0/__overlay__').children.map((c) => c.name), ['instance-create', 'instance-remove']);
  t.same(byPath(fdt, '/fragment@1/__overlay__').children.map((c) => c.name), ['memory-add', 'cpu-add', 'device-add']);
  t.same(byPath(fdt, '/fragment@2/__overlay__').children.map((c) => c.name), ['cpu-remove', 'device-remove', 'memory-remove', 'memory-add', 'cpu-add', 'device-add']);
  t.same(byPath(fdt, '/fragment@1/__overlay__/cpu-add').children.map((c) => c.name), ['cpu@6', 'cpu@7'], 'two cpu-add ops merged into one node, items named by CPU id as kerf names them');
  const dts = printDts(fdt);
  t.notMatch(dts, /device-names/, 'device-names is never emitted');
  t.notMatch(dts, /__fixups__|__symbols__|__local_fixups__/, 'kerf style: no /plugin/ metadata');
});

t.test('golden property encodings', async (t) => {
  const fdt = decodeFdt(encodeOverlay(fullOps()));
  const ic = byPath(fdt, '/fragment@0/__overlay__/instance-create');
  t.same(Buffer.from(getProperty(ic, 'id')!.value), Buffer.from('00000001', 'hex'), 'id: one u32');
  t.equal(readString(getProperty(ic, 'instance-name')!), 'web');
  const res = byPath(fdt, '/fragment@0/__overlay__/instance-create/resources');
  t.same(Buffer.from(getProperty(res, 'memory-bytes')!.value), Buffer.from('0000000020000000', 'hex'), 'memory-bytes: one u64');
  t.same(Buffer.from(getProperty(res, 'cpus')!.value), Buffer.from('00000000000000040000000000000005', 'hex'), 'cpus: u64 cells');
  t.same(Buffer.from(getProperty(res, 'numa-nodes')!.value), Buffer.from('00000000', 'hex'));
  t.equal(getProperty(res, 'device-names'), undefined);
  const nic = byPath(fdt, '/fragment@0/__overlay__/instance-create/resources/devices/nic0');
  t.equal(readString(getProperty(nic, 'pci-id')!), '0000:00:04.0');
  const net = byPath(fdt, '/fragment@0/__overlay__/instance-create/resources/virtio/net0');
  t.same([readU32(getProperty(net, 'device-id')!), readU32(getProperty(net, 'queues')!), readU32(getProperty(net, 'queue-size')!)], [1, 2, 256]);
  const cpu = byPath(fdt, '/fragment@1/__overlay__/cpu-add/cpu@6');
  t.same(Buffer.from(getProperty(cpu, 'reg')!.value), Buffer.from('0000000000000006', 'hex'), 'cpu reg: /bits/ 64');
  t.equal(readU32(getProperty(cpu, 'numa-node-id')!), 0);
  t.equal(readU32(getProperty(cpu, 'flags')!), 1);
  const imem = byPath(fdt, '/fragment@1/__overlay__/memory-add/memory@0');
  t.same(Buffer.from(getProperty(imem, 'reg')!.value), Buffer.from('00000001000000000000000008000000', 'hex'), 'instance memory-add: reg <u64 base, u64 size>');
  t.equal(getProperty(imem, 'size'), undefined);
  const pmem = byPath(fdt, '/fragment@2/__overlay__/memory-add/memory@0');
  t.equal(readU64(getProperty(pmem, 'size')!), 256n * MiB, 'pool memory-add: size');
  t.equal(getProperty(pmem, 'reg'), undefined, 'pool memory-add: never reg');
  t.equal(readU32(getProperty(pmem, 'numa-node-id')!), 1);
  const rm = byPath(fdt, '/fragment@2/__overlay__/memory-remove/memory@0');
  t.same(readU64s(getProperty(rm, 'reg')!), [0x200000000n, 1024n * MiB], 'memory-remove: reg <u64 base, u64 size>');
  t.equal(readU32(getProperty(rm, 'numa-node-id')!), 1);
  const dev = byPath(fdt, '/fragment@1/__overlay__/device-add/pci@0');
  t.equal(readString(getProperty(dev, 'driver')!), 'vfio-pci');
  t.equal(readString(getProperty(byPath(fdt, '/fragment@2/__overlay__/device-add/pci@0'), 'alias')!), 'nvme0');
  t.equal(readString(getProperty(byPath(fdt, '/fragment@0/__overlay__/instance-remove'), 'instance-name')!), 'old');
  const minimal = decodeFdt(encodeOverlay([{ op: 'instance-create', name: 'a', memoryBytes: 4096n, cpus: [1], virtio: [{ name: 'net0', deviceId: 1 }], devices: [] }]));
  const ic2 = byPath(minimal, '/fragment@0/__overlay__/instance-create');
  t.equal(getProperty(ic2, 'id'), undefined, 'id left out: the kernel picks one');
  t.equal(findNode(minimal.root, '/fragment@0/__overlay__/instance-create/resources/devices'), undefined);
  const net0 = byPath(minimal, '/fragment@0/__overlay__/instance-create/resources/virtio/net0');
  t.equal(readU32(getProperty(net0, 'queues')!), DEFAULT_VIRTIO_QUEUES, 'queues is required by the kernel: default emitted');
  t.equal(getProperty(net0, 'queue-size'), undefined);
  t.equal(getProperty(minimal.root, 'mk,resources'), undefined);
  t.equal(findNode(minimal.root, '/fragment@0/__overlay__/instance-create/resources/virtio/net0') !== undefined, true);
  const novirtio = decodeFdt(encodeOverlay([{ op: 'instance-create', name: 'a', memoryBytes: 4096n, cpus: [1], virtio: [] }]));
  t.equal(findNode(novirtio.root, '/fragment@0/__overlay__/instance-create/resources/virtio'), undefined);
});

t.test('the reference overlay DTS parses to exactly what buildOverlay produces', async (t) => {
  const text = `/dts-v1/; /plugin/;
/ {
    compatible = "linux,multikernel-overlay";
    fragment@0 {
        target-path = "/instances";            /* or "/instances/<name>", "/resources" */
        __overlay__ { instance-create { instance-name = "demo"; id = <1>;
            resources { cpus = /bits/ 64 <4 5>; memory-bytes = /bits/ 64 <0x40000000>; }; }; };
    };
};
`;
  const { fdt, plugin } = parseDts(text);
  t.equal(plugin, true);
  const ops: OverlayOp[] = [{ op: 'instance-create', name: 'demo', id: 1, memoryBytes: 0x40000000n, cpus: [4, 5] }];
  t.equal(printDts(fdt, { plugin: true }), printDts(buildOverlay(ops), { plugin: true }));
  t.ok(encodeFdt(fdt).equals(encodeOverlay(ops)), 'byte-identical blobs');
  t.same(parseOverlay(encodeFdt(fdt)), { ops, ignored: [] });
});

t.test('parseOverlay reads back what encodeOverlay wrote, in the kernel order', async (t) => {
  const ops = fullOps();
  const parsed = parseOverlay(encodeOverlay(ops, { resources: 'x' }));
  t.same(parsed.ops, overlayApplyOrder(ops));
  t.equal(parsed.resources, 'x');
  t.same(parsed.ignored, []);
  t.same(
    overlayApplyOrder(ops).map((o) => `${o.op} ${targetPath(o)}`),
    [
      'instance-create /instances',
      'instance-remove /instances',
      'memory-add /instances/web',
      'cpu-add /instances/web',
      'cpu-add /instances/web',
      'device-add /instances/web',
      'cpu-remove /resources',
      'device-remove /resources',
      'memory-remove /resources',
      'memory-add /resources',
      'cpu-add /resources',
      'device-add /resources',
    ],
  );
});

const overlayBlob = (fragments: FdtNode[], rootProps = [prop.string('compatible', 'linux,multikernel-overlay')]) => encodeFdt(node('', rootProps, fragments));
const frag = (unit: string, path: string | undefined, ops: FdtNode[] | undefined): FdtNode =>
  node(`fragment@${unit}`, path === undefined ? [] : [prop.string('target-path', path)], ops === undefined ? [] : [node('__overlay__', [], ops)]);

t.test('parseOverlay reads the kernel forms builders do not emit, and ignores what the kernel ignores', async (t) => {
  const blob = overlayBlob([
    frag('10', '/resources', [node('cpu-remove', [], [node('cpu@0', [prop.u32('reg', 12)]), node('junk')]), node('cpu-move')]),
    frag('2', '/instances/db', [node('cpu-add', [], [node('cpu@0', [prop.u64('reg', 3)])])]),
    frag('0x3', '/instances', [
      node('instance-create', [prop.string('instance-name', 'x')], [node('resources'), node('chosen', [], [node('multikernel,host-tree')])]),
    ]),
    node('not-a-fragment'),
  ]);
  const parsed = parseOverlay(blob);
  t.same(parsed.ops, [
    { op: 'cpu-add', target: { instance: 'db' }, id: 3 },
    { op: 'instance-create', name: 'x' },
    { op: 'cpu-remove', target: 'pool', id: 12 },
  ], 'fragments sorted by hex unit (2 < 0x3 < 0x10), 32-bit cpu reg accepted, absent memory-bytes and cpus left out (both optional in dts.c)');
  t.same(parsed.ignored, ['/fragment@3/__overlay__/instance-create/chosen', '/fragment@10/__overlay__/cpu-move', '/fragment@10/__overlay__/cpu-remove/junk'].map((p) => p.replace('fragment@3', 'fragment@0x3')));
  t.equal(parsed.resources, undefined);
  const remove = parseOverlay(overlayBlob([frag('0', '/instances/db', [node('memory-remove', [], [node('memory@0', [prop.u64('reg', 4096, 8192), prop.u32('numa-node-id', 1)])]), node('device-remove', [], [node('pci@0', [prop.string('pci-id', '0000:00:01.0'), prop.u32('numa-node-id', 1)])])])]));
  t.same(remove.ops, [
    { op: 'memory-remove', target: { instance: 'db' }, base: 4096n, size: 8192n, numaNode: 1 },
    { op: 'device-remove', target: { instance: 'db' }, pciId: '0000:00:01.0' },
  ], 'numa-node-id read only where the kernel uses it');
  const flags = parseOverlay(overlayBlob([frag('0', '/resources', [node('memory-add', [], [node('memory@0', [prop.u64('size', 4096), prop.u32('flags', 1)])])])]));
  t.same(flags.ops, [{ op: 'memory-add', target: 'pool', size: 4096n }], 'flags read only where the kernel uses it');
});

t.test('parseOverlay refuses what the kernel refuses', async (t) => {
  const bad: [string, Uint8Array, RegExp][] = [
    ['no fragment', overlayBlob([node('x')]), /no fragment@<hex> node/],
    ['bad unit address', overlayBlob([frag('zz', '/resources', [])]), /"fragment@zz" has no valid hexadecimal unit address/],
    ['no target-path', overlayBlob([frag('0', undefined, [])]), /missing property "target-path"/],
    ['unknown target', overlayBlob([frag('0', '/foo', [])]), /target-path "\/foo" is not \/resources/],
    ['empty instance name', overlayBlob([frag('0', '/instances/', [])]), /target-path "\/instances\/"/],
    ['nested instance path', overlayBlob([frag('0', '/instances/a/b', [])]), /target-path "\/instances\/a\/b"/],
    ['no __overlay__', overlayBlob([frag('0', '/resources', undefined)]), /\/fragment@0: no __overlay__ node/],
    ['cpu op on /instances', overlayBlob([frag('0', '/instances', [node('cpu-add')])]), /cpu-add does not belong in a fragment targeting \/instances/],
    ['instance-create on /resources', overlayBlob([frag('0', '/resources', [node('instance-create')])]), /instance-create does not belong in a fragment targeting \/resources/],
    ['pool memory-add by reg', overlayBlob([frag('0', '/resources', [node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 4096), prop.u64('size', 4096)])])])]), /pool memory-add takes a size, not a reg/],
    ['memory reg of 12 bytes', overlayBlob([frag('0', '/instances/a', [node('memory-remove', [], [node('memory@0', [prop.u32('reg', 0, 0, 4096)])])])]), /reg/],
    ['cpu reg of 12 bytes', overlayBlob([frag('0', '/resources', [node('cpu-add', [], [node('cpu@0', [prop.u32('reg', 0, 0, 1)])])])]), /reg/],
    ['pool size of 4 bytes', overlayBlob([frag('0', '/resources', [node('memory-add', [], [node('memory@0', [prop.u32('size', 4096)])])])]), /size/],
    ['instance-create without resources', overlayBlob([frag('0', '/instances', [node('instance-create', [prop.string('instance-name', 'a')])])]), /instance-create has no resources node/],
    ['virtio without queues', overlayBlob([frag('0', '/instances', [node('instance-create', [prop.string('instance-name', 'a')], [node('resources', [], [node('virtio', [], [node('net0', [prop.u32('device-id', 1)])])])])])]), /missing property "queues"/],
    ['instance-remove without a name', overlayBlob([frag('0', '/instances', [node('instance-remove')])]), /missing property "instance-name"/],
    ['device without pci-id', overlayBlob([frag('0', '/resources', [node('device-add', [], [node('pci@0')])])]), /missing property "pci-id"/],
    ['numa-node-id of 8 bytes', overlayBlob([frag('0', '/resources', [node('cpu-add', [], [node('cpu@0', [prop.u64('reg', 1), prop.u64('numa-node-id', 1)])])])]), /numa-node-id/],
    ['huge cpu id', overlayBlob([frag('0', '/resources', [node('cpu-add', [], [node('cpu@0', [prop.u64('reg', 2n ** 60n)])])])]), /larger than this library supports/],
  ];
  for (const [name, blob, message] of bad) t.throws(() => parseOverlay(blob), { code: 'ERR_MK_INVALID_FDT', message }, name);
});

const cases: [string, OverlayOp[] | unknown, RegExp][] = [
  ['no ops', [], /overlay: ops must be a non-empty array/],
  ['ops not an array', 'x', /overlay: ops must be a non-empty array/],
  ['op not an object', [null], /ops\[0\]: must be an operation object/],
  ['unknown op', [{ op: 'cpu-move', target: 'pool', id: 1 }], /ops\[0\].op: "cpu-move" is not an overlay operation/],
  ['empty instance name', [{ ...create(), name: '' }], /ops\[0\] instance-create: name: "" is not a valid instance name/],
  ['instance name with a slash', [{ op: 'instance-remove', name: 'a/b' }], /ops\[0\] instance-remove: name: "a\/b" is not a valid instance name/],
  ['instance name with a space (bad netdev name)', [{ ...create(), name: 'my web' }], /"my web" is not a valid instance name/],
  ['instance name with a colon (bad netdev name)', [{ ...create(), name: 'web:1' }], /"web:1" is not a valid instance name/],
  ['instance name too long', [{ ...create(), name: 'w'.repeat(32) }], /is not a valid instance name; use 1 to 31/],
  ['instance name starting with a dot', [{ ...create(), name: '.web' }], /".web" is not a valid instance name/],
  ['bad target', [{ op: 'cpu-add', target: 'host', id: 1 }], /ops\[0\] cpu-add: target must be 'pool' or \{ instance: '<name>' \}/],
  ['bad target instance', [{ op: 'cpu-add', target: { instance: 'a b' }, id: 1 }], /ops\[0\] cpu-add: target.instance: "a b" is not a valid instance name/],
  ['id 0', [{ ...create(), id: 0 }], /ops\[0\] instance-create "web": id: 0 is not a valid instance id; use an integer 1..2047/],
  ['id 2048', [{ ...create(), id: 2048 }], /id: 2048 is not a valid instance id/],
  ['zero memory', [{ ...create(), memoryBytes: 0n }], /instance-create "web": memoryBytes: 0n must be a non-zero multiple of 4096/],
  ['unaligned memory', [{ ...create(), memoryBytes: 100n }], /memoryBytes: 100n must be/],
  ['no CPU', [{ ...create(), cpus: [] }], /instance-create "web": cpus: must be a non-empty array/],
  ['boot CPU', [{ ...create(), cpus: [1, 0] }], /instance-create "web": cpus\[1\]: CPU 0 is the boot CPU/],
  ['cpu over 2047-style id is fine but negative is not', [{ ...create(), cpus: [-2] }], /cpus\[0\]: -2 is not a physical CPU id/],
  ['duplicate CPU', [{ ...create(), cpus: [3, 3] }], /cpus\[1\]: CPU 3 is listed twice/],
  ['empty numaNodes', [{ ...create(), numaNodes: [] }], /numaNodes: must be a non-empty array or left out/],
  ['bad numaNodes', [{ ...create(), numaNodes: [0, 5000] }], /numaNodes\[1\]: 5000 is not a NUMA node id/],
  ['platform device without id', [{ ...create(), devices: [{ type: 'platform', name: 'com1' }] }], /devices\[0\]: a platform device needs deviceName or acpiHid/],
  ['bad device', [{ ...create(), devices: [{ type: 'pci', name: 'nic0', pciId: 'x', vendorId: 1, deviceId: 1 }] }], /devices\[0\].pciId: "x" is not a PCI address/],
  ['virtio not an array', [{ ...create(), virtio: {} }], /virtio: must be an array/],
  ['17 virtio devices', [{ ...create(), virtio: Array.from({ length: 17 }, (_, i) => ({ name: `net${i}`, deviceId: 1 })) }], /virtio: 17 devices; an instance takes at most 16/],
  ['duplicate virtio name', [{ ...create(), virtio: [{ name: 'net0', deviceId: 1 }, { name: 'net0', deviceId: 1 }] }], /virtio\[1\].name: "net0" is used twice/],
  ['bad virtio name', [{ ...create(), virtio: [{ name: 'net 0', deviceId: 1 }] }], /virtio\[0\].name: "net 0" is not a valid device tree node name/],
  ['virtio entry null', [{ ...create(), virtio: [null] }], /virtio\[0\].name: undefined is not a valid/],
  ['bad virtio device id', [{ ...create(), virtio: [{ name: 'net0', deviceId: -1 }] }], /virtio\[0\].deviceId: -1 is not a virtio device id/],
  ['zero queues', [{ ...create(), virtio: [{ name: 'net0', deviceId: 1, queues: 0 }] }], /virtio\[0\].queues: 0 must be an integer 1..8/],
  ['fractional queues', [{ ...create(), virtio: [{ name: 'net0', deviceId: 1, queues: 1.5 }] }], /virtio\[0\].queues: 1.5 must be an integer/],
  ['nine queues', [{ ...create(), virtio: [{ name: 'net0', deviceId: 1, queues: 9 }] }], /queues: 9 must be an integer 1..8/],
  ['queue size beyond u32', [{ ...create(), virtio: [{ name: 'net0', deviceId: 1, queueSize: 2 ** 32 }] }], /queueSize: 4294967296 is not a queue size/],
  ['pool memory-add with a base', [{ op: 'memory-add', target: 'pool', size: 4096n, base: 0n }], /ops\[0\] memory-add on pool: base: the pool picks the base/],
  ['instance memory-add without a base', [{ op: 'memory-add', target: { instance: 'web' }, size: 4096n }], /ops\[0\] memory-add on instance "web": base: undefined must be a page-aligned/],
  ['instance memory-add unaligned base', [{ op: 'memory-add', target: { instance: 'web' }, base: 100n, size: 4096n }], /base: 100n must be a page-aligned/],
  ['instance memory-add negative base', [{ op: 'memory-add', target: { instance: 'web' }, base: -4096n, size: 4096n }], /base: -4096n must be a page-aligned/],
  ['memory-remove base over u64', [{ op: 'memory-remove', target: 'pool', base: 1n << 64n, size: 4096n }], /base: 18446744073709551616n must be a page-aligned/],
  ['memory-add zero size', [{ op: 'memory-add', target: 'pool', size: 0n }], /memory-add on pool: size: 0n must be a non-zero multiple/],
  ['memory-add bad NUMA node', [{ op: 'memory-add', target: 'pool', size: 4096n, numaNode: -1 }], /memory-add on pool: numaNode: -1 is not a NUMA node id/],
  ['memory-remove unaligned base', [{ op: 'memory-remove', target: 'pool', base: 1n, size: 4096n }], /memory-remove on pool: base: 1n must be/],
  ['memory-remove bad NUMA node', [{ op: 'memory-remove', target: 'pool', base: 0n, size: 4096n, numaNode: 2000 }], /memory-remove on pool: numaNode: 2000 is not a NUMA node id/],
  ['memory-remove zero size', [{ op: 'memory-remove', target: 'pool', base: 0n, size: 0n }], /memory-remove on pool: size: 0n must be/],
  ['cpu-add of the boot CPU', [{ op: 'cpu-add', target: 'pool', id: 0 }], /ops\[0\] cpu-add on pool: id: CPU 0 is the boot CPU/],
  ['cpu id not an integer', [{ op: 'cpu-remove', target: 'pool', id: 1.5 }], /cpu-remove on pool: id: 1.5 is not a physical CPU id/],
  ['cpu bad NUMA node', [{ op: 'cpu-add', target: 'pool', id: 1, numaNode: 1024 }], /numaNode: 1024 is not a NUMA node id/],
  ['cpu flags over u32', [{ op: 'cpu-add', target: 'pool', id: 1, flags: 2 ** 32 }], /flags: 4294967296 is not a u32/],
  ['device bad PCI id', [{ op: 'device-add', target: 'pool', pciId: '0:0:0.0' }], /device-add on pool: pciId: "0:0:0.0" is not a PCI address/],
  ['alias on an instance', [{ op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:01.0', alias: 'eth0' }], /alias: only a device-add on the pool records an alias/],
  ['alias on device-remove', [{ op: 'device-remove', target: 'pool', pciId: '0000:00:01.0', alias: 'eth0' }], /alias: only a device-add on the pool/],
  ['bad alias', [{ op: 'device-add', target: 'pool', pciId: '0000:00:01.0', alias: 'Eth 0' }], /alias: "Eth 0" is not a valid alias name/],
  ['driver on the pool', [{ op: 'device-add', target: 'pool', pciId: '0000:00:01.0', driver: 'vfio-pci' }], /driver: only a device-add on an instance binds a driver/],
  ['driver on device-remove', [{ op: 'device-remove', target: { instance: 'web' }, pciId: '0000:00:01.0', driver: 'vfio-pci' }], /driver: only a device-add on an instance/],
  ['driver with a newline', [{ op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:01.0', driver: 'vfio\npci' }], /driver: "vfio\\npci" must be 1 to 63 printable ASCII/],
  ['driver too long', [{ op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:01.0', driver: 'd'.repeat(64) }], /driver: "d{64}" must be 1 to 63/],
  ['empty driver', [{ op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:01.0', driver: '' }], /driver: "" must be 1 to 63 printable/],
  ['device flags negative', [{ op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:01.0', flags: -1 }], /flags: -1 is not a u32/],
  ['two instance-create', [create(), { ...create(), name: 'db', id: 2 }], /ops\[1\] instance-create "db": an overlay carries one instance-create .* write one overlay per instance/],
  ['two instance-remove', [{ op: 'instance-remove', name: 'a' }, { op: 'instance-remove', name: 'b' }], /ops\[1\] instance-remove "b": an overlay carries one instance-remove/],
  ['remove listed before create', [{ op: 'instance-remove', name: 'old' }, create()], /ops\[1\] instance-create "web": the kernel applies instance-create before instance-remove/],
  ['same CPU twice on one target', [{ op: 'cpu-add', target: 'pool', id: 3 }, { op: 'cpu-add', target: 'pool', id: 3 }], /ops\[1\] cpu-add on pool: the same cpu 3 appears twice in cpu-add/],
  ['same device twice', [{ op: 'device-remove', target: 'pool', pciId: '0000:00:01.0' }, { op: 'device-remove', target: 'pool', pciId: '0000:00:01.0' }], /the same device 0000:00:01.0 appears twice/],
  ['same range twice', [{ op: 'memory-remove', target: 'pool', base: 0n, size: 4096n }, { op: 'memory-remove', target: 'pool', base: 0n, size: 4096n }], /the same range 0\+4096 appears twice/],
  ['same instance memory-add twice', [{ op: 'memory-add', target: { instance: 'a' }, base: 0n, size: 4096n }, { op: 'memory-add', target: { instance: 'a' }, base: 0n, size: 4096n }], /the same range 0\+4096 appears twice in memory-add/],
  ['op on an instance before its creation', [{ op: 'cpu-add', target: { instance: 'web' }, id: 6 }, create()], /changes to instance "web" are listed before its instance-create/],
  ['op on an instance after its removal', [{ op: 'instance-remove', name: 'web' }, { op: 'cpu-remove', target: { instance: 'web' }, id: 6 }], /changes to instance "web" are listed after its instance-remove/],
  ['create, change and remove in one overlay', [create(), { op: 'cpu-add', target: { instance: 'web' }, id: 6 }, { op: 'instance-remove', name: 'web' }], /changes to instance "web" are listed after its instance-remove/],
];

t.test('every validation rule rejects with a precise ERR_MK_INVALID_SPEC', async (t) => {
  for (const [name, ops, message] of cases) {
    t.throws(() => buildOverlay(ops as OverlayOp[]), { code: 'ERR_MK_INVALID_SPEC', message }, name);
  }
  t.throws(() => buildOverlay([create()], { resources: 'r'.repeat(256) }), { code: 'ERR_MK_INVALID_SPEC', message: /overlay options: resources: "r{256}" must be 1 to 255/ });
  t.throws(() => overlayApplyOrder([]), { code: 'ERR_MK_INVALID_SPEC' }, 'overlayApplyOrder validates too');
});

t.test('what the kernel accepts is accepted', async (t) => {
  const ok: [string, OverlayOp[]][] = [
    ['cpu-remove of CPU 0 (hand back a bad state)', [{ op: 'cpu-remove', target: 'pool', id: 0 }]],
    ['one CPU added to two targets', [{ op: 'cpu-add', target: 'pool', id: 3 }, { op: 'cpu-add', target: { instance: 'a' }, id: 3 }]],
    ['cpu-add and cpu-remove of one CPU', [{ op: 'cpu-add', target: 'pool', id: 3 }, { op: 'cpu-remove', target: 'pool', id: 3 }]],
    ['two pool grows of one size', [{ op: 'memory-add', target: 'pool', size: 4096n }, { op: 'memory-add', target: 'pool', size: 4096n }]],
    ['create then remove another', [create(), { op: 'instance-remove', name: 'old' }]],
    ['changes to an instance, then its removal', [{ op: 'cpu-remove', target: { instance: 'web' }, id: 6 }, { op: 'instance-remove', name: 'web' }]],
    ['uppercase PCI ids', [{ op: 'device-add', target: 'pool', pciId: '000A:0B:1F.7' }]],
    ['16 virtio devices', [{ ...create(), virtio: Array.from({ length: 16 }, (_, i) => ({ name: `net${i}`, deviceId: 1, queues: 8, queueSize: 32768 })) }]],
    ['id 2047', [{ ...create(), id: 2047 }]],
  ];
  for (const [name, ops] of ok) t.doesNotThrow(() => encodeOverlay(ops, { resources: 'ok' }), name);
});

t.test('an overlay over 4096 bytes is refused, one just under is accepted', async (t) => {
  const cpus = (n: number): OverlayOp[] => Array.from({ length: n }, (_, i) => ({ op: 'cpu-add', target: 'pool', id: i + 1 }));
  let n = 1;
  while (encodeFdt(buildOverlay(cpus(n + 1))).length <= 4096) n++;
  t.ok(encodeOverlay(cpus(n)).length <= 4096, `${n} cpu-add items fit`);
  t.throws(() => encodeOverlay(cpus(n + 1)), {
    code: 'ERR_MK_INVALID_SPEC',
    message: /the encoded DTBO is \d+ bytes but overlays\/new takes at most 4096 bytes in one write \(kernfs passes one page per write\(2\); more arrives cut\); split the \d+ operations into several overlays/,
    details: { limit: MAX_OVERLAY_WRITE_BYTES },
  });
});

/** The ops parseOverlay returns for `op` (virtio queues made explicit). */
function normalized(op: OverlayOp): OverlayOp {
  if (op.op !== 'instance-create') return { ...op };
  const out: InstanceCreateOp = { ...op };
  if (op.virtio !== undefined) out.virtio = op.virtio.map((v) => ({ ...v, queues: v.queues ?? DEFAULT_VIRTIO_QUEUES }));
  if (out.virtio?.length === 0) delete out.virtio;
  if (out.devices?.length === 0) delete out.devices;
  return out;
}

t.test('random valid overlays survive build -> encode -> decode -> parse', async (t) => {
  const size = fc.bigInt({ min: 1n, max: 1n << 30n }).map((p) => p * 4096n);
  const base = fc.bigInt({ min: 0n, max: 1n << 30n }).map((p) => p * 4096n);
  const target = fc.oneof(fc.constant('pool' as const), fc.constantFrom('web', 'db', 'cache').map((instance) => ({ instance })));
  const numa = fc.integer({ min: 0, max: 1023 });
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const pciId = fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0, max: 7 }))
    .map(([d, b, s, f]) => `${d.toString(16).padStart(4, '0')}:${b.toString(16).padStart(2, '0')}:${s.toString(16).padStart(2, '0')}.${f}`);
  const resourceOp: fc.Arbitrary<OverlayOp> = fc.oneof(
    fc.record({ op: fc.constant('memory-add' as const), target: fc.constant('pool' as const), size, numaNode: numa }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'size'] }),
    fc.record({ op: fc.constant('memory-add' as const), target: target.filter((x) => x !== 'pool'), base, size, numaNode: numa }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'base', 'size'] }) as fc.Arbitrary<OverlayOp>,
    fc.record({ op: fc.constant('memory-remove' as const), target, base, size, numaNode: numa }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'base', 'size'] }),
    fc.record({ op: fc.constantFrom('cpu-add' as const, 'cpu-remove' as const), target, id: fc.integer({ min: 1, max: 2 ** 40 }), numaNode: numa, flags: u32 }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'id'] }),
    fc.record({ op: fc.constant('device-remove' as const), target, pciId, flags: u32 }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'pciId'] }),
    fc.record({ op: fc.constant('device-add' as const), target: fc.constant('pool' as const), pciId, alias: fc.constantFrom('eth0', 'nvme-1') }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'pciId'] }),
    fc.record({ op: fc.constant('device-add' as const), target: target.filter((x) => x !== 'pool'), pciId, driver: fc.constantFrom('vfio-pci', 'nvme'), flags: u32 }, { noNullPrototype: true, requiredKeys: ['op', 'target', 'pciId'] }) as fc.Arbitrary<OverlayOp>,
  );
  const createOp: fc.Arbitrary<InstanceCreateOp> = fc.record(
    {
      op: fc.constant('instance-create' as const),
      name: fc.constantFrom('web', 'new-1', 'a.b_c+d'),
      id: fc.integer({ min: 1, max: 2047 }),
      memoryBytes: size,
      cpus: fc.uniqueArray(fc.integer({ min: 1, max: 4096 }), { minLength: 1, maxLength: 8 }),
      numaNodes: fc.array(numa, { minLength: 1, maxLength: 2 }),
      devices: fc.constant([{ type: 'platform' as const, name: 'com1', acpiHid: 'PNP0501' }]),
      virtio: fc.uniqueArray(
        fc.record({ name: fc.constantFrom('net0', 'net1', 'blk0'), deviceId: fc.integer({ min: 1, max: 42 }), queues: fc.integer({ min: 1, max: 8 }), queueSize: fc.constantFrom(64, 256, 1024) }, { noNullPrototype: true, requiredKeys: ['name', 'deviceId'] }),
        { maxLength: 3, selector: (v) => v.name },
      ),
    },
    { noNullPrototype: true, requiredKeys: ['op', 'name', 'memoryBytes', 'cpus'] },
  );
  const key = (o: OverlayOp): unknown => {
    switch (o.op) {
      case 'instance-create':
      case 'instance-remove':
        return o.op;
      case 'cpu-add':
      case 'cpu-remove':
        return `${targetPath(o)} ${o.op} ${o.id}`;
      case 'device-add':
      case 'device-remove':
        return `${targetPath(o)} ${o.op} ${o.pciId}`;
      default:
        return o.op === 'memory-add' && o.target === 'pool' ? o : `${targetPath(o)} ${o.op} ${o.base}+${o.size}`;
    }
  };
  const overlay = fc
    .tuple(fc.option(createOp, { nil: undefined }), fc.uniqueArray(resourceOp, { maxLength: 10, selector: key }), fc.option(fc.constantFrom('old', 'gone'), { nil: undefined }))
    .map(([c, rest, removeName]) => [...(c === undefined ? [] : [c]), ...rest, ...(removeName === undefined ? [] : [{ op: 'instance-remove' as const, name: removeName }])])
    .filter((ops) => ops.length > 0);
  fc.assert(
    fc.property(overlay, fc.option(fc.string({ minLength: 1, maxLength: 40, unit: fc.constantFrom('a', 'b', ' ', '+', '1') }), { nil: undefined }), (ops, resources) => {
      let blob: Buffer;
      try {
        blob = encodeOverlay(ops, resources === undefined ? {} : { resources });
      } catch (e) {
        return (e as Error).message.includes('at most 4096 bytes');
      }
      if (!encodeFdt(decodeFdt(blob)).equals(blob)) return false;
      const parsed = parseOverlay(blob);
      return t.same(parsed.ops, overlayApplyOrder(ops).map(normalized)) && parsed.resources === resources && parsed.ignored.length === 0;
    }),
    { seed: 424242, numRuns: 300 },
  );
});
