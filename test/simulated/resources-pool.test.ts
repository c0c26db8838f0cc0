/**
 * The pool: baseline parsing and validation (baseline.c@16083690), overlay items on /resources
 * (overlay.c@14213ee5 mk_overlay_parse_*), chunk removal (mem.c mk_pool_mem_shrink, overlay.c
 * mk_overlay_pool_mem_remove) and the rollback of a removal. docs/kernel-interface.md,
 * "Baseline" and "Per operation".
 */
import t, { type Test } from 'tap';
import { decodeFdt } from '../../lib/fdt/codec';
import { findNode, getProperty, node, prop } from '../../lib/fdt/tree';
import type { FdtNode } from '../../lib/fdt/types';
import { SimulatedSystem, type SimulatedSystemOptions } from '../../lib/system/simulated';
import { baseline, dtbo, fragment, instanceCreate, memoryNode } from '../contract/suite';
import { M, MiB, overlay, setup } from './helpers';

const GiB = 1024 * MiB;
const res = (ops: FdtNode[]) => dtbo([fragment('0', '/resources', ops)]);
const inst = (name: string, ops: FdtNode[]) => dtbo([fragment('0', `/instances/${name}`, ops)]);
const instances = (ops: FdtNode[]) => dtbo([fragment('0', '/instances', ops)]);
const cpu = (id: number, more: ReturnType<typeof prop.u32>[] = []) => node(`cpu@${id}`, [prop.u64('reg', id), ...more]);
const chunk = (base: number, size: number) => node('memory-remove', [], [node('memory@0', [prop.u64('reg', base, size)])]);

async function fresh(t: Test, opts: SimulatedSystemOptions = {}): Promise<SimulatedSystem> {
  const sim = new SimulatedSystem(opts);
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  return sim;
}
async function logOf(sim: SimulatedSystem, f: () => Promise<unknown>): Promise<string> {
  const before = (await sim.dmesg()).length;
  await f();
  return (await sim.dmesg()).slice(before).join('\n');
}
async function apply(sim: SimulatedSystem, blob: Buffer): Promise<{ id: number; status: string; log: string }> {
  let tx = { id: 0, status: '' };
  const log = await logOf(sim, async () => (tx = await overlay(sim, blob)));
  return { ...tx, log };
}
const poolTree = async (sim: SimulatedSystem) => decodeFdt(await sim.readFile(`${M}/device_tree`)).root;
const chunks = async (sim: SimulatedSystem) => findNode(await poolTree(sim), '/resources')!.children.filter((c) => c.name.startsWith('memory@')).map((c) => c.name);

t.test('baseline: an empty CPU list, devices without or with an unknown device-type', async (t) => {
  const sim = await fresh(t);
  const empty = await logOf(sim, () => t.rejects(sim.writeFile(`${M}/device_tree`, baseline([], [memoryNode(0, GiB)], { resProps: [prop.empty('cpus')] })), { code: 'EINVAL' }, 'cpus of 0 bytes: EINVAL'));
  t.match(empty, /Empty CPU list in baseline\nFailed to parse baseline CPUs: -22\nBaseline validation and initialization failed: -22/);
  const odd = [node('mystery', [prop.string('pci-id', '0000:00:04.0')]), node('kbd', [prop.string('device-type', 'usb')])];
  const log = await logOf(sim, () => sim.writeFile(`${M}/device_tree`, baseline([2], [memoryNode(0, GiB)], { resources: [node('devices', [], odd)] })));
  t.match(log, /Device 'mystery' has no device-type property, skipping\nUnknown device-type 'usb' for device 'kbd', skipping\n/, 'both only warn');
  t.match(log, /Multikernel baseline initialized successfully/);
  t.equal(findNode(await poolTree(sim), '/resources/devices'), undefined, 'neither is kept');
  t.equal(findNode(await poolTree(sim), '/pci@0'), undefined);
});

t.test('baseline: an /aliases value without its NUL still names the device', async (t) => {
  // libfdt reads the value as a C string; the struct block's next byte (padding or the next
  // token's first byte) is 0, so an unterminated path ends where the value ends
  const sim = await fresh(t);
  const nic = node('nic0', [prop.string('device-type', 'pci'), prop.string('pci-id', '0000:00:04.0'), prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e)]);
  await sim.writeFile(`${M}/device_tree`, baseline([2], [memoryNode(0, GiB)], { resources: [node('devices', [], [nic])], root: [node('aliases', [prop.bytes('eth0', Buffer.from('/resources/devices/nic0'))])] }));
  const aliases = findNode(await poolTree(sim), '/aliases');
  t.equal(Buffer.from(getProperty(aliases!, 'eth0')!.value).toString('latin1'), '/pci@0/pci@4,0\0');
});

t.test('baseline: a CPU lent to an instance has departed the host: ENODEV', async (t) => {
  const sim = await fresh(t);
  await sim.writeFile(`${M}/device_tree`, baseline([2], [memoryNode(0, GiB)]));
  // tear the pool down to nothing, put CPU 2 back without memory and lend it: no memory, no
  // free CPU, no free device, so baseline.c lets a new baseline through to its CPU checks
  t.equal((await apply(sim, res([node('cpu-remove', [], [cpu(2)]), chunk(0x40000000, GiB)]))).status, 'applied');
  t.equal((await apply(sim, res([node('cpu-add', [], [cpu(2)])]))).status, 'applied');
  t.equal((await apply(sim, instances([instanceCreate('x', { cpus: [2] })]))).status, 'applied');
  const log = await logOf(sim, () => t.rejects(sim.writeFile(`${M}/device_tree`, baseline([4, 2], [memoryNode(0, GiB)])), { code: 'ENODEV' }));
  t.match(log, /Baseline CPU 2 \(logical 1\) is not present\nBaseline CPU validation failed: -19\nBaseline validation and initialization failed: -19/);
  t.same(await chunks(sim), [], 'nothing was grown');
});

t.test('/resources items with the wrong shape (overlay.c mk_overlay_parse_*)', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const refused = async (blob: Buffer, label: string, line: RegExp) => {
    const { status, log } = await apply(sim, blob);
    t.equal(status, 'failed', label);
    t.match(log, line, `${label}: the kernel's reason`);
  };
  const add = (props: ReturnType<typeof prop.u64>[]) => res([node('memory-add', [], [node('memory@0', props)])]);
  await refused(add([prop.u64('size', GiB), prop.bytes('numa-node-id', Uint8Array.of(0, 0))]), 'numa-node-id of 2 bytes', /Invalid numa-node-id property in memory@0\nFailed to apply overlay transaction \d+: -22/);
  await refused(add([]), 'memory-add without size', /Invalid size property in memory@0\nFailed to apply overlay transaction \d+: -22/);
  await refused(add([prop.u32('size', 4096)]), 'a size of 4 bytes', /Invalid size property in memory@0\n/);
  await refused(add([prop.u64('size', 4097)]), 'a size not page aligned', /memory@0: size 0x1001 is not a positive page multiple\nFailed to apply overlay transaction \d+: -22/);
  await refused(add([prop.u64('size', 0)]), 'a size of 0', /memory@0: size 0x0 is not a positive page multiple\n/);
  t.same(await chunks(sim), ['memory@40000000'], 'the pool did not grow');
  // mk_overlay_parse_u32: a flags property of exactly 4 bytes reaches mk_pool_cpu_remove; any other length reads as 0
  const flags = await apply(sim, res([node('cpu-remove', [], [cpu(4, [prop.u32('flags', 5)]), node('cpu@6', [prop.u64('reg', 6), prop.u64('flags', 5)])])]));
  t.equal(flags.status, 'applied');
  t.match(flags.log, /Multikernel hotplug: Adding CPU 4 \(numa=-1, flags=0x5\)[^]*Multikernel hotplug: Adding CPU 6 \(numa=-1, flags=0x0\)/);
});

t.test('pool memory-remove of a chunk instance memory lives in: EBUSY', async (t) => {
  // web (CPU 2, 256 MiB) sits in the baseline chunk 0x40000000, which also holds the park area
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  t.equal((await apply(sim, res([node('memory-add', [], [memoryNode(0, 256 * MiB)])]))).status, 'applied');
  t.same(await chunks(sim), ['memory@40000000', 'memory@80000000']);
  t.equal((await apply(sim, instances([instanceCreate('db', { memoryBytes: 128 * MiB })]))).status, 'applied', 'db takes its memory from the newest chunk');
  const busy = await apply(sim, res([chunk(0x80000000, 256 * MiB)]));
  t.equal(busy.status, 'failed', 'mk_pool_mem_shrink: the chunk has allocations');
  t.match(busy.log, /Overlay tx\d+: -memory 0x80000000-0x8fffffff \(256 MB\) from \/resources\nFailed to resize the pool: -16\nFailed to apply overlay transaction \d+: -16/);

  // the park chunk: every pool CPU home, so the park area is torn down, but web's memory is
  // still there; the chunk stays and the park area is built again where a NUMA_NO_NODE page
  // allocation lands: the newest chunk
  t.equal((await apply(sim, inst('web', [node('cpu-remove', [], [cpu(2)])]))).status, 'applied');
  t.equal((await apply(sim, res([node('cpu-remove', [], [cpu(2), cpu(4), cpu(6)])]))).status, 'applied');
  const pinned = await apply(sim, res([chunk(0x40000000, GiB)]));
  t.equal(pinned.status, 'failed');
  t.match(pinned.log, /Overlay tx\d+: -memory 0x40000000-0x7fffffff \(1024 MB\) from \/resources\nFailed to resize the pool: -16\nFailed to apply overlay transaction \d+: -16/);
  t.same(await chunks(sim), ['memory@40000000', 'memory@80000000']);
  t.equal((await apply(sim, res([node('cpu-add', [], [cpu(4)])]))).status, 'applied');
  const remove = (name: string) => instances([node('instance-remove', [prop.string('instance-name', name)])]);
  t.equal((await apply(sim, remove('web'))).status, 'applied');
  t.equal((await apply(sim, res([chunk(0x40000000, GiB)]))).status, 'applied', 'the park area left this chunk: it goes once empty');
  t.equal((await apply(sim, remove('db'))).status, 'applied');
  const park = await apply(sim, res([chunk(0x80000000, 256 * MiB)]));
  t.equal(park.status, 'failed', 'the park area is in the newest chunk now: it waits for the pool CPU');
  t.match(park.log, /chunk 0x80000000\+0x10000000 holds the pool park area; return every pool CPU first \(-16\)\nFailed to apply overlay transaction \d+: -16/);
});

t.test('rmdir of a pool memory-remove regrows the pool; no room: ENOMEM, the transaction stays', async (t) => {
  // one node, RAM 1-2 GiB for the pool: two 512 MiB chunks fill it
  const topology = { cpus: [0, 2, 4].map((apicId) => ({ apicId, node: 0 })), memoryBytes: 2 * GiB, numaNodes: 1 };
  const sim = await fresh(t, { topology });
  await sim.writeFile(`${M}/device_tree`, baseline([2, 4], [memoryNode(0, 512 * MiB)]));
  t.equal((await apply(sim, res([node('memory-add', [], [memoryNode(0, 512 * MiB)])]))).status, 'applied');
  const removed = await apply(sim, res([chunk(0x60000000, 512 * MiB)]));
  t.equal(removed.status, 'applied');
  const refill = await apply(sim, res([node('memory-add', [], [memoryNode(0, 512 * MiB)])]));
  t.equal(refill.status, 'applied', 'the hole is taken again');
  const log = await logOf(sim, () => t.rejects(sim.rmdir(`${M}/overlays/tx_${removed.id}`), { code: 'ENOMEM' }));
  t.match(log, new RegExp(`Rollback tx${removed.id}: regrowing the pool by 512 MB\nFailed to resize the pool: -12\nFailed to rollback overlay transaction ${removed.id}: -12`));
  t.equal((await sim.readFile(`${M}/overlays/tx_${removed.id}/status`)).toString(), 'failed\n', 'the transaction stays, failed');
  t.equal((await apply(sim, res([chunk(0x60000000, 512 * MiB)]))).status, 'applied', 'room made');
  await sim.rmdir(`${M}/overlays/tx_${removed.id}`);
  t.notOk((await sim.readdir(`${M}/overlays`)).includes(`tx_${removed.id}`), 'a later rmdir runs the whole rollback again');
  t.same(await chunks(sim), ['memory@40000000', 'memory@60000000']);
});

t.test('baseline: a platform device name is cut to 31 characters (baseline.c strscpy into name[32])', async (t) => {
  const sim = await fresh(t);
  const long = 'serial8250-with-a-very-long-name-indeed';
  await sim.writeFile(`${M}/device_tree`, baseline([2, 4], [memoryNode(0, GiB)], { resources: [node('devices', [], [node('uart', [prop.string('device-type', 'platform'), prop.string('device-name', long)])])] }));
  const dev = findNode(await poolTree(sim), '/resources/devices')!.children[0]!;
  t.equal(dev.name, long.slice(0, 31));
  t.equal(Buffer.from(getProperty(dev, 'device-name')!.value).toString('latin1'), `${long.slice(0, 31)}\0`);
  // dts.c cuts the requested name the same way, so asking with the full name finds it
  const create = instances([node('instance-create', [prop.string('instance-name', 'a')], [node('resources', [], [node('devices', [], [node('p', [prop.string('device-type', 'platform'), prop.string('device-name', long)])])])])]);
  const made = await apply(sim, create);
  t.equal(made.status, 'applied');
  t.match(made.log, /Transferred 1 platform devices from root to instance 1 \(a\), root pool remaining: 0 devices/);
});
