/**
 * The resource rules and rendered trees of the simulated kernel against the kernel sources
 * (docs/kernel-interface.md cites each). Every case here failed on the simulator before it
 * followed baseline.c@16083690, hotplug.c@3dc6b66f, core.c@843ebe12, mem.c@26ba325b,
 * overlay.c@14213ee5 and dts.c@0a54b0b4.
 */
import t from 'tap';
import { decodeFdt } from '../../lib/fdt/codec';
import { node, prop } from '../../lib/fdt/tree';
import type { FdtNode } from '../../lib/fdt/types';
import { SimulatedSystem } from '../../lib/system/simulated';
import { baseline, dtbo, fragment, instanceCreate, memoryNode } from '../contract/suite';
import { M, MiB, overlay, setup } from './helpers';

const GiB = 1024 * MiB;
const cpu = (id: number) => node(`cpu@${id}`, [prop.u64('reg', id)]);
const pci = (id: string, extra: ReturnType<typeof prop.string>[] = []) => node('pci@0', [prop.string('pci-id', id), ...extra]);
const res = (ops: FdtNode[]) => dtbo([fragment('0', '/resources', ops)]);
const inst = (ops: FdtNode[], name = 'web') => dtbo([fragment('0', `/instances/${name}`, ops)]);
const create = (props: ReturnType<typeof prop.u64>[], children: FdtNode[] = [], name = 'db', opProps: ReturnType<typeof prop.u32>[] = []) =>
  dtbo([fragment('0', '/instances', [node('instance-create', [prop.string('instance-name', name), ...opProps], [node('resources', props, children)])])]);
const dmesg = async (sim: SimulatedSystem) => (await sim.dmesg()).join('\n');

/** "name: prop,prop" per node, depth first: the shape of a tree */
function shape(n: FdtNode, path = ''): string[] {
  const here = path === '' ? '/' : path;
  return [`${here}: ${n.properties.map((p) => p.name).join(',')}`, ...n.children.flatMap((c) => shape(c, `${path}/${c.name}`))];
}

t.test('the trees as dts.c@0a54b0b4 mk_dt_emit_tree writes them, node for node', async (t) => {
  const sim = new SimulatedSystem({ topology: { cpus: [0, 2, 4, 6].map((apicId) => ({ apicId, node: 0 })), memoryBytes: 4 * GiB, numaNodes: 1, pciDevices: ['0000:00:04.0'] } });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const tree = async (path: string) => shape(decodeFdt(await sim.readFile(path)).root);
  // host before a baseline: root props (compatible, no model: the self instance's name is empty,
  // #address-cells, #size-cells, id) and /resources with the host's own CPUs (mk_self->cpus)
  t.same(await tree(`${M}/device_tree`), ['/: compatible,#address-cells,#size-cells,id', '/resources: cpus']);
  const nic = node('nic0', [prop.string('device-type', 'pci'), prop.string('pci-id', '0000:00:04.0'), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]);
  const plat = node('uart', [prop.string('device-type', 'platform'), prop.string('device-name', 'serial8250')]);
  await sim.writeFile(
    `${M}/device_tree`,
    baseline([2, 4, 6], [memoryNode(0, GiB)], { resources: [node('devices', [], [nic, plat])], root: [node('aliases', [prop.string('eth0', '/resources/devices/nic0')])] }),
  );
  // pool: members, free set, memory@<base> chunks, platform devices under resources/devices;
  // the free PCI functions under their host bridge, their alias in /aliases (mk_dt_emit_aliases,
  // mk_dt_emit_host_bridges); no empty devices node
  t.same(await tree(`${M}/device_tree`), [
    '/: compatible,#address-cells,#size-cells,id',
    '/resources: cpus,cpus-available',
    '/resources/memory@40000000: device_type,reg,numa-node-id',
    '/resources/devices: ',
    '/resources/devices/serial8250: device-type,device-name',
    '/aliases: eth0',
    '/pci@0: compatible,device_type,#address-cells,#size-cells,linux,pci-domain,bus-range',
    '/pci@0/pci@4,0: reg,vendor-id,device-id',
  ]);
  const root = decodeFdt(await sim.readFile(`${M}/device_tree`)).root;
  t.equal(Buffer.from(root.children[1]!.properties[0]!.value).toString('latin1'), '/pci@0/pci@4,0\0');
  t.same(Buffer.from(root.children[2]!.children[0]!.properties[0]!.value), Buffer.from('0000200000000000000000000000000000000000', 'hex'), 'reg: phys.hi = bus << 16 | devfn << 8, then four zero cells');
  // an instance: compatible, model, cells, id; resources with memory-base/memory-bytes/cpus; its
  // PCI functions under the host bridge; chosen/multikernel,host-tree when it asked for one
  await overlay(sim, create([prop.u64('cpus', 4), prop.u64('memory-bytes', 64 * MiB)], [], 'web'));
  t.equal((await overlay(sim, inst([node('device-add', [], [pci('0000:00:04.0')])]))).status, 'applied');
  t.same(await tree(`${M}/instances/web/device_tree`), [
    '/: compatible,model,#address-cells,#size-cells,id',
    '/resources: memory-base,memory-bytes,cpus',
    '/aliases: eth0',
    '/pci@0: compatible,device_type,#address-cells,#size-cells,linux,pci-domain,bus-range',
    '/pci@0/pci@4,0: reg,vendor-id,device-id',
  ]);
  t.same(await tree(`${M}/device_tree`), [
    '/: compatible,#address-cells,#size-cells,id',
    '/resources: cpus,cpus-available',
    '/resources/memory@40000000: device_type,reg,numa-node-id',
    '/resources/devices: ',
    '/resources/devices/serial8250: device-type,device-name',
  ], 'a lent PCI function is no longer in the pool tree');
  const hostTree = node('chosen', [], [node('multikernel,host-tree', [prop.string('bootargs', 'x')], [node('vmcore', [prop.u32('n', 1)])])]);
  const withChosen = dtbo([fragment('0', '/instances', [node('instance-create', [prop.string('instance-name', 'bare')], [node('resources'), hostTree])])]);
  t.equal((await overlay(sim, withChosen)).status, 'applied', 'no memory, no CPUs: both optional');
  t.same(await tree(`${M}/instances/bare/device_tree`), [
    '/: compatible,model,#address-cells,#size-cells,id',
    '/resources: ',
    '/chosen: ',
    '/chosen/multikernel,host-tree: bootargs',
    '/chosen/multikernel,host-tree/vmcore: n',
  ]);
  const badChosen = (c: FdtNode) => dtbo([fragment('0', '/instances', [node('instance-create', [prop.string('instance-name', 'c')], [node('resources'), c])])]);
  t.equal((await overlay(sim, badChosen(node('chosen', [prop.string('bootargs', 'x')])))).status, 'failed', 'chosen with properties');
  t.match(await dmesg(sim), /Instance 'c': chosen carries properties; only a multikernel,host-tree node is accepted/);
  t.equal((await overlay(sim, badChosen(node('chosen', [], [node('other')])))).status, 'failed', 'another chosen node');
  t.match(await dmesg(sim), /Instance 'c': unsupported chosen node 'other'/);
});

t.test('baseline rules (baseline.c@16083690, hotplug.c@3dc6b66f mk_pool_cpu_add)', async (t) => {
  const topology = { cpus: [{ apicId: 0, node: 0 }, { apicId: 3, node: 0 }, { apicId: 5, node: 0, online: false }, { apicId: 9, node: 0 }], memoryBytes: 8 * GiB, numaNodes: 1, pciDevices: ['0000:00:04.0'] };
  const fresh = async () => {
    const sim = new SimulatedSystem({ topology });
    t.teardown(() => sim.dispose());
    await sim.mountMultikernel();
    return sim;
  };
  const poolOf = async (sim: SimulatedSystem) => decodeFdt(await sim.readFile(`${M}/device_tree`)).root.children[0]!;
  const names = (n: FdtNode) => n.children.map((c) => c.name);

  let sim = await fresh();
  await t.rejects(sim.writeFile(`${M}/device_tree`, baseline([3, 0], [memoryNode(0, GiB)])), { code: 'EBUSY' }, 'the boot CPU only warns, then fails to move: EBUSY');
  const log = await dmesg(sim);
  t.match(log, /Baseline includes boot CPU \(phys 0, logical 0\) - this may cause system instability/);
  t.match(log, /Multikernel hotplug: Cannot remove boot CPU\nFailed to move CPU 0 into the pool: -22\nFailed to move 1 CPUs - baseline initialization incomplete\nBaseline CPU initialization failed: -16\nBaseline validation and initialization failed: -16/);
  t.same(names(await poolOf(sim)), ['memory@40000000'], 'the memory it grew stays in the pool');
  t.notMatch((await sim.readFile('/proc/cpuinfo')).toString(), /apicid\t\t: 3\n/, 'and CPU 3 moved before the failure');
  await t.rejects(sim.writeFile(`${M}/device_tree`, baseline([9], [memoryNode(0, GiB)])), { code: 'EBUSY' }, 'a pool with memory refuses another baseline');

  sim = await fresh();
  await t.rejects(sim.writeFile(`${M}/device_tree`, baseline([5], [memoryNode(0, GiB)])), { code: 'EBUSY' }, 'an offline CPU: validated (present), then fails to move');
  t.match(await dmesg(sim), /Multikernel hotplug: CPU 5 must be online to join the pool\nFailed to move CPU 5 into the pool: -22/);

  sim = await fresh();
  await sim.writeFile(`${M}/device_tree`, baseline([3, 3, 9], [memoryNode(0, GiB)]));
  t.same(decodeFdt(await sim.readFile(`${M}/device_tree`)).root.children[0]!.properties[0]!.value.length, 16, 'a CPU listed twice is one member');
  t.match(await dmesg(sim), /Baseline CPU pool: 3 CPUs requested: 3,9/);

  sim = await fresh();
  const dev = (id: string, more: ReturnType<typeof prop.u32>[] = [prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]) =>
    baseline([3], [memoryNode(0, GiB)], { resources: [node('devices', [], [node('nic', [prop.string('device-type', 'pci'), prop.string('pci-id', id), ...more])])] });
  await t.rejects(sim.writeFile(`${M}/device_tree`, dev('0000:00:04.0', [prop.u32('device-id', 1)])), { code: 'EINVAL' }, 'vendor-id required');
  t.match(await dmesg(sim), /PCI device 'nic' missing or invalid vendor-id\nFailed to parse baseline devices: -22/);
  await t.rejects(sim.writeFile(`${M}/device_tree`, dev('0000:00:04.0', [prop.u32('vendor-id', 1)])), { code: 'EINVAL' }, 'device-id required');
  await sim.writeFile(`${M}/device_tree`, dev('0000:00:09.0'));
  t.match(await dmesg(sim), /Multikernel hotplug: PCI device 0000:00:09\.0 not found\nPCI device 8086:100e@0000:00:09\.0 not moved into the pool: -19\nFailed to move 1 PCI devices into the pool/, 'an absent PCI function only warns');
  const bus = await fresh();
  await bus.writeFile(`${M}/device_tree`, dev('0000:01:00.0'));
  t.match(await dmesg(bus), /Multikernel hotplug: PCI bus 0000:01 not found/);

  // a full teardown: the pool struct stays, empty, and takes a new baseline
  sim = await fresh();
  await sim.writeFile(`${M}/device_tree`, baseline([3], [memoryNode(0, GiB)]));
  const chunk = (await poolOf(sim)).children[0]!;
  const down = res([node('cpu-remove', [], [cpu(3)]), node('memory-remove', [], [node('memory@0', [prop.bytes('reg', chunk.properties[1]!.value)])])]);
  t.equal((await overlay(sim, down)).status, 'applied', 'teardown');
  t.same((await poolOf(sim)).properties, [], 'an empty pool: no cpus, no cpus-available');
  await sim.writeFile(`${M}/device_tree`, baseline([9], [memoryNode(0, 2 * GiB)]));
  t.same(names(await poolOf(sim)), ['memory@40000000'], 'a new baseline after a full teardown');

  sim = await fresh();
  const many = Array.from({ length: 65 }, (_, i) => memoryNode(i, 2 * MiB));
  await t.rejects(sim.writeFile(`${M}/device_tree`, baseline([3], many)), { code: 'E2BIG' }, 'more than MAX_NUMNODES memory@ nodes');
  t.match(await dmesg(sim), /Baseline: more than 64 memory@ nodes/);
  sim = await fresh();
  await sim.writeFile(`${M}/device_tree`, baseline([3], [memoryNode(0, GiB)], { resProps: [prop.u64('memory-bytes', GiB)] }));
  t.same(names(await poolOf(sim)), ['memory@40000000'], 'memory-bytes next to memory@N nodes is not read');
});

t.test('pool overlay rules (hotplug.c, mem.c, overlay.c mk_overlay_pool_mem_remove)', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const fails = async (blob: Buffer, label: string, line: RegExp) => {
    t.equal((await overlay(sim, blob)).status, 'failed', label);
    t.match(await dmesg(sim), line, `${label}: the kernel's reason`);
  };
  await fails(res([node('memory-remove', [], [node('memory@0', [prop.u64('reg', 0, GiB)])])]), 'memory-remove of no chunk: ENOENT', /Failed to resize the pool: -2\nFailed to apply overlay transaction \d+: -2/);
  await fails(res([node('cpu-add', [], [cpu(99)])]), 'cpu-add of an absent CPU: EINVAL', /Physical CPU 99 not found in present CPUs\nMultikernel hotplug: CPU 99 must be online to join the pool\nFailed to move CPU 99: -22/);
  await fails(res([node('cpu-add', [], [cpu(4)])]), 'cpu-add of a pool CPU: EINVAL (no longer present)', /CPU 4 must be online to join the pool\nFailed to move CPU 4: -22/);
  await fails(res([node('cpu-add', [], [cpu(0)])]), 'cpu-add of the boot CPU: EINVAL', /Cannot remove boot CPU\nFailed to move CPU 0: -22/);
  await fails(res([node('cpu-remove', [], [cpu(8)])]), 'cpu-remove of a host CPU: EBUSY', /CPU 8 is not free in the pool\nFailed to move CPU 8: -16/);
  await fails(res([node('cpu-remove', [], [cpu(2)])]), 'cpu-remove of a lent CPU: EBUSY', /CPU 2 is not free in the pool\nFailed to move CPU 2: -16/);
  await fails(res([node('device-add', [], [pci('0000:00:09.0')])]), 'device-add of an absent function: ENODEV', /PCI device 0000:00:09\.0 not found\nFailed to move device 0000:00:09\.0: -19/);
  await fails(res([node('device-remove', [], [pci('0000:00:04.0')])]), 'device-remove of a device not free: EBUSY', /device 0000:00:04\.0 is not free in the pool\nFailed to move device 0000:00:04\.0: -16/);
  await fails(res([node('memory-add', [], [node('memory@0', [prop.u64('size', GiB), prop.u32('numa-node-id', 7)])])]), 'memory-add on an offline node: EINVAL', /Failed to grow the pool by 1024 MB: -22/);
  t.equal((await overlay(sim, res([node('device-add', [], [pci('0000:00:04.0')])]))).status, 'applied');
  t.equal((await overlay(sim, inst([node('device-add', [], [pci('0000:00:04.0')])]))).status, 'applied');
  t.equal((await overlay(sim, res([node('device-add', [], [pci('0000:00:04.0')])]))).status, 'applied', 'device-add of a lent device lists it free again (mk_root_has_pci_device looks at the free list only)');
});

t.test('instance rules (core.c@843ebe12, mem.c@26ba325b, dts.c@0a54b0b4, overlay.c)', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const fails = async (blob: Buffer, label: string, line: RegExp) => {
    t.equal((await overlay(sim, blob)).status, 'failed', label);
    t.match(await dmesg(sim), line, `${label}: the kernel's reason`);
  };
  await fails(create([prop.u64('memory-bytes', 64 * MiB)], [], 'x', [prop.u32('id', 0)]), 'id 0: EEXIST (the host is instance 0)', /Overlay tx\d+: instance ID 0 is already in use\nFailed to apply overlay transaction \d+: -17/);
  await fails(inst([node('cpu-add', [], [cpu(6), cpu(2)])]), 'cpu-add of a lent CPU: EBUSY', /CPU 2 not available in the pool\nInstance 1 \(web\): 1 CPUs are not available\nFailed to move CPU 2: -16/);
  await fails(inst([node('cpu-remove', [], [cpu(4)])]), 'cpu-remove of a CPU not held: EINVAL', /CPU 4 not assigned to instance 1 \(web\)\nInstance 1 \(web\): 1 CPUs are not assigned to this instance\nFailed to move CPU 4: -22/);
  await fails(inst([node('device-add', [], [pci('0000:00:04.0')])]), 'device-add while the pool never listed a device: EINVAL', /No self instance or PCI devices not initialized\nFailed to move device 0000:00:04\.0: -22/);
  t.equal((await overlay(sim, res([node('device-add', [], [pci('0000:00:04.0')])]))).status, 'applied');
  await fails(inst([node('device-add', [], [pci('0000:00:05.0')])]), 'device-add of a device not in the pool: ENOENT', /PCI device 0000:00:05\.0 not found in root pool\nFailed to move device 0000:00:05\.0: -2/);
  await fails(inst([node('device-remove', [], [pci('0000:00:04.0')])]), 'device-remove of a device not held: ENOENT', /PCI device 0000:00:04\.0 not found in instance 1\nFailed to move device 0000:00:04\.0: -2/);
  const region = /([0-9a-f]+)-([0-9a-f]+) : mk-instance-1-web-region-0/.exec((await sim.readFile('/proc/iomem')).toString())!;
  const base = parseInt(region[1]!, 16);
  await fails(inst([node('memory-remove', [], [node('memory@0', [prop.u64('reg', base + 128 * MiB, 128 * MiB)])])]), 'the tail of a region: ENOENT (no partial removal in mem.c)', /Memory region 0x[0-9a-f]+-0x[0-9a-f]+ not found in instance 1 \(web\)\nFailed to send memory IPI: -2/);
  await fails(create([prop.u64('memory-bytes', 64 * MiB), prop.u32('numa-nodes', 64)]), 'numa-nodes >= MAX_NUMNODES', /Invalid NUMA node 64 in numa-nodes\nFailed to parse NUMA nodes for 'db': -22/);
  await fails(create([prop.u64('memory-bytes', 64 * MiB), prop.u32('numa-nodes', 1)]), 'numa-nodes names a node the pool has no memory on: ENOMEM', /Failed to allocate chunk 1 for instance 2 \(remaining: 67108864 bytes\)\nFailed to create instance pool for instance 2 \(db\)/);
  await fails(create([prop.u64('memory-bytes', 64 * MiB), prop.bytes('numa-nodes', Uint8Array.of(0, 0))]), 'numa-nodes of 2 bytes', /Invalid numa-nodes property length: 2/);
  await fails(create([prop.u64('memory-bytes', 2 * GiB)]), 'more than the pool has free: ENOMEM', /Requested memory \(0x80000000\) exceeds available pool \(0x30000000\)/);
  const virtio = (props: ReturnType<typeof prop.u32>[][]) => create([], [node('virtio', [], props.map((p, i) => node(`net${i}`, p)))]);
  await fails(virtio([[prop.u32('queues', 2)]]), 'virtio without device-id: EINVAL', /Failed to parse virtio devices for 'db': -22/);
  await fails(virtio([[prop.u32('device-id', 1)]]), 'virtio without queues: EINVAL', /Failed to parse virtio devices for 'db': -22/);
  await fails(virtio([[prop.u32('device-id', 1), prop.u32('queues', 9)]]), 'virtio queues > 8: EINVAL', /Failed to parse virtio devices for 'db': -22/);
  await fails(virtio([[prop.u32('device-id', 1), prop.u32('queues', 0)]]), 'virtio queues 0: EINVAL', /Failed to parse virtio devices for 'db': -22/);
  t.equal((await overlay(sim, virtio([[prop.u32('device-id', 1), prop.u32('queues', 8), prop.u32('queue-size', 3)]]))).status, 'applied', 'queue-size is not bounded');
  const plat = (props: ReturnType<typeof prop.string>[]) => create([], [node('devices', [], [node('p', [prop.string('device-type', 'platform'), ...props])])], 'p1');
  await fails(plat([]), 'platform device with neither device-name nor acpi-hid', /Platform device 'p' \(node 'p'\) has neither acpi-hid nor device-name\nFailed to parse embedded platform device 'p': -22/);
  t.equal((await overlay(sim, plat([prop.string('acpi-hid', 'PNP0501')]))).status, 'applied', 'a platform device the pool lacks only warns');
  t.match(await dmesg(sim), /No self instance or platform devices not initialized\nFailed to reserve platform device resources for instance 3 \(p1\): -22\nContinuing without platform device assignment/);
  const pciBad = (props: ReturnType<typeof prop.string>[]) => create([], [node('devices', [], [node('n', [prop.string('device-type', 'pci'), ...props])])], 'p2');
  await fails(pciBad([]), 'PCI device without pci-id', /No pci-id property in device 'n'\nFailed to parse embedded PCI device 'n': -22/);
  await fails(pciBad([prop.string('pci-id', 'zz')]), 'PCI device with a bad pci-id', /Invalid pci-id format: 'zz'/);
  await fails(pciBad([prop.string('pci-id', '0000:00:04.0')]), 'PCI device without vendor-id', /Missing or invalid vendor-id in device 'n'/);
  await fails(dtbo([fragment('0', '/instances', [node('instance-create', [prop.string('instance-name', '')], [node('resources')])])]), 'an empty name', /instance-create requires a valid 'instance-name'/);
});

t.test('a loaded image pins its memory; a fragmented pool gives memory in halves', async (t) => {
  const sim = await setup({ resourceAckTimeoutMs: 5 }, { load: true });
  t.teardown(() => sim.dispose());
  const region = /([0-9a-f]+)-([0-9a-f]+) : mk-instance-1-web-region-0/.exec((await sim.readFile('/proc/iomem')).toString())!;
  const base = parseInt(region[1]!, 16);
  const size = parseInt(region[2]!, 16) + 1 - base;
  t.equal((await overlay(sim, inst([node('memory-remove', [], [node('memory@0', [prop.u64('reg', base, size)])])]))).status, 'failed', 'the loaded image lives there: EBUSY');
  t.match(await dmesg(sim), /Refusing to remove 0x[0-9a-f]+-0x[0-9a-f]+ from instance 1 \(web\): the loaded kernel image lives there/);
  // a fragmented pool: instance memory is gathered in halves (mem.c multikernel_create_instance_pool)
  const frag = await setup();
  t.teardown(() => frag.dispose());
  for (const n of ['a', 'b', 'c']) await overlay(frag, dtbo([fragment('0', '/instances', [instanceCreate(n, { memoryBytes: 256 * MiB })])]));
  await overlay(frag, dtbo([fragment('0', '/instances', [node('instance-remove', [prop.string('instance-name', 'b')])])]));
  t.equal((await overlay(frag, dtbo([fragment('0', '/instances', [instanceCreate('big', { memoryBytes: 384 * MiB })])]))).status, 'applied');
  t.match((await frag.readFile('/proc/iomem')).toString(), /50000000-5bffffff : mk-instance-2-big-region-1\n[^]*70000000-7bffffff : mk-instance-2-big-region-0/, 'two pieces, the newest listed first');
});
