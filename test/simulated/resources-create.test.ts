/**
 * instance-create as the simulated kernel runs it: the resources node parsed as
 * dts.c@0a54b0b4 mk_dt_parse_resources does, then mk_instance_reserve_resources (core.c) moving
 * CPUs and devices out of the pool, and mk_instance_release giving them back. Each case asserts
 * the tx status and the kernel's own log lines (docs/kernel-interface.md, "Per operation").
 */
import t from 'tap';
import { decodeFdt } from '../../lib/fdt/codec';
import { findNode, getProperty, node, prop } from '../../lib/fdt/tree';
import type { FdtNode, FdtProperty } from '../../lib/fdt/types';
import { SimulatedSystem } from '../../lib/system/simulated';
import { baseline, dtbo, fragment, memoryNode } from '../contract/suite';
import { M, MiB, overlay, setup } from './helpers';

const GiB = 1024 * MiB;
const create = (name: string, resProps: FdtProperty[], children: FdtNode[] = [], opProps: FdtProperty[] = []) =>
  dtbo([fragment('0', '/instances', [node('instance-create', [prop.string('instance-name', name), ...opProps], [node('resources', resProps, children)])])]);
const remove = (name: string) => dtbo([fragment('0', '/instances', [node('instance-remove', [prop.string('instance-name', name)])])]);
const devices = (...d: FdtNode[]) => node('devices', [], d);
const pciDev = (name: string, pciId: string, more: FdtProperty[] = [prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]) =>
  node(name, [prop.string('device-type', 'pci'), prop.string('pci-id', pciId), ...more]);
const platDev = (name: string, more: FdtProperty[]) => node(name, [prop.string('device-type', 'platform'), ...more]);
const str = (n: FdtNode | undefined, name: string) => {
  const v = n && getProperty(n, name)?.value;
  return v && Buffer.from(v).toString('latin1');
};

/** apply a DTBO; its tx status and the kernel log lines it wrote */
async function apply(sim: SimulatedSystem, blob: Buffer): Promise<{ status: string; log: string }> {
  const before = (await sim.dmesg()).length;
  const { status } = await overlay(sim, blob);
  return { status, log: (await sim.dmesg()).slice(before).join('\n') };
}
const tree = async (sim: SimulatedSystem, path = `${M}/device_tree`) => decodeFdt(await sim.readFile(path)).root;
const instances = async (sim: SimulatedSystem) => (await sim.readdir(`${M}/instances`)).sort();

t.test('resources properties with the wrong shape fail the create (dts.c mk_dt_parse_resources)', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const refused = async (blob: Buffer, label: string, lines: RegExp, errno = -22) => {
    const { status, log } = await apply(sim, blob);
    t.equal(status, 'failed', label);
    t.match(log, lines, `${label}: the kernel's reason`);
    t.match(log, new RegExp(`Failed to apply overlay transaction \\d+: ${errno}$`), `${label}: ${errno}`);
  };
  const parse = (what: string) => `Failed to parse ${what} for 'db': -22\nFailed to parse resources for instance 'db': -22\nOverlay tx\\d+: Failed to create instance 'db': -22`;
  await refused(create('db', [prop.u32('memory-bytes', 64 * MiB)]), 'memory-bytes of 4 bytes', new RegExp(`Invalid memory-bytes property length: 4 \\(must be 8 bytes for u64 size\\)\n${parse('memory regions')}`));
  await refused(create('db', [prop.u64('memory-bytes', 0)]), 'memory-bytes of 0', new RegExp(`Invalid memory size 0 in memory-bytes\n${parse('memory regions')}`));
  await refused(create('db', [prop.bytes('cpus', new Uint8Array(12))]), 'cpus of 12 bytes', new RegExp(`Invalid cpus property length: 12 \\(must be an array of 64-bit physical CPU IDs\\)\n${parse('CPU resources')}`));
  await refused(create('db', [prop.empty('cpus')]), 'an empty cpus', new RegExp(`Empty CPU list in cpus\n${parse('CPU resources')}`));
  await refused(
    create('db', [], [devices(pciDev('n', '0000:00:04.0', [prop.u32('vendor-id', 0x8086)]))]),
    'a PCI device without device-id',
    new RegExp(`Missing or invalid device-id in device 'n' \\(node 'n'\\)\nFailed to parse embedded PCI device 'n': -22\n${parse('device resources')}`),
  );
  await refused(
    create('db', [], [node('virtio', [], [node('net0', [prop.u32('device-id', 1), prop.bytes('queues', Uint8Array.of(0, 2))])])]),
    'virtio queues shorter than a u32',
    new RegExp(parse('virtio devices')),
  );
  await refused(create('db', [prop.u64('memory-bytes', 64 * MiB)], [], [prop.u32('id', 1)]), 'an id in use: EEXIST', /Overlay tx\d+: instance ID 1 is already in use$/m, -17);
  t.same(await instances(sim), ['web'], 'none of them created an instance');
});

t.test('without a pool: no CPU transfer (EINVAL, only a warning), no memory to add (ENOMEM)', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const made = await apply(sim, create('x', [prop.u64('cpus', 2)]));
  t.equal(made.status, 'applied', 'instance-create targets /instances, which needs no pool');
  t.match(made.log, /^Invalid CPU sets for transfer\nFailed to reserve CPU resources for instance 1 \(x\): -22\nContinuing without CPU assignment$/m, 'core.c mk_instance_transfer_cpus: no pool');
  t.equal(getProperty(findNode(await tree(sim, `${M}/instances/x/device_tree`), '/resources')!, 'cpus'), undefined, 'the instance holds no CPU');
  t.equal(str(findNode(await tree(sim), '/resources'), 'cpus')?.length, 64, 'all 8 CPUs stay with the host');
  const add = await apply(sim, dtbo([fragment('0', '/instances/x', [node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 64 * MiB)])])])]));
  t.equal(add.status, 'failed');
  t.match(add.log, /Overlay tx\d+: \+memory 0x0-0x3ffffff \(64 MB\) numa=-1 -> x\nFailed to allocate 67108864 bytes from multikernel pool for instance 1\nFailed to send memory IPI: -12\nFailed to apply overlay transaction \d+: -12/);
});

t.test('PCI and platform devices move all or nothing, and come back at instance-remove', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(
    `${M}/device_tree`,
    baseline([2, 4, 6], [memoryNode(0, GiB)], {
      resources: [devices(pciDev('nic0', '0000:00:04.0'), platDev('uart', [prop.string('device-name', 'serial8250')]), platDev('rtc', []))],
      root: [node('aliases', [prop.string('eth0', '/resources/devices/nic0')])],
    }),
  );
  const poolTree = await tree(sim);
  t.same(findNode(poolTree, '/resources/devices')!.children.map((c) => c.name), ['serial8250', 'rtc'], 'platform devices by device-name, else node name');

  // a device listed twice in the request moves once (core.c: the second finds nothing left)
  const a = await apply(sim, create('a', [], [devices(pciDev('n1', '0000:00:04.0'), pciDev('n2', '0000:00:04.0'), platDev('p1', [prop.string('device-name', 'serial8250')]), platDev('p2', [prop.string('device-name', 'serial8250')]))]));
  t.equal(a.status, 'applied');
  t.match(a.log, /Transferred 1 PCI devices from root to instance 1 \(a\), root pool remaining: 0 devices\nTransferred 1 platform devices from root to instance 1 \(a\), root pool remaining: 1 devices/);
  const aTree = await tree(sim, `${M}/instances/a/device_tree`);
  t.equal(str(findNode(aTree, '/aliases'), 'eth0'), '/pci@0/pci@4,0\0', 'the device keeps its alias in the instance tree');
  t.ok(findNode(aTree, '/pci@0/pci@4,0'));
  t.same(findNode(aTree, '/resources/devices')!.children.map((c) => c.name), ['serial8250']);
  const lent = await tree(sim);
  t.equal(findNode(lent, '/pci@0'), undefined, 'a lent PCI function leaves the pool tree');
  t.equal(findNode(lent, '/aliases'), undefined, 'and its alias with it');
  t.same(findNode(lent, '/resources/devices')!.children.map((c) => c.name), ['rtc']);

  const b = await apply(sim, create('b', [], [devices(platDev('p', [prop.string('device-name', 'serial8250')]))]));
  t.equal(b.status, 'applied', 'a platform device not free only warns');
  t.match(b.log, /Platform device 'serial8250' not available in root pool\nInstance 2 \(b\): 1 platform devices not available\nFailed to reserve platform device resources for instance 2 \(b\): -2\nContinuing without platform device assignment/);
  const c = await apply(sim, create('c', [], [devices(pciDev('n', '0000:00:04.0'))]));
  t.equal(c.status, 'applied', 'a PCI device not free only warns');
  t.match(c.log, /PCI device 8086:100e@0000:00:04\.0 not available in root pool\nInstance 3 \(c\): 1 PCI devices not available\nFailed to reserve PCI device resources for instance 3 \(c\): -2\nContinuing without PCI device assignment/);

  const gone = await apply(sim, remove('a'));
  t.equal(gone.status, 'applied');
  t.match(gone.log, /Releasing multikernel instance 1 \(a\), returning resources to root\nReturned 1 PCI devices from instance 1 \(a\) to self instance\nReturned 1 platform devices from instance 1 \(a\) to self instance\nOverlay tx\d+: Instance 'a' removed successfully/);
  const back = await tree(sim);
  t.equal(str(findNode(back, '/aliases'), 'eth0'), '/pci@0/pci@4,0\0', 'the device is free again, with its alias');
  t.ok(findNode(back, '/pci@0/pci@4,0'));
  t.same(findNode(back, '/resources/devices')!.children.map((c) => c.name), ['rtc', 'serial8250'], 'returned platform devices go to the end of the list');
});

t.test('a pool that never listed a device refuses device transfers with EINVAL (only a warning at create)', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const made = await apply(sim, create('db', [], [devices(pciDev('n', '0000:00:04.0'), platDev('p', [prop.string('acpi-hid', 'PNP0501')]))]));
  t.equal(made.status, 'applied');
  t.match(made.log, /No self instance or PCI devices not initialized\nFailed to reserve PCI device resources for instance 1 \(db\): -22\nContinuing without PCI device assignment\nNo self instance or platform devices not initialized\nFailed to reserve platform device resources for instance 1 \(db\): -22\nContinuing without platform device assignment/);
  t.equal(findNode(await tree(sim, `${M}/instances/db/device_tree`), '/pci@0'), undefined);
});

t.test('platform devices stay valid once the baseline listed one (core.c mk_self->platform_devices_valid)', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, baseline([2, 4], [memoryNode(0, GiB)], { resources: [devices(platDev('rtc', []))] }));
  t.equal((await apply(sim, create('a', [], [devices(platDev('p', [prop.string('device-name', 'rtc')]))]))).status, 'applied');
  t.equal(findNode(await tree(sim), '/resources/devices'), undefined, 'every platform device is lent: no devices node');
  const b = await apply(sim, create('b', [], [devices(platDev('p', [prop.string('device-name', 'rtc')]))]));
  t.equal(b.status, 'applied');
  t.match(b.log, /Platform device 'rtc' not available in root pool\nInstance 2 \(b\): 1 platform devices not available\nFailed to reserve platform device resources for instance 2 \(b\): -2\nContinuing without platform device assignment/, 'ENOENT, not "not initialized": the list is empty but valid');

  // a full teardown and a new baseline without platform devices: instance a still holds rtc, and
  // mk_instance_return_platform_devices hands it to the new self instance (valid again)
  const res = (ops: FdtNode[]) => dtbo([fragment('0', '/resources', ops)]);
  const chunk = findNode(await tree(sim), '/resources/memory@40000000')!;
  const down = res([node('cpu-remove', [], [node('cpu@2', [prop.u64('reg', 2)]), node('cpu@4', [prop.u64('reg', 4)])]), node('memory-remove', [], [node('memory@0', [prop.bytes('reg', getProperty(chunk, 'reg')!.value)])])]);
  t.equal((await apply(sim, down)).status, 'applied', 'teardown');
  await sim.writeFile(`${M}/device_tree`, baseline([2], [memoryNode(0, GiB)]));
  const c = await apply(sim, create('c', [], [devices(platDev('p', [prop.string('device-name', 'rtc')]))]));
  t.match(c.log, /No self instance or platform devices not initialized\nFailed to reserve platform device resources for instance 3 \(c\): -22/, 'the new baseline listed none: not initialized');
  const gone = await apply(sim, remove('a'));
  t.match(gone.log, /Returned 1 platform devices from instance 1 \(a\) to self instance/);
  t.same(findNode(await tree(sim), '/resources/devices')!.children.map((n) => n.name), ['rtc'], 'the returned device is free in the new pool');
});

t.test('/instances holds no resources: memory, CPU and device operations there are refused (overlay.c mk_overlay_check_resource_target)', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const ops: [string, FdtNode, string][] = [
    ['memory-add', node('memory@0', [prop.u64('reg', 0, 64 * MiB)]), 'memory-add'],
    ['memory-remove', node('memory@0', [prop.u64('reg', 0, 64 * MiB)]), 'memory-remove'],
    ['cpu-add', node('cpu@4', [prop.u64('reg', 4)]), 'cpu operation'],
    ['device-add', node('pci@0', [prop.string('pci-id', '0000:00:04.0')]), 'device operation'],
  ];
  for (const [op, item, what] of ops) {
    const { status, log } = await apply(sim, dtbo([fragment('0', '/instances', [node(op, [], [item])])]));
    t.equal(status, 'failed', op);
    t.match(log, new RegExp(`Overlay tx\\d+: /instances is not a resource holder, ${what} rejected\nFailed to apply overlay transaction \\d+: -22`), `${op}: EINVAL`);
  }
});
