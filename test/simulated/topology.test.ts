// The simulated host's CPU and NUMA sysfs and arm64 device tree (lib/system/simulated/sysfs.ts),
// and lib/topology's readTopology over them: the default SMT host, CPUs that depart into the
// pool, offline CPUs on several nodes, arm64 MPIDRs, and states persisted by older versions.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { SimulatedSystem, type SimTopology } from '../../lib/system/simulated';
import { readTopology, wholeCores } from '../../lib/topology';
import { baseline, memoryNode } from '../contract/suite';
import { M, MiB } from './helpers';

const GiB = 1024 * MiB;
const CPU = '/sys/devices/system/cpu';
const NODE = '/sys/devices/system/node';
const DT = '/sys/firmware/devicetree/base';
const text = async (sim: SimulatedSystem, p: string) => (await sim.readFile(p)).toString();
const sorted = (a: string[]) => a.slice().sort();

function sim(t: Test, options: ConstructorParameters<typeof SimulatedSystem>[0] = {}): SimulatedSystem {
  const s = new SimulatedSystem(options);
  t.teardown(() => s.dispose());
  return s;
}

t.test('the default host: two packages of two cores with two threads, two nodes', async (t) => {
  const s = sim(t);
  const topo = await readTopology(s);
  t.equal(topo.arch, 'x86_64');
  t.same(
    topo.cpus.map((c) => [c.cpu, c.physicalId, c.package, c.core, c.siblings, c.node]),
    [
      [0, 0, 0, 0, [0, 1], 0],
      [1, 2, 0, 0, [0, 1], 0],
      [2, 4, 0, 1, [2, 3], 0],
      [3, 6, 0, 1, [2, 3], 0],
      [4, 8, 1, 0, [4, 5], 1],
      [5, 10, 1, 0, [4, 5], 1],
      [6, 12, 1, 1, [6, 7], 1],
      [7, 14, 1, 1, [6, 7], 1],
    ],
  );
  t.ok(topo.cpus.every((c) => c.online && c.boot === (c.cpu === 0)));
  t.same(topo.nodes, [{ id: 0, cpus: [0, 1, 2, 3], memoryBytes: 8n * BigInt(GiB) }, { id: 1, cpus: [4, 5, 6, 7], memoryBytes: 8n * BigInt(GiB) }]);
  t.equal(topo.smt, true);
  t.same(topo.notes, []);
  t.same(wholeCores(topo, topo.cpus.map((c) => c.physicalId)), [[4, 6], [8, 10], [12, 14]], "the boot CPU's core stays with the host");

  t.match(await text(s, '/proc/cpuinfo'), /^processor\t: 5\n[^]*^physical id\t: 1\nsiblings\t: 4\ncore id\t\t: 0\ncpu cores\t: 2\napicid\t\t: 10$/m);
  t.same(sorted(await s.readdir('/sys/devices/system')), ['cpu', 'node']);
  t.same(await s.stat(`${CPU}/cpu5`), { type: 'directory', mode: 0o755, size: 0, mtimeMs: 0 });
  t.same(sorted(await s.readdir(CPU)), ['cpu0', 'cpu1', 'cpu2', 'cpu3', 'cpu4', 'cpu5', 'cpu6', 'cpu7', 'online', 'possible', 'present']);
  t.equal(await text(s, `${CPU}/possible`), '0-7\n');
  t.same(sorted(await s.readdir(`${CPU}/cpu0`)), ['node0', 'topology'], 'x86: the boot CPU has no online file (not hotpluggable)');
  await t.rejects(s.readFile(`${CPU}/cpu0/online`), { code: 'ENOENT' });
  t.same(sorted(await s.readdir(`${CPU}/cpu5`)), ['node1', 'online', 'topology']);
  t.equal(await text(s, `${CPU}/cpu5/online`), '1\n');
  t.same(await s.stat(`${CPU}/cpu5/online`), { type: 'file', mode: 0o444, size: 4096, mtimeMs: 0 });
  await t.rejects(s.writeFile(`${CPU}/cpu5/online`, Buffer.from('0')), { code: 'EACCES' }, 'read-only: no CPU hotplug behind the kernel');
  t.same(sorted(await s.readdir(`${CPU}/cpu5/topology`)), ['core_cpus_list', 'core_id', 'physical_package_id', 'thread_siblings_list']);
  t.same(
    await Promise.all(['core_id', 'physical_package_id', 'thread_siblings_list', 'core_cpus_list'].map((f) => text(s, `${CPU}/cpu5/topology/${f}`))),
    ['0\n', '1\n', '4-5\n', '4-5\n'],
  );
  t.same(await s.stat(`${CPU}/cpu5/node1`), { type: 'symlink', mode: 0o777, size: 0, mtimeMs: 0 }, 'lstat of the node link');
  t.same(sorted(await s.readdir(`${CPU}/cpu5/node1`)), ['cpulist', 'meminfo'], 'followed by readdir');
  t.equal(await text(s, `${CPU}/cpu5/node1/cpulist`), '4-7\n');
  t.same(await s.stat(`${CPU}/cpu5/node1/cpulist`), { type: 'file', mode: 0o444, size: 4096, mtimeMs: 0 });

  t.same(sorted(await s.readdir(NODE)), ['has_cpu', 'has_memory', 'node0', 'node1', 'online', 'possible']);
  t.same(await Promise.all(['online', 'possible', 'has_memory', 'has_cpu'].map((f) => text(s, `${NODE}/${f}`))), ['0-1\n', '0-1\n', '0-1\n', '0-1\n']);
  t.equal(await text(s, `${NODE}/node0/meminfo`), 'Node 0 MemTotal:        8388608 kB\nNode 0 MemFree:         8388608 kB\nNode 0 MemUsed:               0 kB\n');

  for (const missing of [`${CPU}/cpu8`, `${CPU}/cpu01`, `${CPU}/cpu1/nope`, `${CPU}/cpu1/topology/nope`, `${CPU}/cpu1/node1`, `${CPU}/cpu9/node0`, `${CPU}/cpu1/of_node`, `${NODE}/node2`, `${NODE}/node0/nope`, '/proc/device-tree', '/sys/firmware', DT]) {
    await t.rejects(s.readFile(missing), { code: 'ENOENT' }, missing);
  }
});

t.test('CPUs that go to the pool leave the host: present, online, node masks, topology', async (t) => {
  const s = sim(t);
  await s.mountMultikernel();
  await s.writeFile(`${M}/device_tree`, baseline([4, 6], [memoryNode(0, GiB)]));
  const topo = await readTopology(s);
  t.same(topo.cpus.map((c) => c.cpu), [0, 1, 4, 5, 6, 7], 'logical 2 and 3 are no longer present');
  t.same(topo.nodes.map((n) => n.cpus), [[0, 1], [4, 5, 6, 7]]);
  t.same(topo.notes, []);
  t.same(wholeCores(topo, [4, 6, 8, 10, 12, 14]), [[8, 10], [12, 14]], 'ids the host no longer has are left out');
  t.same(sorted(await s.readdir(`${CPU}/cpu2`)), ['node0', 'online'], 'the CPU device stays registered, without topology');
  t.equal(await text(s, `${CPU}/cpu2/online`), '0\n');
  await t.rejects(s.readFile(`${CPU}/cpu2/topology/core_id`), { code: 'ENOENT' });
  t.equal(await text(s, `${NODE}/node0/cpulist`), '0-1\n');
  t.match(await text(s, `${NODE}/node0/meminfo`), /^Node 0 MemFree:         7340032 kB\nNode 0 MemUsed:         1048576 kB$/m, 'the pool chunk came from node 0');
  t.equal(await text(s, `${CPU}/present`), '0-1,4-7\n');
});

t.test('offline CPUs, a node whose only CPU is offline, packages and cores given', async (t) => {
  const topology: SimTopology = {
    cpus: [
      { apicId: 0, node: 0, package: 0, core: 0 },
      { apicId: 1, node: 0, package: 0, core: 0 },
      { apicId: 16, node: 1, package: 1, core: 8 },
      { apicId: 17, node: 1, package: 1, core: 8, online: false },
      { apicId: 32, node: 2, package: 2, core: 0, online: false },
    ],
    memoryBytes: 3 * GiB,
    numaNodes: 3,
  };
  const s = sim(t, { topology });
  const topo = await readTopology(s);
  t.same(
    topo.cpus.map((c) => [c.cpu, c.physicalId, c.online, c.package, c.core, c.siblings, c.node]),
    [
      [0, 0, true, 0, 0, [0, 1], 0],
      [1, 1, true, 0, 0, [0, 1], 0],
      [2, 16, true, 1, 8, [2], 1],
      [3, -1, false, -1, -1, [3], 1],
      [4, -1, false, -1, -1, [4], 2],
    ],
    'an offline thread is no sibling; offline CPUs show no APIC id and no topology, their node link does',
  );
  t.same(topo.notes, ['offline CPU 3-4: physical id unknown (-1)', 'offline CPU 3-4: no topology while offline: package and core unknown (-1)']);
  t.same(topo.nodes.map((n) => [n.id, n.cpus, n.memoryBytes]), [[0, [0, 1], BigInt(GiB)], [1, [2, 3], BigInt(GiB)], [2, [4], BigInt(GiB)]]);
  t.equal(topo.smt, true);
  t.same(wholeCores(topo, [1, 16, 17, 32]), [[16]], 'a core whose other thread is offline is whole for the kernel');
  t.equal(await text(s, `${NODE}/has_cpu`), '0-1\n');
  t.equal(await text(s, `${NODE}/node2/cpulist`), '\n');
  t.equal(await text(s, `${CPU}/cpu4/online`), '0\n');
  t.match(await text(s, '/proc/cpuinfo'), /^physical id\t: 1\nsiblings\t: 1\ncore id\t\t: 8\ncpu cores\t: 1\napicid\t\t: 16$/m);
});

t.test('arm64: the MPIDRs in the device tree, reached through cpuN/of_node', async (t) => {
  const topology: SimTopology = { cpus: [0x0, 0x1, 0x100, 0x101].map((apicId, i) => ({ apicId, node: i >> 1, online: i !== 3 })), memoryBytes: 2 * GiB, numaNodes: 2 };
  const s = sim(t, { arch: 'arm64', topology });
  const topo = await readTopology(s);
  t.equal(topo.arch, 'arm64');
  t.same(topo.cpus.map((c) => [c.cpu, c.physicalId, c.online, c.node]), [[0, 0x0, true, 0], [1, 0x1, true, 0], [2, 0x100, true, 1], [3, 0x101, false, 1]], 'the offline CPU keeps its id');
  t.same(topo.notes, ['offline CPU 3: no topology while offline: package and core unknown (-1)']);

  t.same(await s.stat('/proc/device-tree'), { type: 'symlink', mode: 0o777, size: 0, mtimeMs: 0 });
  t.same(sorted(await s.readdir('/proc/device-tree')), ['#address-cells', '#size-cells', 'compatible', 'cpus']);
  t.same(await s.readdir('/sys/firmware'), ['devicetree']);
  t.same(await s.readdir('/sys/firmware/devicetree'), ['base']);
  t.same(await s.readFile(`${DT}/#address-cells`), Buffer.from([0, 0, 0, 2]));
  t.same(await s.readFile(`${DT}/#size-cells`), Buffer.from([0, 0, 0, 2]));
  t.equal(await text(s, `${DT}/compatible`), 'linux,dummy-virt\0');
  t.same(sorted(await s.readdir('/proc/device-tree/cpus')), ['#address-cells', '#size-cells', 'cpu@0', 'cpu@1', 'cpu@100', 'cpu@101', 'name']);
  t.same(await s.readFile('/proc/device-tree/cpus/#address-cells'), Buffer.from([0, 0, 0, 1]), 'no Aff3: one cell');
  t.same(await s.readFile('/proc/device-tree/cpus/#size-cells'), Buffer.from([0, 0, 0, 0]));
  t.equal(await text(s, '/proc/device-tree/cpus/name'), 'cpus\0');
  t.same(sorted(await s.readdir('/proc/device-tree/cpus/cpu@100')), ['compatible', 'device_type', 'enable-method', 'name', 'reg']);
  t.same(await s.readFile('/proc/device-tree/cpus/cpu@100/reg'), Buffer.from([0, 0, 1, 0]));
  t.same(await s.stat('/proc/device-tree/cpus/cpu@100/reg'), { type: 'file', mode: 0o444, size: 4, mtimeMs: 0 }, 'a property is as long as its value');
  t.same(
    await Promise.all(['compatible', 'device_type', 'enable-method', 'name'].map((p) => text(s, `${DT}/cpus/cpu@100/${p}`))),
    ['arm,neoverse-n1\0', 'cpu\0', 'psci\0', 'cpu\0'],
  );
  t.same(await s.stat(`${CPU}/cpu2/of_node`), { type: 'symlink', mode: 0o777, size: 0, mtimeMs: 0 });
  t.same(await s.readFile(`${CPU}/cpu3/of_node/reg`), Buffer.from([0, 0, 1, 1]));
  t.same(sorted(await s.readdir(`${CPU}/cpu0`)), ['node0', 'of_node', 'online', 'topology'], 'arm64: the boot CPU has an online file');
  t.equal(await text(s, `${CPU}/cpu0/online`), '1\n');
  for (const missing of [`${DT}/cpus/cpu@2`, `${DT}/cpus/cpu@100/nope`, `${DT}/cpus/cpu@100/reg/x`, `${DT}/nope`, `${CPU}/cpu7/of_node`]) {
    await t.rejects(s.readFile(missing), { code: 'ENOENT' }, missing);
  }

  const aff3 = sim(t, { arch: 'arm64', topology: { cpus: [0x0, 0x1_0000_0100].map((apicId) => ({ apicId, node: 0 })), memoryBytes: GiB, numaNodes: 1 } });
  t.same(await aff3.readFile('/proc/device-tree/cpus/#address-cells'), Buffer.from([0, 0, 0, 2]), 'Aff3 in use: two cells');
  t.same(await aff3.readFile(`${CPU}/cpu1/of_node/reg`), Buffer.from([0, 0, 0, 1, 0, 0, 1, 0]));
  t.same(await aff3.readdir(`${DT}/cpus`), ['#address-cells', '#size-cells', 'name', 'cpu@0', 'cpu@100000100']);
  t.same((await readTopology(aff3)).cpus.map((c) => c.physicalId), [0x0, 0x1_0000_0100]);
});

t.test('a state saved before CPUs had packages and cores still loads: no SMT', async (t) => {
  const stateDir = path.join(t.testdir(), 'state');
  const old = sim(t, { stateDir, topology: { cpus: [0, 2, 4].map((apicId) => ({ apicId, node: 0 })), memoryBytes: 2 * GiB, numaNodes: 1 } });
  await old.notify('READY=1');
  const saved = JSON.parse(fs.readFileSync(path.join(stateDir, 'state.json'), 'utf8'));
  t.same(Object.keys(saved.topology.cpus[0]).sort(), ['apicId', 'node'], 'the CPUs as an older version wrote them');
  const later = sim(t, { stateDir });
  const topo = await readTopology(later);
  t.same(topo.cpus.map((c) => [c.cpu, c.package, c.core, c.siblings]), [[0, 0, 0, [0]], [1, 0, 1, [1]], [2, 0, 2, [2]]], 'package = node, core = logical number');
  t.equal(topo.smt, false);
});
