/**
 * Resource changes to a running instance (hotplug.c mk_send_*: the spawn acknowledges, or refuses
 * in its acknowledgement), instance-remove of a running one, and rmdir of instance transactions
 * (overlay.c mk_overlay_rmdir runs the inverse operations). docs/kernel-interface.md, "Per
 * operation" and "Rollback".
 */
import t from 'tap';
import { decodeFdt } from '../../lib/fdt/codec';
import { findNode, getProperty, node, prop } from '../../lib/fdt/tree';
import type { FdtNode } from '../../lib/fdt/types';
import type { SimulatedSystem } from '../../lib/system/simulated';
import { dtbo, fragment } from '../contract/suite';
import { M, MiB, overlay, setup } from './helpers';

const inst = (ops: FdtNode[]) => dtbo([fragment('0', '/instances/web', ops)]);
const res = (ops: FdtNode[]) => dtbo([fragment('0', '/resources', ops)]);
const cpu = (id: number) => node(`cpu@${id}`, [prop.u64('reg', id)]);
const pci = (id: string) => node('pci@0', [prop.string('pci-id', id)]);
const mem = (base: number, size: number) => node('memory@0', [prop.u64('reg', base, size)]);

async function apply(sim: SimulatedSystem, blob: Buffer): Promise<{ id: number; status: string; log: string }> {
  const before = (await sim.dmesg()).length;
  const { id, status } = await overlay(sim, blob);
  return { id, status, log: (await sim.dmesg()).slice(before).join('\n') };
}
async function rollback(sim: SimulatedSystem, id: number): Promise<string> {
  const before = (await sim.dmesg()).length;
  await sim.rmdir(`${M}/overlays/tx_${id}`);
  return (await sim.dmesg()).slice(before).join('\n');
}
const iomem = async (sim: SimulatedSystem) => (await sim.readFile('/proc/iomem')).toString();
const tree = async (sim: SimulatedSystem, path = `${M}/device_tree`) => decodeFdt(await sim.readFile(path)).root;
const u64s = (n: FdtNode | undefined, name: string): number[] => {
  const v = n && getProperty(n, name)?.value;
  if (!v) return [];
  const d = new DataView(v.buffer, v.byteOffset, v.byteLength);
  return Array.from({ length: v.length / 8 }, (_, i) => Number(d.getBigUint64(i * 8)));
};

t.test('a running instance: the spawn acknowledges or refuses each change', async (t) => {
  // web (id 1) runs on CPU 2 with 256 MiB at 0x40000000; the pool has CPUs 4 and 6 free
  const sim = await setup({ resourceAckTimeoutMs: 20 }, { start: true });
  t.teardown(() => sim.dispose());

  const busy = await apply(sim, dtbo([fragment('0', '/instances', [node('instance-remove', [prop.string('instance-name', 'web')])])]));
  t.equal(busy.status, 'failed', 'instance-remove of a running instance: EBUSY (kernfs.c mk_instance_destroy)');
  t.match(busy.log, /Cannot remove active instance 'web' \(ID: 1\)\. Instance must be stopped first\.\nOverlay tx\d+: Failed to remove instance 'web': -16\nFailed to apply overlay transaction \d+: -16/);

  const odd = await apply(sim, inst([node('memory-remove', [], [mem(0x40000000, 64 * MiB)])]));
  t.equal(odd.status, 'failed', 'memory-remove of a range not memory-block aligned: the spawn answers EINVAL');
  t.match(odd.log, /Overlay tx\d+: -memory 0x40000000-0x43ffffff \(64 MB\) from web\nFailed to send memory IPI: -22\nFailed to apply overlay transaction \d+: -22/);
  t.equal((await apply(sim, inst([node('memory-add', [], [mem(0, 128 * MiB)])]))).status, 'applied', 'hot-add of one memory block');
  t.match(await iomem(sim), /^    50000000-57ffffff : mk-instance-1-web-region-1$/m, 'a new region, first fit after the first one');
  const out = await apply(sim, inst([node('memory-remove', [], [mem(0x50000000, 128 * MiB)])]));
  t.equal(out.status, 'applied', 'hot-remove of that block');
  t.match(out.log, /Removed memory region 0x50000000-0x57ffffff \(128 MB\) from instance 1 \(web\)/);
  t.notMatch(await iomem(sim), /region-1/);

  const host = await apply(sim, inst([node('cpu-add', [], [cpu(8)])]));
  t.equal(host.status, 'failed', 'cpu-add of a CPU the pool does not hold free: EBUSY');
  t.match(host.log, /Overlay tx\d+: \+cpu 8 numa=-1 -> web\nMultikernel hotplug: CPU 8 is not in this kernel's pool\nFailed to move CPU 8: -16/);
  const notHeld = await apply(sim, inst([node('cpu-remove', [], [cpu(4)])]));
  t.equal(notHeld.status, 'failed', "cpu-remove of a CPU the spawn does not have: its mk_do_cpu_remove answers ENODEV");
  t.match(notHeld.log, /Overlay tx\d+: -cpu 4 numa=-1 from web\nFailed to move CPU 4: -19/);
  t.equal((await apply(sim, inst([node('cpu-remove', [], [cpu(2)])]))).status, 'applied', 'cpu-remove of its CPU');
  const resources = findNode(await tree(sim), '/resources');
  t.same(u64s(resources, 'cpus-available'), [4, 6, 2], 'the CPU is free again, at the end of the free set');
  t.same(u64s(findNode(await tree(sim, `${M}/instances/web/device_tree`), '/resources'), 'cpus'), []);

  t.equal((await apply(sim, res([node('device-add', [], [pci('0000:00:04.0')])]))).status, 'applied');
  const lend = await apply(sim, inst([node('device-add', [], [pci('0000:00:04.0')])]));
  t.equal(lend.status, 'applied', 'device-add of a free pool device');
  t.match(lend.log, /Overlay tx\d+: \+device 0000:00:04\.0 driver=none -> web\nTransferred PCI device 8086:100e@0000:00:04\.0 to instance 1/);
  t.ok(findNode(await tree(sim, `${M}/instances/web/device_tree`), '/pci@0/pci@4,0'));
  const absent = await apply(sim, inst([node('device-add', [], [pci('0000:00:05.0')])]));
  t.equal(absent.status, 'failed', 'device-add of a device the host did not let go of: the spawn answers ENODEV');
  t.match(absent.log, /Failed to move device 0000:00:05\.0: -19\nFailed to apply overlay transaction \d+: -19/);
  const stranger = await apply(sim, inst([node('device-remove', [], [pci('0000:00:05.0')])]));
  t.equal(stranger.status, 'failed', 'device-remove of a device it was not lent: ENODEV');
  t.match(stranger.log, /Failed to move device 0000:00:05\.0: -19/);
  const giveBack = await apply(sim, inst([node('device-remove', [], [pci('0000:00:04.0')])]));
  t.equal(giveBack.status, 'applied');
  t.match(giveBack.log, /Returned PCI device 8086:100e@0000:00:04\.0 from instance 1 to root/);
  t.ok(findNode(await tree(sim), '/pci@0/pci@4,0'), 'free in the pool again');
});

t.test('rmdir of instance transactions runs the inverse operations', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  // memory-add: the region goes where the pool has room (0x50000000); its undo removes reg exactly
  const add = await apply(sim, inst([node('memory-add', [], [mem(0x50000000, 64 * MiB)])]));
  t.equal(add.status, 'applied');
  t.match(await iomem(sim), /^    50000000-53ffffff : mk-instance-1-web-region-1$/m);
  t.match(await rollback(sim, add.id), new RegExp(`Rollback tx${add.id}: -memory 0x50000000-0x53ffffff \\(64 MB\\) numa=-1 from web\nRemoved memory region 0x50000000-0x53ffffff \\(64 MB\\) from instance 1 \\(web\\)\nOverlay transaction ${add.id} rolled back successfully`));
  t.notMatch(await iomem(sim), /region-1/, 'the region is gone');

  const again = await apply(sim, inst([node('memory-add', [], [mem(0x50000000, 64 * MiB)])]));
  const cut = await apply(sim, inst([node('memory-remove', [], [mem(0x50000000, 64 * MiB)])]));
  t.equal(cut.status, 'applied');
  t.notMatch(await iomem(sim), /region-1/);
  t.match(await rollback(sim, cut.id), new RegExp(`Rollback tx${cut.id}: \\+memory 0x50000000-0x53ffffff \\(64 MB\\) -> web\nAdded memory region 0x50000000-0x53ffffff \\(64 MB\\) to instance 1 \\(web\\)`));
  t.match(await iomem(sim), /^    50000000-53ffffff : mk-instance-1-web-region-1$/m, 'undoing a memory-remove adds a region of that size again');
  await rollback(sim, again.id);

  const free = await apply(sim, res([node('device-add', [], [pci('0000:00:04.0')])]));
  const lend = await apply(sim, inst([node('device-add', [], [pci('0000:00:04.0')])]));
  t.equal(lend.status, 'applied');
  t.match(await rollback(sim, lend.id), new RegExp(`Rollback tx${lend.id}: -device 0000:00:04\\.0 driver=none from web\nReturned PCI device 8086:100e@0000:00:04\\.0 from instance 1 to root`));
  t.ok(findNode(await tree(sim), '/pci@0/pci@4,0'), 'the device is free in the pool again');
  t.match(await rollback(sim, free.id), new RegExp(`Rollback tx${free.id}: -device 0000:00:04\\.0 from /resources\nMultikernel hotplug: Adding device 0000:00:04\\.0 driver=none flags=0x0\nMultikernel hotplug: Successfully configured device 0000:00:04\\.0`));
  t.equal(findNode(await tree(sim), '/pci@0'), undefined, 'and undoing the pool device-add gives it back to the host');
});
