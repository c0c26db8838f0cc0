import t from 'tap';
import { decodeFdt } from '../../lib/fdt/codec';
import { findNode, node, prop } from '../../lib/fdt/tree';
import { SimulatedSystem } from '../../lib/system/simulated';
import { fakeElfVmlinux } from '../contract/fake-kernel';
import { baseline, dtbo, fragment, instanceCreate, memoryNode } from '../contract/suite';
import { lastTx, M, MiB, overlay, setup, status } from './helpers';

const GiB = 1024 * MiB;
const cpu = (id: number, u32 = false) => node(`cpu@${id}`, [u32 ? prop.u32('reg', id) : prop.u64('reg', id)]);
const pci = (id: string, extra: ReturnType<typeof prop.string>[] = []) => node(`pci@${id.replace(/[:.]/g, '')}`, [prop.string('pci-id', id), ...extra]);
const pool = async (sim: SimulatedSystem) => findNode(decodeFdt(await sim.readFile(`${M}/device_tree`)).root, '/resources')!;

/** a header with the given fields patched into an otherwise valid blob */
function patched(fields: Record<number, number>, blob = baseline([2], [memoryNode(0, GiB)])): Buffer {
  const b = Buffer.from(blob);
  for (const [off, v] of Object.entries(fields)) b.writeUInt32BE(v, Number(off));
  return b;
}

t.test("fdt_check_header's rules", async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const good = baseline([2], [memoryNode(0, GiB)]);
  const size = good.length;
  const cases: [string, Buffer][] = [
    ['short', Buffer.alloc(39)],
    ['version 1', patched({ 20: 1 })],
    ['last_comp 18', patched({ 24: 18 })],
    ['version < last_comp', patched({ 20: 16, 24: 17 })],
    ['totalsize < header', patched({ 4: 20 })],
    ['rsvmap outside', patched({ 16: size + 8 })],
    ['struct block outside', patched({ 36: size })],
    ['strings block outside', patched({ 32: size })],
    ['v16 struct offset outside', patched({ 20: 16, 24: 16, 8: size + 4 })],
    ['v2 header of 32 bytes, strings outside', patched({ 20: 2, 24: 2, 12: 20 })],
  ];
  for (const [label, blob] of cases) {
    await t.rejects(sim.writeFile(`${M}/overlays/new`, blob), { code: 'EINVAL' }, label);
  }
  // a v16 header passes libfdt's check (lib/fdt's decoder does not take it): the tx is created and fails
  const v16 = patched({ 20: 16, 24: 16 }, dtbo([fragment('0', '/instances', [instanceCreate('x', { memoryBytes: 64 * MiB })])]));
  t.equal(await sim.writeFile(`${M}/overlays/new`, v16), v16.length);
  const tx = await lastTx(sim);
  t.equal(tx.status, 'failed');
  t.equal((await sim.readFile(`${M}/overlays/tx_${tx.id}/instance`)).toString(), 'unknown\n');
  await t.rejects(sim.writeFile(`${M}/device_tree`, patched({ 20: 16, 24: 16 })), { code: 'EINVAL' }, 'a v16 baseline passes the header check but is not decoded');
});

t.test('baseline rules against the topology', async (t) => {
  const topology = {
    cpus: [{ apicId: 0, node: 0 }, { apicId: 3, node: 0 }, { apicId: 5, node: 1, online: false }, { apicId: 9, node: 1 }],
    memoryBytes: 8 * GiB,
    numaNodes: 2,
    pciDevices: ['0000:00:04.0'],
  };
  const sim = new SimulatedSystem({ topology });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const dt = `${M}/device_tree`;
  const mem = [memoryNode(0, GiB)];
  const refuse = (blob: Buffer, code: string, label: string) => t.rejects(sim.writeFile(dt, blob), { code }, label);
  // refusals before the pool is grown leave no pool (the boot CPU, an offline CPU, a CPU listed
  // twice and an absent PCI function are baseline.c rules tested in resources-baseline.test.ts)
  await refuse(baseline([], mem), 'EINVAL', 'no cpus');
  await refuse(baseline([3], []), 'EINVAL', 'no memory');
  await refuse(baseline([3], [node('memory@0', [prop.u32('size', 4096)])]), 'EINVAL', 'size not a u64');
  await refuse(baseline([3], [node('memory@0', [prop.u64('size', GiB), prop.u64('numa-node-id', 0)])]), 'EINVAL', 'numa-node-id not a u32');
  await refuse(baseline([3], [node('memory@0', [prop.u64('size', GiB), prop.u32('numa-node-id', 64)])]), 'EINVAL', 'numa-node-id >= MAX_NUMNODES');
  await refuse(baseline([3], [node('memory@0', [prop.u64('size', GiB), prop.u32('numa-node-id', 5)])]), 'EINVAL', 'an offline node (mk_pool_mem_grow)');
  await refuse(baseline([3], [node('memory@0', [prop.u64('size', 3 * GiB + 2 * MiB), prop.u32('numa-node-id', 0)])]), 'ENOMEM', 'node 0 has 3 GiB besides the host');
  const devs = (d: ReturnType<typeof node>) => baseline([3], mem, { resources: [node('devices', [], [d])] });
  await refuse(devs(node('nic0', [prop.string('device-type', 'pci')])), 'EINVAL', 'PCI device without pci-id');
  await refuse(devs(node('nic0', [prop.string('device-type', 'pci'), prop.string('pci-id', 'zz')])), 'EINVAL', 'malformed pci-id');
  await refuse(patched({ 8: 44 }, baseline([3], mem)), 'EINVAL', 'header fine, structure broken');
  t.same(await sim.readdir(`${M}/instances`), []);
  t.match((await sim.dmesg()).join('\n'), /Baseline validation and initialization failed: -22/);
  const pciNode = (name: string) => node(name, [prop.string('device-type', 'pci'), prop.string('pci-id', '0000:00:04.0'), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]);
  const blob = baseline([3, 9], [memoryNode(0, GiB), node('memory@1', [prop.u64('size', GiB), prop.u32('numa-node-id', 1)])], {
    resources: [node('devices', [], [pciNode('nic0'), node('plat0', [prop.string('device-type', 'platform')])])],
  });
  await sim.writeFile(dt, blob);
  const root = decodeFdt(await sim.readFile(`${M}/device_tree`)).root;
  const res = findNode(root, '/resources')!;
  t.same(res.children.map((c) => c.name), ['memory@40000000', 'memory@100000000', 'devices'], 'one chunk per request, node 1 starts at 4 GiB');
  t.same(findNode(res, '/devices')!.children.map((c) => c.name), ['plat0'], 'resources/devices holds the platform devices');
  t.same(findNode(root, '/pci@0')!.children.map((c) => c.name), ['pci@4,0'], 'a PCI function sits under its host bridge');
  t.equal((await overlay(sim, dtbo([fragment('0', '/resources', [node('cpu-add', [], [cpu(5)])])]))).status, 'failed', 'pool cpu-add of an offline CPU');
  const withNic = dtbo([fragment('0', '/instances', [node('instance-create', [prop.string('instance-name', 'n')], [node('resources', [prop.u64('memory-bytes', 64 * MiB)], [node('devices', [], [pciNode('nic')])])])])]);
  t.equal((await overlay(sim, withNic)).status, 'applied');
  const n = decodeFdt(await sim.readFile(`${M}/instances/n/device_tree`)).root;
  t.same(findNode(n, '/pci@0')!.children.map((c) => c.name), ['pci@4,0'], 'the free pool device was reserved');
  t.notOk(findNode(decodeFdt(await sim.readFile(`${M}/device_tree`)).root, '/pci@0'), 'and is no longer free in the pool');
  t.equal((await sim.readFile('/sys/devices/system/cpu/online')).toString(), '0\n', 'CPU 2 is offline, 1 and 3 departed');
  t.equal((await sim.readFile('/sys/devices/system/cpu/present')).toString(), '0,2\n');
  t.equal((await sim.readFile('/proc/iomem')).toString(), [
    '00000000-1ffffffff : System RAM',
    '  40000000-7fffffff : Multikernel Memory Pool',
    '    40000000-43ffffff : mk-instance-1-n-region-0',
    '  100000000-13fffffff : Multikernel Memory Pool',
    '',
  ].join('\n'));
});

t.test('/proc/cpuinfo and the CPU masks follow the pool', async (t) => {
  const bare = new SimulatedSystem({ topology: { cpus: [{ apicId: 0, node: 0 }, { apicId: 1, node: 0 }], memoryBytes: 4 * GiB, numaNodes: 1 } });
  t.teardown(() => bare.dispose());
  await bare.mountMultikernel();
  const nic = node('devices', [], [node('nic0', [prop.string('device-type', 'pci'), prop.string('pci-id', '0000:00:04.0')])]);
  await t.rejects(bare.writeFile(`${M}/device_tree`, baseline([1], [memoryNode(0, GiB)], { resources: [nic] })), { code: 'EINVAL' }, 'a PCI device without vendor-id');
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  const info = (await sim.readFile('/proc/cpuinfo')).toString();
  t.equal(info.split('\n\n').filter(Boolean).length, 8);
  t.match(info, /^processor\t: 7\n[^]*^apicid\t\t: 14$/m);
  t.match(info, /^physical id\t: 1$/m);
  t.equal((await sim.readFile('/sys/devices/system/cpu/online')).toString(), '0-7\n');
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, baseline([4, 6, 12], [memoryNode(0, GiB)]));
  t.equal((await sim.readFile('/sys/devices/system/cpu/online')).toString(), '0-1,4-5,7\n');
  t.notMatch((await sim.readFile('/proc/cpuinfo')).toString(), /apicid\t\t: (4|6|12)\n/);
  t.equal((await sim.stat('/sys/devices/system/cpu/online')).size, 4096);
});

t.test('/proc/cpuinfo on arm64: no physical id, one block per online CPU', async (t) => {
  const sim = new SimulatedSystem({ arch: 'arm64', topology: { cpus: [{ apicId: 0, node: 0 }, { apicId: 1, node: 0 }, { apicId: 2, node: 0, online: false }], memoryBytes: 4 * GiB, numaNodes: 1 } });
  t.teardown(() => sim.dispose());
  const block = (i: number) => `processor\t: ${i}\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n`;
  t.equal((await sim.readFile('/proc/cpuinfo')).toString(), block(0) + block(1));
});

t.test('overlay parsing and per-operation errors', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const fails = async (blob: Buffer, label: string) => t.equal((await overlay(sim, blob)).status, 'failed', label);
  const applies = async (blob: Buffer, label: string) => t.equal((await overlay(sim, blob)).status, 'applied', label);
  const inst = (ops: ReturnType<typeof node>[], target = '/instances/web') => dtbo([fragment('0', target, ops)]);
  const res = (ops: ReturnType<typeof node>[]) => dtbo([fragment('0', '/resources', ops)]);
  const create = (props: ReturnType<typeof prop.u64>[], children: ReturnType<typeof node>[] = [], name = 'db') =>
    inst([node('instance-create', [prop.string('instance-name', name)], [node('resources', props, children)])], '/instances');

  await fails(dtbo([node('fragment@zz', [prop.string('target-path', '/instances')], [node('__overlay__')])]), 'fragment unit address not hex');
  await fails(dtbo([node('fragment@0', [], [node('__overlay__')])]), 'no target-path');
  await fails(dtbo([]), 'no fragment');
  const empty = await lastTx(sim);
  await t.rejects(sim.rmdir(`${M}/overlays/tx_${empty.id}`), { code: 'EINVAL' }, 'a tx without fragments cannot be rolled back either');
  t.match((await sim.dmesg()).join('\n'), /Rollback tx\d+: no usable fragment@N node: -22/);
  await fails(inst([], '/instances/'), 'target-path names no instance');
  await fails(inst([node('cpu-add', [], [cpu(4)])], '/instances'), 'a resource operation on /instances');
  await fails(inst([node('instance-create', [prop.string('instance-name', 'x')], [node('resources')])], '/resources'), 'instance-create on /resources');
  await fails(create([prop.u64('memory-bytes', 64 * MiB)], [], 'a/b'), "a '/' in the name");
  await fails(create([prop.u64('memory-bytes', 64 * MiB), prop.string('device-names', 'x')]), 'device-names');
  await applies(create([], [], 'nomem'), 'no memory-bytes: an instance without memory (dts.c: optional)');
  await applies(inst([node('instance-remove', [prop.string('instance-name', 'nomem')])], '/instances'), 'remove it');
  await fails(create([prop.u64('memory-bytes', 100)]), 'memory-bytes not page aligned');
  await fails(create([prop.u64('memory-bytes', 64 * MiB), prop.u32('cpus', 4)]), 'cpus not u64');
  await fails(create([prop.u64('memory-bytes', 2 * GiB)]), 'more memory than the pool has free');
  const virtio = node('virtio', [], Array.from({ length: 17 }, (_, i) => node(`net${i}`, [prop.u32('device-id', 1), prop.u32('queues', 2)])));
  await fails(create([prop.u64('memory-bytes', 64 * MiB)], [virtio]), 'more than 16 virtio devices');
  t.match((await sim.dmesg()).join('\n'), /Failed to apply overlay transaction \d+: -7/, 'E2BIG in dmesg');
  await fails(res([node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, GiB)])])]), 'pool memory-add by reg');
  await fails(res([node('memory-remove', [], [node('memory@0', [prop.u64('reg', 0, GiB)])])]), 'pool memory-remove of no chunk');
  const chunk = (await pool(sim)).children.find((c) => c.name.startsWith('memory@'))!;
  await fails(res([node('memory-remove', [], [node('memory@0', [prop.bytes('reg', chunk.properties.find((p) => p.name === 'reg')!.value)])])]), 'a chunk holding an instance');
  await fails(res([node('cpu-add', [], [cpu(99)])]), 'pool cpu-add of an absent CPU');
  await fails(res([node('cpu-add', [], [cpu(4)])]), 'pool cpu-add of a pool CPU');
  await fails(res([node('cpu-add', [], [cpu(0)])]), 'pool cpu-add of the boot CPU');
  await fails(res([node('cpu-remove', [], [cpu(8)])]), 'pool cpu-remove of a host CPU');
  await fails(res([node('cpu-add', [], [node('cpu@0', [prop.u32('reg', 8), prop.u32('numa-node-id', 99)])])]), 'numa-node-id out of range');
  await fails(res([node('cpu-add', [], [node('cpu@0', [prop.string('reg', 'x1')])])]), 'cpu reg of 3 bytes');
  await fails(res([node('device-add', [], [pci('0000:00:09.0')])]), 'pool device-add of an absent device');
  await fails(res([node('device-add', [], [node('pci@0', [prop.string('pci-id', 'nope')])])]), 'malformed pci-id');
  await fails(res([node('device-add', [], [node('pci@0')])]), 'no pci-id');
  await fails(res([node('device-remove', [], [pci('0000:00:04.0')])]), 'pool device-remove of a device not in the pool');
  await fails(inst([node('device-add', [], [pci('0000:00:04.0')])]), 'instance device-add of a device not in the pool');
  await applies(res([node('device-add', [], [pci('0000:00:04.0', [prop.string('alias', 'eth1')])]), node('cpu-add', [], [cpu(8, true)])]), 'pool device-add and cpu-add (u32 reg)');
  await applies(res([node('device-add', [], [pci('0000:00:04.0')])]), 'pool device-add twice: the second add finds it listed (EEXIST, ignored)');
  const poolRoot = decodeFdt(await sim.readFile(`${M}/device_tree`)).root;
  t.same(findNode(poolRoot, '/pci@0')!.children.map((c) => c.name), ['pci@4,0']);
  t.same(findNode(poolRoot, '/aliases')!.properties.map((p) => p.name), ['eth1']);
  await applies(inst([node('device-add', [], [pci('0000:00:04.0')]), node('cpu-add', [], [cpu(8)])]), 'instance device-add and cpu-add');
  await fails(inst([node('device-add', [], [pci('0000:00:04.0')])]), 'instance device-add of a device another holds');
  await fails(res([node('device-remove', [], [pci('0000:00:04.0')])]), 'pool device-remove of a device an instance holds');
  const web = decodeFdt(await sim.readFile(`${M}/instances/web/device_tree`)).root;
  t.same(findNode(web, '/pci@0')!.children.map((c) => c.name), ['pci@4,0']);
  await fails(inst([node('cpu-add', [], [cpu(10)])]), 'instance cpu-add of a host CPU');
  await fails(inst([node('cpu-remove', [], [cpu(6)])]), 'instance cpu-remove of a CPU it does not hold');
  await fails(inst([node('device-remove', [], [pci('0000:00:05.0')])]), 'instance device-remove of a device it does not hold');
  await applies(inst([node('device-remove', [], [pci('0000:00:04.0')]), node('cpu-remove', [], [cpu(8)])]), 'instance device-remove and cpu-remove');
  await applies(res([node('device-remove', [], [pci('0000:00:04.0')]), node('cpu-remove', [], [cpu(8)])]), 'pool device-remove and cpu-remove');
  await applies(inst([node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 64 * MiB)])])]), 'instance memory-add on a stopped instance');
  const iomem = (await sim.readFile('/proc/iomem')).toString();
  const region = (n: number) => {
    const m = new RegExp(`([0-9a-f]+)-([0-9a-f]+) : mk-instance-1-web-region-${n}`).exec(iomem)!;
    const base = parseInt(m[1]!, 16);
    return node('memory@0', [prop.u64('reg', base, parseInt(m[2]!, 16) + 1 - base)]);
  };
  await fails(inst([node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 2 * GiB)])])]), 'instance memory-add beyond the pool');
  await fails(inst([node('memory-remove', [], [node('memory@0', [prop.u64('reg', 0, 64 * MiB)])])]), 'instance memory-remove of a range it does not hold');
  await applies(inst([node('memory-remove', [], [region(0), { ...region(1), name: 'memory@1' }])]), 'instance memory-remove of both regions');
  const bare = decodeFdt(await sim.readFile(`${M}/instances/web/device_tree`)).root;
  t.notOk(findNode(bare, '/resources')!.properties.some((p) => p.name === 'memory-bytes' || p.name === 'memory-base'), 'no memory left: dts.c writes neither property');
  const fd = await sim.openImageBytes('vmlinux', fakeElfVmlinux());
  await t.rejects(sim.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: '', flags: 0x10 | (1 << 5) | 4 }), { code: 'ENOMEM' }, 'an instance without memory cannot load');
  await applies(res([node('device-add', [], [pci('0000:00:05.0')])]), 'pool device-add without alias');
  t.same(findNode(decodeFdt(await sim.readFile(`${M}/device_tree`)).root, '/pci@0')!.children.map((c) => c.name), ['pci@5,0']);
  await applies(inst([node('device-add', [], [pci('0000:00:05.0')])]), 'web takes it');
  // CPU and device reservation failures inside instance-create only warn
  const full = (id: string) => node(`d${id.slice(8, 10)}`, [prop.string('device-type', 'pci'), prop.string('pci-id', id), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]);
  await applies(create([prop.u64('memory-bytes', 64 * MiB), prop.u64('cpus', 2, 10, 4)], [node('devices', [], [full('0000:00:05.0'), full('0000:00:04.0'), node('x')])]), 'create with unavailable CPUs and devices');
  const db = decodeFdt(await sim.readFile(`${M}/instances/db/device_tree`)).root;
  t.notOk(findNode(db, '/resources')!.properties.some((p) => p.name === 'cpus'), 'CPU grants are all or nothing (core.c mk_instance_transfer_cpus): none');
  t.equal((await sim.readFile(`${M}/instances/db/id`)).toString(), '2\n', 'auto-assigned id skips used ones');
  t.match((await sim.dmesg()).join('\n'), /CPU 2 not available in the pool\nCPU 10 not available in the pool\nInstance 2 \(db\): 2 CPUs are not available\nFailed to reserve CPU resources for instance 2 \(db\): -16\nContinuing without CPU assignment/);
  t.match((await sim.dmesg()).join('\n'), /PCI device 8086:100e@0000:00:05.0 not available in root pool\nPCI device 8086:100e@0000:00:04.0 not available in root pool\nInstance 2 \(db\): 2 PCI devices not available/);
  t.notOk(findNode(db, '/pci@0'), 'neither device was reserved');
  const long = dtbo([fragment('0', '/instances', [node('instance-remove', [prop.string('instance-name', 'db')])])], 'r'.repeat(300));
  const tx = await overlay(sim, long);
  t.equal((await sim.readFile(`${M}/overlays/tx_${tx.id}/resources`)).toString(), `${'r'.repeat(255)}\n`, 'mk,resources is cut to 255 characters');
});

t.test('pool memory: park area, shrink, rollback regrow, no-memory pool', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const res = (ops: ReturnType<typeof node>[]) => dtbo([fragment('0', '/resources', ops)]);
  await overlay(sim, res([node('memory-add', [], [memoryNode(0, 512 * MiB)])]));
  const chunks = (await pool(sim)).children.filter((c) => c.name.startsWith('memory@'));
  t.same(chunks.map((c) => c.name), ['memory@40000000', 'memory@80000000']);
  const remove = (c: ReturnType<typeof node>) => node('memory-remove', [], [node('memory@0', [prop.bytes('reg', c.properties.find((p) => p.name === 'reg')!.value)])]);
  t.equal((await overlay(sim, res([remove(chunks[0]!)]))).status, 'failed', 'the park chunk stays while pool CPUs remain');
  const shrink = await overlay(sim, res([remove(chunks[1]!)]));
  t.equal(shrink.status, 'applied');
  await sim.rmdir(`${M}/overlays/tx_${shrink.id}`);
  t.equal((await pool(sim)).children.filter((c) => c.name.startsWith('memory@')).length, 2, 'undoing a shrink regrows the pool by size');
  t.match((await sim.dmesg()).join('\n'), /regrowing the pool by 512 MB/);
  const cpus = node('cpu-remove', [], [cpu(2), cpu(4), cpu(6)]);
  const all = (await pool(sim)).children.filter((c) => c.name.startsWith('memory@'));
  t.equal((await overlay(sim, res([cpus, remove(all[0]!)]))).status, 'applied', 'CPUs home, then the park chunk');
  t.equal((await overlay(sim, res([node('memory-add', [], [memoryNode(0, 64 * MiB)])]))).status, 'applied', 'grow into the hole');
  const now = (await pool(sim)).children.filter((c) => c.name.startsWith('memory@'));
  t.same(now.map((c) => c.name), ['memory@80000000', 'memory@40000000'], 'first fit: the hole below the remaining chunk; chunks listed in grow order');
  const both = node('memory-remove', [], [remove(all[1]!).children[0]!, { ...remove(now[1]!).children[0]!, name: 'memory@1' }]);
  t.equal((await overlay(sim, res([both]))).status, 'applied', 'the other chunks');
  // hotplug.c mk_pool_cpu_add has no park-area check (spawn.c: such a CPU halts for good)
  t.equal((await overlay(sim, res([node('cpu-add', [], [cpu(2)])]))).status, 'applied', 'a pool without memory still takes a CPU');
  t.equal((await overlay(sim, res([node('memory-add', [], [memoryNode(0, 64 * MiB)]), node('cpu-add', [], [cpu(4)])]))).status, 'applied', 'memory first, then CPUs');
});

t.test('instance memory is carved first-fit out of pool chunks', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const create = (name: string, bytes: number) => dtbo([fragment('0', '/instances', [instanceCreate(name, { memoryBytes: bytes })])]);
  const a = await overlay(sim, create('a', 64 * MiB));
  await overlay(sim, create('b', 64 * MiB));
  await sim.rmdir(`${M}/overlays/tx_${a.id}`);
  await overlay(sim, create('c', 32 * MiB));
  t.match((await sim.readFile('/proc/iomem')).toString(), /^    40000000-41ffffff : mk-instance-1-c-region-0\n    44000000-47ffffff : mk-instance-2-b-region-0$/m);
});

t.test('changes to a running instance wait for its acknowledgement', async (t) => {
  const sim = await setup({ resourceAckTimeoutMs: 20 }, { start: true });
  t.teardown(() => sim.dispose());
  const inst = (ops: ReturnType<typeof node>[]) => dtbo([fragment('0', '/instances/web', ops)]);
  t.equal((await overlay(sim, inst([node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 100 * MiB)])])]))).status, 'failed', 'hot-add must be memory-block aligned');
  t.equal((await overlay(sim, inst([node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 128 * MiB)])])]))).status, 'applied');
  t.equal((await overlay(sim, inst([node('cpu-add', [], [cpu(4)])]))).status, 'applied');
  sim.faults.add({ op: 'instance.ack', id: 1, times: 1, action: { errno: 'EIO' } });
  t.equal((await overlay(sim, inst([node('cpu-add', [], [cpu(6)])]))).status, 'failed', 'an injected acknowledgement failure');
  await sim.hang(1);
  const t0 = Date.now();
  t.equal((await overlay(sim, inst([node('cpu-remove', [], [cpu(4)])]))).status, 'failed', 'a hung spawn never acknowledges');
  t.ok(Date.now() - t0 >= 15);
  t.match((await sim.dmesg()).join('\n'), /Failed to apply overlay transaction \d+: -110/);
  await sim.reboot(0x4d4b4c46, 1);
  t.equal(await status(sim), 'loaded');
  t.equal((await overlay(sim, inst([node('cpu-remove', [], [cpu(4)])]))).status, 'applied', 'a stopped instance needs no acknowledgement');
});

t.test('fault injection', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const create = (name: string) => dtbo([fragment('0', '/instances', [instanceCreate(name, { memoryBytes: 64 * MiB })]), fragment('1', '/instances', [instanceCreate(`${name}2`, { memoryBytes: 64 * MiB })])]);
  sim.faults.add({ op: 'overlay.apply', times: 1, action: { halfway: true } });
  const half = await overlay(sim, create('h'));
  t.equal(half.status, 'failed', 'halfway: the tx stops after its first operation');
  t.same(await sim.readdir(`${M}/instances`), ['web', 'h']);
  t.match((await sim.dmesg()).join('\n'), new RegExp(`Failed to apply overlay transaction ${half.id}: -5`));
  sim.faults.add({ op: 'overlay.apply', times: 1, action: { errno: 'ENOSPC' } });
  t.equal((await overlay(sim, create('e'))).status, 'failed');
  sim.faults.add({ op: 'overlay.rollback', id: half.id, times: 1, action: { errno: 'EIO' } });
  await t.rejects(sim.rmdir(`${M}/overlays/tx_${half.id}`), { code: 'EIO', syscall: 'rmdir' });
  t.equal((await sim.readFile(`${M}/overlays/tx_${half.id}/status`)).toString(), 'failed\n');
  await sim.rmdir(`${M}/overlays/tx_${half.id}`);
  t.same(await sim.readdir(`${M}/instances`), ['web']);
  sim.faults.add({ op: 'read', path: `${M}/device_tree`, times: 1, action: { errno: 'EIO' } });
  await t.rejects(sim.readFile(`${M}/device_tree/`), { code: 'EIO', syscall: 'open', path: `${M}/device_tree` }, 'paths are normalised before matching');
  sim.faults.add({ op: 'kexec_file_load', id: 1, times: 1, action: { errno: 'EPERM' } });
  await t.rejects(sim.kexecFileLoad({ kernelFd: 0, initrdFd: -1, cmdline: '', flags: 0x10 | (1 << 5) | 4 }), { code: 'EPERM' });
  sim.faults.add({ op: 'reboot', times: 1, action: { errno: 'EFAULT' } });
  await t.rejects(sim.reboot(0x4d4b4c49, 1), { code: 'EFAULT' });
  for (const op of ['mount', 'umount', 'lock', 'notify', 'open.image', 'open.device', 'readdir', 'stat', 'mkdir', 'rmdir', 'write']) {
    sim.faults.add({ op, times: 1, action: { errno: 'EINTR' } });
  }
  await t.rejects(sim.mountMultikernel(), { code: 'EINTR' });
  await t.rejects(sim.umountMultikernel(), { code: 'EINTR' });
  await t.rejects(sim.lock('/l'), { code: 'EINTR' });
  await t.rejects(sim.notify('READY=1'), { code: 'EINTR' });
  await t.rejects(sim.openImageBytes('x', Buffer.alloc(1)), { code: 'EINTR' });
  await t.rejects(sim.openDevice('/dev/mktty'), { code: 'EINTR' });
  await t.rejects(sim.readdir(M), { code: 'EINTR' });
  await t.rejects(sim.stat(M), { code: 'EINTR' });
  await t.rejects(sim.mkdir(`${M}/x`), { code: 'EINTR' });
  await t.rejects(sim.rmdir(`${M}/x`), { code: 'EINTR' });
  await t.rejects(sim.writeFile(`${M}/x`, Buffer.alloc(1)), { code: 'EINTR' });
  t.equal(sim.faults.size, 0, 'every rule was spent');
});

t.test('file tree: modes, errors and the console device', async (t) => {
  const sim = await setup({ notifyTarget: true }, { instance: true });
  t.teardown(() => sim.dispose());
  t.same(await sim.stat(`${M}/device_tree`), { type: 'file', mode: 0o644, size: 1024 * 1024, mtimeMs: 0 });
  t.same(await sim.stat(`${M}/instances/web/status`), { type: 'file', mode: 0o444, size: 0, mtimeMs: 0 });
  t.same(await sim.stat(`${M}/instances/web`), { type: 'directory', mode: 0o755, size: 0, mtimeMs: 0 });
  t.same(await sim.stat('/dev/mktty'), { type: 'char-device', mode: 0o600, size: 0, mtimeMs: 0 });
  t.same(await sim.readdir(`${M}/instances/web`), ['id', 'status', 'device_tree']);
  t.same(await sim.readdir('/sys/fs'), ['multikernel']);
  await overlay(sim, dtbo([fragment('0', '/instances', [instanceCreate('x', { memoryBytes: 64 * MiB })])]));
  const tx = (await lastTx(sim)).id;
  t.same(await sim.stat(`${M}/overlays/tx_${tx}/dtbo`), { type: 'file', mode: 0o444, size: 0, mtimeMs: 0 });
  await t.rejects(sim.readFile(`${M}/overlays/tx_${tx}/nope`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/overlays/tx_${tx}/id/x`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/instances/web/nope`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/instances/web/id/x`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/instances/nope/id`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/nope`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/nope/x`), { code: 'ENOENT' });
  await t.rejects(sim.readFile(`${M}/instances`), { code: 'EISDIR' });
  await t.rejects(sim.readdir(`${M}/device_tree`), { code: 'ENOTDIR' });
  await t.rejects(sim.readdir('/nope'), { code: 'ENOENT' });
  await t.rejects(sim.stat('/nope'), { code: 'ENOENT' });
  await t.rejects(sim.writeFile(`${M}/instances/web/status`, Buffer.from('active')), { code: 'EINVAL' }, 'kernfs file without a write op');
  await t.rejects(sim.writeFile('/proc/kimage', Buffer.from('x')), { code: 'EACCES' });
  await t.rejects(sim.writeFile(`${M}/instances`, Buffer.from('x')), { code: 'EISDIR' });
  await t.rejects(sim.writeFile('/nope', Buffer.from('x')), { code: 'ENOENT' });
  await t.rejects(sim.mkdir(`${M}/instances/web`), { code: 'EEXIST' });
  await t.rejects(sim.mkdir('/sys/fs/other'), { code: 'EACCES' });
  await t.rejects(sim.mkdir('/nope/x'), { code: 'ENOENT' });
  await t.rejects(sim.rmdir(`${M}/device_tree`), { code: 'ENOTDIR' });
  await t.rejects(sim.rmdir(M), { code: 'EBUSY' });
  await t.rejects(sim.rmdir('/sys/fs'), { code: 'EACCES' });
  await t.rejects(sim.rmdir('/nope'), { code: 'ENOENT' });
  await t.rejects(sim.openDevice(`${M}/device_tree`), { code: 'ENXIO' });
  await t.rejects(sim.openDevice('/dev/nope'), { code: 'ENOENT' });
  const dev = await sim.openDevice('/dev/mktty');
  await dev.close();
  await t.rejects(sim.readFile('/dev/mktty'), { code: 'ENOTCONN' }, 'a read before selecting an instance');
  t.equal(await sim.writeFile('/dev/mktty', Buffer.from('1\n')), 2, 'the selecting write');
  t.equal(await sim.notify('READY=1'), true);
  t.same(await sim.notified(), ['READY=1']);
  await sim.umountMultikernel();
  t.same(await sim.readdir(M), []);
  await t.rejects(sim.rmdir(M), { code: 'EACCES' });
  await t.rejects(sim.readFile(`${M}/device_tree`), { code: 'ENOENT' });
  await sim.mountMultikernel();
  t.same(await sim.readdir(`${M}/instances`), ['web', 'x'], 'one global tree: a remount shows the same nodes');
  const quiet = new SimulatedSystem();
  t.teardown(() => quiet.dispose());
  t.equal(await quiet.notify('READY=1'), false, 'no notify target');
});

t.test('dmesg keeps the last 2000 lines', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const blob = baseline([8], [memoryNode(0, GiB)]);
  for (let i = 0; i < 2001; i++) await sim.writeFile(`${M}/device_tree`, blob).catch(() => undefined);
  const lines = await sim.dmesg();
  t.equal(lines.length, 2000);
  t.equal(lines[0], 'Baseline already applied; change the pool with an overlay targeting /resources', 'each refused write logs three lines');
  t.equal(lines[1], 'Baseline validation and initialization failed: -16');
});

t.test('the pool device tree before a baseline', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const root = decodeFdt(await sim.readFile(`${M}/device_tree`)).root;
  t.same(root.children.map((c) => c.name), ['resources'], 'dts.c always writes /resources');
  t.same(root.properties.map((p) => p.name), ['compatible', '#address-cells', '#size-cells', 'id']);
  t.same(root.children[0]!.properties.map((p) => p.name), ['cpus'], "before a baseline: the host's own CPUs");
  t.equal((await sim.readFile('/proc/kimage')).toString(), 'MK_ID  Type        Start Address   Segments  Mode  Cmdline\n');
  t.equal((await sim.readFile('/proc/iomem')).toString(), '00000000-3ffffffff : System RAM\n');
  t.equal((await overlay(sim, dtbo([fragment('0', '/resources', [])]))).status, 'failed', '/resources without a pool');
  t.match((await sim.dmesg()).join('\n'), /this kernel manages no pool/);
  t.equal((await overlay(sim, dtbo([fragment('0', '/instances', [instanceCreate('a', { memoryBytes: 64 * MiB })])]))).status, 'failed', 'no pool memory to give');
});
