import t from 'tap';
import { encodeFdt, node, prop } from '../../lib/fdt';
import type { FdtNode } from '../../lib/fdt/types';
import { parseInstance, parsePool } from '../../lib/model';

/** phys.hi of a PCI unit address, as dts.c writes it into reg */
const physHi = (bus: number, slot: number, fn: number): number => (bus << 16) | (((slot << 3) | fn) << 8);
const pciReg = (hi: number) => prop.u32('reg', hi, 0, 0, 0, 0);

/** A pool tree shaped like dts.c mk_dt_emit_tree for the host with a pool. */
function poolTree(extra: { resources?: FdtNode[]; root?: FdtNode[] } = {}): FdtNode {
  return node(
    '',
    [prop.string('compatible', 'multikernel-v1'), prop.u32('#address-cells', 2), prop.u32('#size-cells', 2), prop.u32('id', 0)],
    [
      node(
        'resources',
        [prop.u64('cpus', 4, 5, 6, 7), prop.u64('cpus-available', 6, 7)],
        [
          node('memory@100000000', [prop.string('device_type', 'memory'), prop.u64('reg', 0x100000000n, 0x80000000n), prop.u32('numa-node-id', 0)]),
          node('memory@200000000', [prop.string('device_type', 'memory'), prop.u64('reg', 0x200000000n, 0x40000000n), prop.u32('numa-node-id', 1)]),
          node('devices', [], [
            node('serial0', [prop.string('device-type', 'platform'), prop.string('device-name', 'serial8250'), prop.string('acpi-hid', 'PNP0501')]),
            node('i8042', [prop.string('device-type', 'platform')]),
            node('odd', [prop.string('device-type', 'usb')]),
            node('untyped'),
          ]),
          ...(extra.resources ?? []),
        ],
      ),
      node('aliases', [prop.string('eth0', '/pci@0/pci@4,0'), prop.string('nvme0', '/pci@4f/pci@2,7/pci@0,0')]),
      node('pci@0', [prop.string('compatible', 'multikernel,pci-host-bridge'), prop.string('device_type', 'pci'), prop.u32('bus-range', 0, 0xff)], [
        node('pci@4,0', [pciReg(physHi(0, 4, 0)), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]),
        node('pci@5,1', [pciReg(physHi(0, 5, 1)), prop.u32('vendor-id', 0x1af4), prop.u32('device-id', 0x1041)]),
        node('no-reg', [prop.u32('vendor-id', 1)]),
      ]),
      node('pci@4f', [prop.strings('compatible', ['multikernel,pci-host-bridge']), prop.u32('linux,pci-domain', 1)], [
        node('pci@2,7', [pciReg(physHi(0x4f, 2, 7)), prop.string('device_type', 'pci')], [
          node('pci@0,0', [pciReg(physHi(0x50, 0, 0)), prop.u32('vendor-id', 0x144d), prop.u32('device-id', 0xa808)]),
        ]),
      ]),
      node('pci@9', [prop.string('compatible', 'pci-host-ecam-generic')], [node('pci@1,0', [pciReg(physHi(9, 1, 0)), prop.u32('vendor-id', 1), prop.u32('device-id', 2)])]),
      node('cpus', [], [node('cpu@0', [prop.u32('reg', 0)])]),
      ...(extra.root ?? []),
    ],
  );
}

t.test('parsePool reads the newest pool rendering', async (t) => {
  const pool = parsePool(encodeFdt(poolTree()));
  t.same(pool, {
    format: 'memory-nodes',
    hasPool: true,
    id: 0,
    cpus: [4, 5, 6, 7],
    cpusAvailable: [6, 7],
    memory: [
      { name: 'memory@100000000', base: 0x100000000n, size: 0x80000000n, numaNode: 0 },
      { name: 'memory@200000000', base: 0x200000000n, size: 0x40000000n, numaNode: 1 },
    ],
    devices: [
      { type: 'platform', name: 'serial0', deviceName: 'serial8250', acpiHid: 'PNP0501', path: '/resources/devices/serial0' },
      { type: 'platform', name: 'i8042', path: '/resources/devices/i8042' },
      { type: 'pci', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e, path: '/pci@0/pci@4,0', alias: 'eth0' },
      { type: 'pci', pciId: '0000:00:05.1', vendorId: 0x1af4, deviceId: 0x1041, path: '/pci@0/pci@5,1' },
      { type: 'pci', pciId: '0001:50:00.0', vendorId: 0x144d, deviceId: 0xa808, path: '/pci@4f/pci@2,7/pci@0,0', alias: 'nvme0' },
    ],
    aliases: { eth0: '/pci@0/pci@4,0', nvme0: '/pci@4f/pci@2,7/pci@0,0' },
  });
});

t.test('parsePool tolerates the tree before a baseline was written', async (t) => {
  const host = node('', [prop.string('compatible', 'multikernel-v1'), prop.u32('id', 0)], [node('resources', [prop.u64('cpus', 0, 1, 2, 3)])]);
  const pool = parsePool(encodeFdt(host));
  t.equal(pool.hasPool, false);
  t.equal(pool.format, 'memory-nodes');
  t.same(pool.cpus, [0, 1, 2, 3]);
  t.same(pool.cpusAvailable, []);
  t.same(pool.memory, []);
  t.same(pool.devices, []);
  t.same(pool.aliases, {});
  const noId = parsePool(encodeFdt(node('', [], [node('resources')])));
  t.equal(noId.id, 0);
  t.same(noId.cpus, []);
  const allLent = parsePool(encodeFdt(node('', [], [node('resources', [prop.u64('cpus', 3)], [node('memory@0', [prop.u64('reg', 0, 4096)])])])));
  t.equal(allLent.hasPool, true, 'pool memory alone shows a pool (cpus-available is left out when empty)');
  t.equal(allLent.memory[0]!.numaNode, undefined);
  const onlyAvail = parsePool(encodeFdt(node('', [], [node('resources', [prop.u64('cpus-available', 3)])])));
  t.equal(onlyAvail.hasPool, true);
});

t.test('parsePool: a tree with no /resources at all is a kernel with no pool yet', async (t) => {
  const pool = parsePool(encodeFdt(node('', [prop.u32('id', 0)], [node('chosen')])));
  t.same(pool, { format: 'memory-nodes', hasPool: false, id: 0, cpus: [], cpusAvailable: [], memory: [], devices: [], aliases: {} });
});

t.test('parsePool reports the older memory-base / memory-bytes format', async (t) => {
  const old = node('', [], [node('resources', [prop.u64('cpus', 2, 3), prop.u64('memory-base', 0x100000000n), prop.u64('memory-bytes', 0x40000000n)], [
    node('devices', [], [node('nic0', [prop.string('device-type', 'pci'), prop.string('pci-id', '0000:00:04.0'), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)])]),
  ]), node('aliases', [prop.string('eth0', '/resources/devices/nic0')])]);
  const pool = parsePool(encodeFdt(old));
  t.equal(pool.format, 'base-bytes');
  t.equal(pool.hasPool, true);
  t.same(pool.memory, [{ name: 'memory@100000000', base: 0x100000000n, size: 0x40000000n }]);
  t.same(pool.devices, [{ type: 'pci', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e, path: '/resources/devices/nic0', alias: 'eth0' }]);
  const half = node('', [], [node('resources', [prop.u64('memory-bytes', 4096)])]);
  t.throws(() => parsePool(encodeFdt(half)), { code: 'ERR_MK_INVALID_FDT', message: /only one of memory-base \/ memory-bytes/ });
  const otherHalf = node('', [], [node('resources', [prop.u64('memory-base', 4096)])]);
  t.throws(() => parsePool(encodeFdt(otherHalf)), { code: 'ERR_MK_INVALID_FDT' });
});

t.test('parsePool is strict on property lengths and shape', async (t) => {
  const withRes = (resources: FdtNode) => encodeFdt(node('', [], [resources]));
  t.throws(() => parsePool(withRes(node('resources', [prop.u32('cpus', 1, 2, 3)]))), { code: 'ERR_MK_INVALID_FDT', message: /cpus/ });
  t.throws(() => parsePool(withRes(node('resources', [], [node('memory@0', [prop.u64('reg', 4096)])]))), {
    code: 'ERR_MK_INVALID_FDT',
    message: /resources\/memory@0: reg must be <u64 base, u64 size> \(16 bytes\), got 8 bytes/,
  });
  t.throws(() => parsePool(withRes(node('resources', [], [node('memory@0', [])]))), { code: 'ERR_MK_INVALID_FDT', message: /missing property "reg"/ });
  t.throws(() => parsePool(withRes(node('resources', [], [node('memory@0', [prop.u64('reg', 0, 4096), prop.u64('numa-node-id', 1)])]))), { code: 'ERR_MK_INVALID_FDT' });
  t.throws(() => parsePool(withRes(node('resources', [prop.u64('cpus', 2n ** 60n)]))), { code: 'ERR_MK_INVALID_FDT', message: /larger than this library supports/ });
  const pciNoDeviceId = poolTree({ root: [node('pci@7', [prop.string('compatible', 'multikernel,pci-host-bridge')], [node('pci@0,0', [pciReg(physHi(7, 0, 0)), prop.u32('vendor-id', 1)])])] });
  t.throws(() => parsePool(encodeFdt(pciNoDeviceId)), { code: 'ERR_MK_INVALID_FDT', message: /node "pci@0,0": missing property "device-id"/ });
  t.throws(() => parsePool(new Uint8Array(8)), { code: 'ERR_MK_INVALID_FDT' });
});

function instanceTree(): FdtNode {
  return node('', [prop.string('compatible', 'multikernel-v1'), prop.string('model', 'web'), prop.u32('#address-cells', 2), prop.u32('#size-cells', 2), prop.u32('id', 3)], [
    node('resources', [prop.u64('memory-base', 0x140000000n), prop.u64('memory-bytes', 0x20000000n), prop.u64('cpus', 6, 7)], [
      node('devices', [], [node('com1', [prop.string('device-type', 'platform'), prop.string('acpi-hid', 'PNP0501')])]),
    ]),
    node('aliases', [prop.string('eth1', '/pci@0/pci@5,0')]),
    node('pci@0', [prop.string('compatible', 'multikernel,pci-host-bridge'), prop.u32('linux,pci-domain', 0)], [
      node('pci@5,0', [pciReg(physHi(0, 5, 0)), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x10d3)]),
    ]),
    node('chosen', [], [node('multikernel,host-tree', [prop.u64('cpus', 1)])]),
  ]);
}

t.test('parseInstance reads an instance device_tree', async (t) => {
  t.same(parseInstance(encodeFdt(instanceTree())), {
    name: 'web',
    id: 3,
    compatible: 'multikernel-v1',
    memoryBase: 0x140000000n,
    memoryBytes: 0x20000000n,
    cpus: [6, 7],
    devices: [
      { type: 'platform', name: 'com1', acpiHid: 'PNP0501', path: '/resources/devices/com1' },
      { type: 'pci', pciId: '0000:00:05.0', vendorId: 0x8086, deviceId: 0x10d3, path: '/pci@0/pci@5,0', alias: 'eth1' },
    ],
    aliases: { eth1: '/pci@0/pci@5,0' },
    hostTree: true,
  });
  const bare = node('', [prop.string('model', 'db'), prop.u32('id', 9)], [node('resources'), node('chosen'), node('extra', [prop.u32('x', 1)])]);
  t.same(parseInstance(encodeFdt(bare)), { name: 'db', id: 9, memoryBytes: 0n, cpus: [], devices: [], aliases: {}, hostTree: false });
  const noChosen = node('', [prop.string('model', 'db'), prop.u32('id', 9)], [node('resources')]);
  t.equal(parseInstance(encodeFdt(noChosen)).hostTree, false);
});

t.test('parseInstance is strict where the kernel is exact', async (t) => {
  const tree = instanceTree();
  tree.properties = tree.properties.filter((p) => p.name !== 'model');
  t.throws(() => parseInstance(encodeFdt(tree)), { code: 'ERR_MK_INVALID_FDT', message: /no model property/ });
  const noId = instanceTree();
  noId.properties = noId.properties.filter((p) => p.name !== 'id');
  t.throws(() => parseInstance(encodeFdt(noId)), { code: 'ERR_MK_INVALID_FDT', message: /missing property "id"/ });
  const shortBytes = node('', [prop.string('model', 'db'), prop.u32('id', 9)], [node('resources', [prop.u32('memory-bytes', 4096)])]);
  t.throws(() => parseInstance(encodeFdt(shortBytes)), { code: 'ERR_MK_INVALID_FDT', message: /memory-bytes/ });
  const shortBase = node('', [prop.string('model', 'db'), prop.u32('id', 9)], [node('resources', [prop.u32('memory-base', 4096)])]);
  t.throws(() => parseInstance(encodeFdt(shortBase)), { code: 'ERR_MK_INVALID_FDT', message: /memory-base/ });
  const idBytes = node('', [prop.string('model', 'db'), prop.u64('id', 9)], [node('resources')]);
  t.throws(() => parseInstance(encodeFdt(idBytes)), { code: 'ERR_MK_INVALID_FDT', message: /"id"/ });
  t.throws(() => parseInstance(encodeFdt(node('', [prop.string('model', 'db')]))), { code: 'ERR_MK_INVALID_FDT', message: /instance device_tree: the tree has no \/resources/ });
});
