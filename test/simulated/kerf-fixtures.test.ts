/**
 * Blobs written by kerf itself (shared/fixtures/kerf, README there) applied in order to a
 * simulated host like the one they were made against: CPUs with APIC ids 0 (boot), 2, 4, 6, 8,
 * RAM on NUMA node 0 beyond the host's own GiB, and the PCI function 0000:00:04.0. Each outcome is
 * the one the fixture README names, or the one the kernel sources give where kerf writes what
 * the newest kernel refuses (cited per step; docs/kernel-interface.md has the rules).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseInstance, parsePool } from '../../lib/model';
import { SimulatedSystem } from '../../lib/system/simulated';
import { lastTx, M, MiB } from './helpers';

const DIR = join(__dirname, '..', '..', '..', 'shared', 'fixtures', 'kerf');
const GiB = 1024 * MiB;
const fixture = (name: string): Buffer => readFileSync(join(DIR, name));

export const KERF_TOPOLOGY = {
  cpus: [0, 2, 4, 6, 8].map((apicId) => ({ apicId, node: 0 })),
  memoryBytes: 6 * GiB,
  numaNodes: 1,
  pciDevices: ['0000:00:04.0'],
};

if (!existsSync(DIR)) {
  t.test('kerf fixtures', { skip: `the kerf fixtures are not at ${DIR} (CI lays shared/ beside the checkout as ../shared)` }, () => undefined);
} else {
  t.test('kerf fixtures applied in order', async (t) => {
    const sim = new SimulatedSystem({ topology: KERF_TOPOLOGY });
    t.teardown(() => sim.dispose());
    await sim.mountMultikernel();
    const dmesg = async (): Promise<string> => (await sim.dmesg()).join('\n');
    const apply = async (name: string): Promise<string> => {
      const blob = fixture(name);
      t.equal(await sim.writeFile(`${M}/overlays/new`, blob), blob.length, `${name}: write() returns the full count`);
      const tx = await lastTx(sim);
      t.same(await sim.readFile(`${M}/overlays/tx_${tx.id}/dtbo`), blob, `${name}: tx dtbo is the blob as written`);
      return tx.status;
    };
    const pool = async () => parsePool(await sim.readFile(`${M}/device_tree`));
    const inst = async (name: string) => parseInstance(await sim.readFile(`${M}/instances/${name}/device_tree`));

    // kerf init --cpus 2,4,6,8 --memory 4GB: baseline accepted (baseline.c@16083690)
    const base = fixture('kerf-baseline.dtb');
    t.equal(await sim.writeFile(`${M}/device_tree`, base), base.length, 'baseline accepted');
    let p = await pool();
    t.ok(p.hasPool);
    t.same(p.cpus, [2, 4, 6, 8]);
    t.same(p.cpusAvailable, [2, 4, 6, 8]);
    t.same(p.memory, [{ name: 'memory@40000000', base: 0x40000000n, size: 4n * BigInt(GiB), numaNode: 0 }]);
    t.same(p.devices, []);
    t.match(await dmesg(), /Multikernel pool: added 0x0000000040000000 \(4096 MB\) on node 0/, 'the pool size in MB, not a 32-bit shift');

    // kerf create web --id 1 --cpus 4,6 --memory 512MB (cpu-affinity is read by no dts.c)
    t.equal(await apply('kerf-create.dtbo'), 'applied');
    let web = await inst('web');
    t.same({ id: web.id, cpus: web.cpus, base: web.memoryBase, bytes: web.memoryBytes }, { id: 1, cpus: [4, 6], base: 0x40000000n, bytes: 512n * BigInt(MiB) });

    // kerf update web --cpus 4,6,8
    t.equal(await apply('kerf-update-cpu.dtbo'), 'applied');
    web = await inst('web');
    t.same(web.cpus, [4, 6, 8]);

    // kerf update web --memory 1GB: a second range (mem.c mk_instance_add_memory_region takes the size)
    t.equal(await apply('kerf-update-memory.dtbo'), 'applied');
    web = await inst('web');
    t.equal(web.memoryBytes, BigInt(GiB), '1 GiB');
    t.match((await sim.readFile('/proc/iomem')).toString(), /40000000-5fffffff : mk-instance-1-web-region-0\n {4}60000000-7fffffff : mk-instance-1-web-region-1/, 'in two ranges');

    // kerf delete web: everything back in the pool (the CPUs back-to-front, core.c mk_instance_return_cpus)
    t.equal(await apply('kerf-delete.dtbo'), 'applied');
    t.same(await sim.readdir(`${M}/instances`), []);
    p = await pool();
    t.same(p.cpusAvailable, [2, 8, 6, 4]);
    t.same(p.cpus, [2, 8, 6, 4]);

    // kerf create webnuma --numa-nodes 0 --memory-policy local: numa-nodes picks the node
    // (dts.c mk_dt_parse_numa, first entry); cpu-affinity and memory-policy are read by no dts.c
    t.equal(await apply('kerf-create-numa.dtbo'), 'applied');
    const webnuma = await inst('webnuma');
    t.same({ id: webnuma.id, cpus: webnuma.cpus, base: webnuma.memoryBase, bytes: webnuma.memoryBytes }, { id: 3, cpus: [6], base: 0x40000000n, bytes: 256n * BigInt(MiB) });

    // kerf create webdev --devices nic0: device-names → EINVAL (dts.c@0a54b0b4 mk_dt_parse_devices)
    t.equal(await apply('kerf-create-devices.dtbo'), 'failed');
    t.match(await dmesg(), /device-names is not supported; assign devices with device-add\nFailed to parse device resources for 'webdev': -22\nFailed to parse resources for instance 'webdev': -22\nOverlay tx\d+: Failed to create instance 'webdev': -22\nFailed to apply overlay transaction \d+: -22/);
    t.notOk((await sim.readdir(`${M}/instances`)).includes('webdev'));

    // kerf update webnuma --devices 0000:00:04.0: the function is the host's, never pooled, so the
    // pool's device list was never set up (core.c@843ebe12 mk_instance_add_pci_device → EINVAL)
    t.equal(await apply('kerf-update-devices.dtbo'), 'failed');
    t.match(await dmesg(), /Overlay tx\d+: \+device 0000:00:04\.0 driver=none -> webnuma\nNo self instance or PCI devices not initialized\nFailed to move device 0000:00:04\.0: -22/);
    t.same((await inst('webnuma')).devices, []);

    // kerf update webnuma --memory 128MB: the tail of a region is not a region (mem.c@26ba325b
    // mk_instance_remove_memory_region matches base and size exactly → ENOENT)
    t.equal(await apply('kerf-update-memory-shrink.dtbo'), 'failed');
    t.match(await dmesg(), /Memory region 0x48000000-0x4fffffff not found in instance 3 \(webnuma\)\nFailed to send memory IPI: -2/);
    t.equal((await inst('webnuma')).memoryBytes, 256n * BigInt(MiB), 'the instance keeps its memory');
  });

  t.test('the same host with 0000:00:04.0 in the pool: kerf-update-devices applies', async (t) => {
    const sim = new SimulatedSystem({ topology: KERF_TOPOLOGY });
    t.teardown(() => sim.dispose());
    await sim.mountMultikernel();
    await sim.writeFile(`${M}/device_tree`, fixture('kerf-baseline.dtb'));
    const { dtbo, fragment } = await import('../contract/suite');
    const { node, prop } = await import('../../lib/fdt/tree');
    await sim.writeFile(`${M}/overlays/new`, dtbo([fragment('0', '/resources', [node('device-add', [], [node('pci@0', [prop.string('pci-id', '0000:00:04.0'), prop.string('alias', 'eth1')])])])]));
    t.equal((await lastTx(sim)).status, 'applied', 'pool device-add');
    let p = parsePool(await sim.readFile(`${M}/device_tree`));
    t.same(p.devices, [{ type: 'pci', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e, path: '/pci@0/pci@4,0', alias: 'eth1' }]);
    await sim.writeFile(`${M}/overlays/new`, fixture('kerf-create-numa.dtbo'));
    await sim.writeFile(`${M}/overlays/new`, fixture('kerf-update-devices.dtbo'));
    t.equal((await lastTx(sim)).status, 'applied');
    const webnuma = parseInstance(await sim.readFile(`${M}/instances/webnuma/device_tree`));
    t.same(webnuma.devices, [{ type: 'pci', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e, path: '/pci@0/pci@4,0', alias: 'eth1' }], 'parseInstance sees the device');
    p = parsePool(await sim.readFile(`${M}/device_tree`));
    t.same(p.devices, [], 'a lent device is not free in the pool');
  });
}
