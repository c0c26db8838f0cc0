// lib/topology: the strict parsers, and readTopology over a fake System serving fixed files for
// the hosts the library meets (x86 with SMT, arm64 with a device tree, arm64 with ACPI, riscv,
// a container without sysfs), plus one read-only run over this machine's LinuxSystem.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { systemError } from '../../lib/errors';
import { parseCpuinfo } from '../../lib/kernfs';
import { LinuxSystem } from '../../lib/system/linux';
import type { System } from '../../lib/system/system';
import {
  type HostTopology,
  cpusOnNode,
  decodeCpuReg,
  detectArch,
  logicalToPhysical,
  parseCpuList,
  parseCpuinfoBlocks,
  parseMadtGicc,
  parseMeminfoTotal,
  parseNodeMeminfoTotal,
  parseSysfsInt,
  physicalToLogical,
  readTopology,
  wholeCores,
} from '../../lib/topology';

const NO_SUPPORT = { code: 'ERR_MK_NO_SUPPORT' };
const CPU = '/sys/devices/system/cpu';
const NODE = '/sys/devices/system/node';
const KiB = 1024n;

type Content = string | Buffer | Error;

/**
 * A System serving `files` read-only: a key ending in '/' is an (empty) directory, an Error value
 * is thrown by the read. Directories are the prefixes of the keys. Every other method throws.
 */
function fakeSystem(files: Record<string, Content>): System {
  const children = (dir: string): string[] | undefined => {
    const names = new Set<string>();
    for (const key of Object.keys(files)) {
      if (key.startsWith(`${dir}/`) && key.length > dir.length + 1) names.add(key.slice(dir.length + 1).split('/')[0]!);
    }
    return names.size > 0 || Object.hasOwn(files, `${dir}/`) ? [...names] : undefined;
  };
  const unused = () => Promise.reject(new Error('not used by readTopology'));
  return {
    kind: 'linux',
    readFile: async (path) => {
      const v = files[path];
      if (v instanceof Error) throw v;
      if (v !== undefined && !path.endsWith('/')) return Buffer.from(v);
      throw systemError(children(path) ? 'EISDIR' : 'ENOENT', 'open', path);
    },
    readdir: async (path) => {
      const v = files[path];
      if (v instanceof Error) throw v;
      const names = children(path);
      if (names) return names;
      throw systemError(files[path] !== undefined ? 'ENOTDIR' : 'ENOENT', 'scandir', path);
    },
    writeFile: unused,
    createExclusive: unused,
    unlink: unused,
    mkdir: unused,
    rmdir: unused,
    stat: unused,
    openDevice: unused,
    openKernelLog: unused,
    openImage: unused,
    openImageBytes: unused,
    closeImage: unused,
    kexecFileLoad: unused,
    reboot: unused,
    mountMultikernel: unused,
    umountMultikernel: unused,
    lock: unused,
    vsockConnect: unused,
    vsockListen: unused,
    notify: unused,
  };
}

const u32 = (...cells: number[]) => {
  const b = Buffer.alloc(cells.length * 4);
  cells.forEach((c, i) => b.writeUInt32BE(c, i * 4));
  return b;
};

/** x86 /proc/cpuinfo blocks as arch/x86/kernel/cpu/proc.c prints them (abridged) */
const x86Block = (processor: number, apicid: number | undefined, pkg: number, core: number) =>
  [
    `processor\t: ${processor}`,
    'vendor_id\t: GenuineIntel',
    'model name\t: Intel(R) Xeon(R) CPU',
    `physical id\t: ${pkg}`,
    'siblings\t: 4',
    `core id\t\t: ${core}`,
    'cpu cores\t: 2',
    ...(apicid === undefined ? [] : [`apicid\t\t: ${apicid}`, `initial apicid\t: ${apicid}`]),
    'flags\t\t: fpu vme de pse ht',
    'power management:',
    '',
    '',
  ].join('\n');
const arm64Block = (processor: number) => `processor\t: ${processor}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n`;
const riscvBlock = (processor: number, hart: number | string) => `processor\t: ${processor}\nhart\t\t: ${hart}\nisa\t\t: rv64imafdc_zicsr\nmmu\t\t: sv39\nuarch\t\t: sifive,u74-mc\n\n`;
const nodeMeminfo = (n: number, kb: number) => `Node ${n} MemTotal:       ${String(kb).padStart(8)} kB\nNode ${n} MemFree:        ${String(Math.floor(kb / 2)).padStart(8)} kB\nNode ${n} HugePages_Total:     0\n`;
const topologyFiles = (cpu: number, core: number, pkg: number | undefined, siblings: string | undefined, name = 'thread_siblings_list') => ({
  [`${CPU}/cpu${cpu}/topology/core_id`]: `${core}\n`,
  ...(pkg === undefined ? {} : { [`${CPU}/cpu${cpu}/topology/physical_package_id`]: `${pkg}\n` }),
  ...(siblings === undefined ? {} : { [`${CPU}/cpu${cpu}/topology/${name}`]: `${siblings}\n` }),
});

/** One package, two cores of two threads each: logical 0,2 and 1,3 share a core; CPU 4 is offline. */
const X86_SMT: Record<string, Content> = {
  '/proc/cpuinfo': x86Block(0, 0, 0, 0) + x86Block(1, 2, 0, 1) + x86Block(2, 1, 0, 0) + x86Block(3, 3, 0, 1),
  [`${CPU}/present`]: '0-4\n',
  [`${CPU}/online`]: '0-3\n',
  ...topologyFiles(0, 0, 0, '0,2'),
  ...topologyFiles(1, 1, 0, '1,3'),
  ...topologyFiles(2, 0, 0, '0,2'),
  ...topologyFiles(3, 1, undefined, '1,3', 'core_cpus_list'),
  [`${CPU}/cpu4/online`]: '0\n',
  [`${CPU}/cpu4/node0/`]: '',
  [`${NODE}/online`]: '0\n',
  [`${NODE}/node0/cpulist`]: '0-3\n',
  [`${NODE}/node0/meminfo`]: nodeMeminfo(0, 8087288),
};

t.test('parseCpuList: the kernel cpulist format, strictly', async (t) => {
  t.same(parseCpuList('0-3,8,10-11\n'), [0, 1, 2, 3, 8, 10, 11]);
  t.same(parseCpuList('0-3,8,10-11'), [0, 1, 2, 3, 8, 10, 11], 'the newline is optional');
  t.same(parseCpuList('\n'), [], 'an empty mask');
  t.same(parseCpuList(''), []);
  t.same(parseCpuList('5\n', 'x'), [5]);
  t.same(parseCpuList('0-0'), [0]);
  t.same(parseCpuList('65535'), [65535]);
  for (const bad of [' 0', '0 ', '0-', '-1', '3-1', '1,1', '2,1', '0-3,3', '01', '0x1', '1,,2', ',1', '1,', 'a', '65536', '0-65536', '0\n\n', '1 2', '0-3:1/2', '1234567']) {
    t.throws(() => parseCpuList(bad, '/sys/x'), { ...NO_SUPPORT, message: /^\/sys\/x: / }, JSON.stringify(bad));
  }
  t.throws(() => parseCpuList(`${[...Array(40).keys()].join(',')},x`), { message: /…" is not a list/ }, 'a long text is cut in the message');
  t.throws(() => parseCpuList('x'), { message: /^CPU list: / }, 'the default source');
});

t.test('parseSysfsInt', async (t) => {
  t.equal(parseSysfsInt('3\n', 's'), 3);
  t.equal(parseSysfsInt('-1\n', 's'), -1, 'physical_package_id of an arm64 ACPI host without PPTT');
  t.equal(parseSysfsInt('0', 's'), 0);
  for (const bad of ['', '\n', '3 ', '+3', '03', '1.5', '3\n\n', '--1', '0x3', '12345678901']) t.throws(() => parseSysfsInt(bad, 's'), NO_SUPPORT, JSON.stringify(bad));
});

t.test('meminfo parsers', async (t) => {
  const proc = 'MemTotal:       16337376 kB\nMemFree:         1234567 kB\nHugePages_Total:       0\nDirectMap1G(x):  1 kB\n';
  t.equal(parseMeminfoTotal(proc), 16337376n * KiB);
  t.throws(() => parseMeminfoTotal('MemFree: 1 kB\n'), { ...NO_SUPPORT, message: /^\/proc\/meminfo: .*no MemTotal/ });
  t.throws(() => parseMeminfoTotal('MemTotal: 1 kB\nMemTotal: 2 kB\n'), { message: /two MemTotal/ });
  t.throws(() => parseMeminfoTotal('MemTotal: 1\n'), { message: /without its kB unit/ });
  t.throws(() => parseMeminfoTotal('MemTotal 1 kB\n'), { message: /not "<name>: <number>\[ kB\]"/ });
  t.throws(() => parseMeminfoTotal('MemTotal: -1 kB\n', 'm'), { message: /^m: / });

  t.equal(parseNodeMeminfoTotal(nodeMeminfo(1, 4000), 1), 4000n * KiB);
  t.throws(() => parseNodeMeminfoTotal(nodeMeminfo(1, 4000), 0), { ...NO_SUPPORT, message: /^\/sys\/devices\/system\/node\/node0\/meminfo: .*not about node 0/ });
  t.throws(() => parseNodeMeminfoTotal('Node 0 MemFree: 1 kB\n', 0, 'n'), { message: /^n: .*no MemTotal/ });
  t.throws(() => parseNodeMeminfoTotal('Node 0 MemTotal 1 kB\n', 0), { message: /not "<name>/ });
});

t.test('parseCpuinfoBlocks and detectArch', async (t) => {
  const x86 = parseCpuinfoBlocks(x86Block(0, 0, 0, 0) + x86Block(1, 2, 0, 1));
  t.equal(x86.length, 2);
  t.equal(x86[1]!.get('apicid'), '2');
  t.equal(x86[0]!.get('power management'), '', 'a key without a value');
  t.equal(detectArch(x86), 'x86_64');
  t.equal(detectArch(parseCpuinfoBlocks(`${arm64Block(0)}Hardware\t: some board\n`)), 'arm64', 'a block without processor is skipped');
  t.equal(detectArch(parseCpuinfoBlocks(riscvBlock(0, 1))), 'riscv64');
  t.equal(detectArch(parseCpuinfoBlocks('processor\t: 0\nisa\t: rv64\n\n')), 'riscv64');
  t.equal(detectArch(parseCpuinfoBlocks('processor\t: 0\napicid\t: 0\n\n')), 'x86_64');
  t.equal(detectArch(parseCpuinfoBlocks('processor\t: 0\ncpu\t\t: POWER9\n\n')), 'unknown');
  t.equal(detectArch([]), 'unknown');
  t.throws(() => parseCpuinfoBlocks('processor\t: x\n\n'), { ...NO_SUPPORT, message: /^\/proc\/cpuinfo: "x" is not a processor number/ });
  t.throws(() => parseCpuinfoBlocks('processor : 1\n\nprocessor : 1\n', 'c'), { message: /^c: "1" is the number of two processor blocks/ });
});

t.test('decodeCpuReg: a CPU node reg as of_get_cpu_hwid reads it', async (t) => {
  t.equal(decodeCpuReg(u32(0x101), 'r'), 0x101);
  t.equal(decodeCpuReg(u32(0x1, 0x10203), 'r'), 0x1_0001_0203, 'two cells: Aff3 in the first');
  t.equal(decodeCpuReg(u32(0, 0x100), 'r', 2), 0x100);
  t.equal(decodeCpuReg(u32(3, 4), 'r', 1), 3, 'the first thread of a multi-thread node');
  t.equal(decodeCpuReg(new Uint8Array(u32(9, 7)).subarray(4), 'r'), 7, 'a view into a larger buffer');
  for (const [bytes, cells] of [[Buffer.alloc(3), undefined], [Buffer.alloc(12), undefined], [Buffer.alloc(0), undefined], [Buffer.alloc(4), 2], [Buffer.alloc(12), 3], [Buffer.alloc(8), 0]] as const) {
    t.throws(() => decodeCpuReg(bytes, 'r', cells), { ...NO_SUPPORT, message: /^r: ".*" is not a CPU id of/ }, `${bytes.length} bytes, ${cells} cells`);
  }
});

/** An ACPI MADT: header, local APIC address and flags, then the subtables. */
function madt(...entries: Buffer[]): Buffer {
  const body = Buffer.concat(entries);
  const b = Buffer.alloc(44 + body.length);
  b.write('APIC', 0, 'latin1');
  b.writeUInt32LE(b.length, 4);
  b[8] = 5;
  body.copy(b, 44);
  return b;
}
/** a GICC subtable (ACPI 6.5 layout, 82 bytes) */
function gicc(uid: number, mpidr: number, flags = 1, length = 82): Buffer {
  const e = Buffer.alloc(length);
  e[0] = 0x0b;
  e[1] = length;
  e.writeUInt32LE(uid, 4);
  e.writeUInt32LE(uid, 8);
  e.writeUInt32LE(flags, 12);
  if (length >= 76) e.writeBigUInt64LE(BigInt(mpidr), 68);
  return e;
}
const GICD = Buffer.from([0x0c, 24, ...Array(22).fill(0)]);

t.test('parseMadtGicc', async (t) => {
  const table = madt(GICD, gicc(0, 0x0), gicc(1, 0xdead, 0), gicc(1, 0x10000), gicc(2, 0x20000, 0x8, 80), gicc(2, 0xbad), gicc(3, 0x30000, 1, 76));
  t.same([...parseMadtGicc(table)], [[0, 0], [1, 0x10000], [2, 0x20000], [3, 0x30000]], 'disabled entries skipped, the first usable entry of a UID wins, online-capable counts, 76..82 bytes');
  t.same([...parseMadtGicc(madt())], [], 'no subtables');
  const bad = (b: Buffer, why: RegExp, label: string) => t.throws(() => parseMadtGicc(b, 'APIC'), { ...NO_SUPPORT, message: why }, label);
  bad(Buffer.alloc(43), /^APIC is not an ACPI MADT the library reads: no "APIC" table header/, 'short');
  bad(Buffer.concat([Buffer.from('FACP'), Buffer.alloc(40)]), /no "APIC"/, 'another table');
  const long = madt(gicc(0, 0));
  long.writeUInt32LE(long.length + 1, 4);
  bad(long, /length field says 127 bytes, the file has 126/, 'length past the file');
  const tiny = madt();
  tiny.writeUInt32LE(40, 4);
  bad(tiny, /length field says 40/, 'length below the header');
  const half = Buffer.concat([madt(), Buffer.from([0x0b])]);
  half.writeUInt32LE(45, 4);
  bad(half, /subtable header at byte 44 runs past the end/, 'one byte left');
  bad(madt(Buffer.from([0x0b, 1])), /subtable at byte 44 has length 1/, 'a subtable that would never end');
  const cut = madt(gicc(0, 0));
  cut.writeUInt32LE(cut.length - 1, 4);
  bad(cut, /subtable at byte 44 has length 82/, 'a subtable past the table length');
  bad(madt(gicc(0, 0, 1, 40)), /GICC subtable at byte 44 is 40 bytes, too short to hold an MPIDR/, 'ACPI 5.0 GICC');
  t.throws(() => parseMadtGicc(Buffer.alloc(0)), { message: /^\/sys\/firmware\/acpi\/tables\/APIC is not/ }, 'the default source');
});

t.test('x86 with SMT: APIC ids from /proc/cpuinfo, siblings from sysfs, an offline CPU', async (t) => {
  const topo = await readTopology(fakeSystem(X86_SMT));
  t.equal(topo.arch, 'x86_64');
  t.same(topo.cpus, [
    { cpu: 0, physicalId: 0, online: true, boot: true, package: 0, core: 0, siblings: [0, 2], node: 0 },
    { cpu: 1, physicalId: 2, online: true, boot: false, package: 0, core: 1, siblings: [1, 3], node: 0 },
    { cpu: 2, physicalId: 1, online: true, boot: false, package: 0, core: 0, siblings: [0, 2], node: 0 },
    { cpu: 3, physicalId: 3, online: true, boot: false, package: -1, core: 1, siblings: [1, 3], node: 0 },
    { cpu: 4, physicalId: -1, online: false, boot: false, package: -1, core: -1, siblings: [4], node: 0 },
  ]);
  t.same(topo.nodes, [{ id: 0, cpus: [0, 1, 2, 3, 4], memoryBytes: 8087288n * KiB }]);
  t.equal(topo.smt, true);
  t.same(topo.notes, ['offline CPU 4: physical id unknown (-1)', 'offline CPU 4: no topology while offline: package and core unknown (-1)']);
  t.same(wholeCores(topo, [0, 1, 2, 3]), [[2, 3]], "the boot CPU's core is never whole");
  t.same(wholeCores(topo, [2, 99]), [], 'half a core, and an id the host does not have');
  t.same(wholeCores(topo, new Set([3, 2])), [[2, 3]], 'any iterable, any order');
  t.same([...physicalToLogical(topo)], [[0, 0], [2, 1], [1, 2], [3, 3]], 'the offline CPU has no known id');
  t.same([...logicalToPhysical(topo)], [[0, 0], [1, 2], [2, 1], [3, 3]]);
  t.same(cpusOnNode(topo, 0).map((c) => c.cpu), [0, 1, 2, 3, 4]);
  t.same(cpusOnNode(topo, 1), []);
});

t.test('arm64 with a device tree: MPIDRs from cpuN/of_node/reg, several nodes', async (t) => {
  const mpidrs = [0x0, 0x1, 0x100, 0x101, 0x1_0000_0000];
  const files: Record<string, Content> = {
    '/proc/cpuinfo': [0, 1, 2, 3].map(arm64Block).join(''),
    [`${CPU}/present`]: '0-4\n',
    [`${CPU}/online`]: '0-3\n',
    '/sys/firmware/devicetree/base/cpus/#address-cells': u32(2),
    ...Object.fromEntries(mpidrs.map((m, i) => [`${CPU}/cpu${i}/of_node/reg`, u32(Math.floor(m / 2 ** 32), m % 2 ** 32)])),
    ...Object.assign({}, ...[0, 1, 2, 3].map((i) => topologyFiles(i, i, -1, `${i}`))),
    [`${CPU}/cpu4/node1/`]: '',
    [`${NODE}/node0/cpulist`]: '0-1\n',
    [`${NODE}/node0/meminfo`]: nodeMeminfo(0, 1000),
    [`${NODE}/node1/cpulist`]: '2-3\n',
    [`${NODE}/node1/meminfo`]: nodeMeminfo(1, 2000),
    [`${NODE}/node2/cpulist`]: '\n',
    [`${NODE}/node2/meminfo`]: nodeMeminfo(2, 3000),
    [`${NODE}/node10/`]: '',
    [`${NODE}/node10/cpulist`]: '\n',
    [`${NODE}/node10/meminfo`]: nodeMeminfo(10, 10),
  };
  const topo = await readTopology(fakeSystem(files));
  t.equal(topo.arch, 'arm64');
  t.same(topo.cpus.map((c) => [c.cpu, c.physicalId, c.package, c.core, c.node, c.online]), [
    [0, 0x0, -1, 0, 0, true],
    [1, 0x1, -1, 1, 0, true],
    [2, 0x100, -1, 2, 1, true],
    [3, 0x101, -1, 3, 1, true],
    [4, 0x1_0000_0000, -1, -1, 1, false],
  ], 'the offline CPU keeps its device-tree id and its node link');
  t.same(topo.nodes.map((n) => [n.id, n.cpus, n.memoryBytes]), [[0, [0, 1], 1000n * KiB], [1, [2, 3, 4], 2000n * KiB], [2, [], 3000n * KiB], [10, [], 10n * KiB]], 'nodes in numeric order, memory-only ones too');
  t.equal(topo.smt, false);
  t.same(topo.notes, ['offline CPU 4: no topology while offline: package and core unknown (-1)']);
  t.same(wholeCores(topo, mpidrs), [[0x1], [0x100], [0x101]], 'one thread per core: every online non-boot CPU is a whole core');

  for (const cells of [u32(3), u32(0, 2)]) {
    const badCells = { ...files, '/sys/firmware/devicetree/base/cpus/#address-cells': cells };
    await t.rejects(readTopology(fakeSystem(badCells)), { ...NO_SUPPORT, message: /#address-cells: "0+[23]" is not an #address-cells of 1 or 2/ }, 'a /cpus #address-cells an arm64 tree does not have');
  }
  const twoNodes = { ...files, [`${NODE}/node2/cpulist`]: '3\n' };
  await t.rejects(readTopology(fakeSystem(twoNodes)), { ...NO_SUPPORT, message: /^CPU 3 is listed on NUMA nodes 1 and 2/ });
  const sameId = { ...files, [`${CPU}/cpu1/of_node/reg`]: u32(0, 0) };
  await t.rejects(readTopology(fakeSystem(sameId)), { ...NO_SUPPORT, message: /^CPUs 0 and 1 show the same physical id 0/ });
  const lost: Record<string, Content> = { ...files, [`${CPU}/cpu4/nodes/`]: '' };
  delete lost[`${CPU}/cpu4/node1/`];
  const unplaced = await readTopology(fakeSystem(lost));
  t.equal(unplaced.cpus[4]!.node, -1, 'no node link: node unknown');
  t.match(unplaced.notes, [/./, /^CPU 4: in no node's cpulist and without one .*nodeM link, NUMA node unknown \(-1\)$/]);
  delete lost[`${CPU}/cpu4/nodes/`];
  delete lost[`${CPU}/cpu4/of_node/reg`];
  t.same((await readTopology(fakeSystem(lost))).cpus[4], { cpu: 4, physicalId: -1, online: false, boot: false, package: -1, core: -1, siblings: [4], node: -1 }, 'no cpu4 directory at all');
});

t.test('arm64 with ACPI: MPIDRs from the MADT GICC of each CPU’s ACPI processor UID', async (t) => {
  const table = madt(GICD, gicc(0, 0x0), gicc(1, 0xdead, 0), gicc(1, 0x10000), gicc(2, 0x20000), gicc(2, 0xbad));
  const files: Record<string, Content> = {
    '/proc/cpuinfo': [0, 1, 2].map(arm64Block).join(''),
    [`${CPU}/present`]: '0-2\n',
    [`${CPU}/online`]: '0-2\n',
    [`${CPU}/cpu0/firmware_node/uid`]: '0\n',
    [`${CPU}/cpu1/firmware_node/uid`]: '1\n',
    [`${CPU}/cpu2/firmware_node/uid`]: '2\n',
    ...Object.assign({}, ...[0, 1, 2].map((i) => topologyFiles(i, i, 0, `${i}`))),
    '/sys/firmware/acpi/tables/APIC': table,
    [`${NODE}/`]: '',
    '/proc/meminfo': 'MemTotal:        4000000 kB\n',
  };
  const topo = await readTopology(fakeSystem(files));
  t.same(topo.cpus.map((c) => c.physicalId), [0x0, 0x10000, 0x20000]);
  t.same(topo.nodes, [{ id: 0, cpus: [0, 1, 2], memoryBytes: 4000000n * KiB }]);
  t.match(topo.notes, [/^physical ids \(MPIDR\) from the ACPI MADT/, /^no NUMA nodes under \/sys\/devices\/system\/node .* with the memory of \/proc\/meminfo$/]);

  const asUser = { ...files, '/sys/firmware/acpi/tables/APIC': systemError('EACCES', 'open', '/sys/firmware/acpi/tables/APIC') };
  await t.rejects(readTopology(fakeSystem(asUser)), {
    ...NO_SUPPORT,
    message: /^cannot determine the physical id of online CPU 0 \(arm64\).*: no \/sys\/devices\/system\/cpu\/cpu0\/of_node\/reg \(no device tree\); \/sys\/firmware\/acpi\/tables\/APIC cannot be read \(EACCES: the ACPI tables are readable by root only\)$/,
    details: { cpu: 0, arch: 'arm64' },
  });
  const noTable = { ...files };
  delete noTable['/sys/firmware/acpi/tables/APIC'];
  await t.rejects(readTopology(fakeSystem(noTable)), { message: /APIC cannot be read \(ENOENT\)$/ });
  const broken = { ...files, '/sys/firmware/acpi/tables/APIC': new Error('the disk fell off') };
  await t.rejects(readTopology(fakeSystem(broken)), { message: 'the disk fell off' }, 'an error that is not an errno is passed on');
  const garbage = { ...files, '/sys/firmware/acpi/tables/APIC': Buffer.from('garbage') };
  await t.rejects(readTopology(fakeSystem(garbage)), { ...NO_SUPPORT, message: /is not an ACPI MADT/ });
  const unknownUid = { ...files, [`${CPU}/cpu2/firmware_node/uid`]: '7\n' };
  await t.rejects(readTopology(fakeSystem(unknownUid)), { message: /CPU 2 .*has no usable GICC entry for ACPI processor UID 7$/ });
  const badUid = { ...files, [`${CPU}/cpu1/firmware_node/uid`]: 'CPU1\n' };
  await t.rejects(readTopology(fakeSystem(badUid)), { ...NO_SUPPORT, message: /firmware_node\/uid: "CPU1\\n" is not a decimal ACPI processor UID/ });
  const noAcpi = { ...files };
  delete noAcpi[`${CPU}/cpu0/firmware_node/uid`];
  await t.rejects(readTopology(fakeSystem(noAcpi)), { message: /\(no device tree\); no \/sys\/devices\/system\/cpu\/cpu0\/firmware_node\/uid \(no ACPI processor device\)$/ });
});

t.test('riscv: hart ids from /proc/cpuinfo, an offline hart from its device-tree node', async (t) => {
  const files: Record<string, Content> = {
    '/proc/cpuinfo': riscvBlock(0, 1) + riscvBlock(1, 2) + riscvBlock(2, 4),
    [`${CPU}/present`]: '0-4\n',
    [`${CPU}/online`]: '0-2\n',
    [`${CPU}/cpu3/of_node/reg`]: u32(3),
    ...topologyFiles(0, 0, 0, '0'),
    ...topologyFiles(1, 1, 0, '1'),
    ...topologyFiles(2, 2, 0, undefined),
  };
  const topo = await readTopology(fakeSystem(files));
  t.equal(topo.arch, 'riscv64');
  t.same(topo.cpus[2]!.siblings, [2], 'no siblings list: the CPU alone');
  t.same(topo.cpus.map((c) => c.physicalId), [1, 2, 4, 3, -1], 'sparse harts (hart 0 is a monitor core), the offline one from its reg, one unknown');
  t.same(topo.nodes, [{ id: 0, cpus: [0, 1, 2, 3, 4], memoryBytes: 0n }]);
  t.match(topo.notes, [/^offline CPU 4: physical id unknown/, /^offline CPU 3-4: no topology/, /memory is unknown \(no \/proc\/meminfo\)$/]);
  await t.rejects(readTopology(fakeSystem({ ...files, '/proc/cpuinfo': riscvBlock(0, 1) + riscvBlock(1, 'x') + riscvBlock(2, 4) })), {
    ...NO_SUPPORT,
    message: /^\/proc\/cpuinfo \(processor 1\): "x" is not a decimal hart/,
  });
  await t.rejects(readTopology(fakeSystem({ ...files, '/proc/cpuinfo': riscvBlock(0, 1) + riscvBlock(1, '9999999999999999') + riscvBlock(2, 4) })), { message: /is not a decimal hart/ }, 'beyond 2^53');
});

t.test('a container without sysfs: /proc/cpuinfo alone, every CPU a core of its own', async (t) => {
  const topo = await readTopology(fakeSystem({ '/proc/cpuinfo': x86Block(0, 0, 0, 0) + x86Block(1, 6, 0, 3), '/proc/meminfo': 'MemTotal: 2048 kB\n' }));
  t.same(topo.cpus, [
    { cpu: 0, physicalId: 0, online: true, boot: true, package: -1, core: 0, siblings: [0], node: 0 },
    { cpu: 1, physicalId: 6, online: true, boot: false, package: -1, core: 1, siblings: [1], node: 0 },
  ]);
  t.same(topo.nodes, [{ id: 0, cpus: [0, 1], memoryBytes: 2048n * KiB }]);
  t.equal(topo.smt, false);
  t.match(topo.notes, [
    /^no \/sys\/devices\/system\/cpu\/present: the present CPUs are taken to be those \/proc\/cpuinfo lists$/,
    /^online CPU 0-1: no \/sys\/devices\/system\/cpu\/cpuN\/topology \(a container, or an old kernel\): each is taken as a core of its own/,
    /^no NUMA nodes/,
  ]);
  const onlineOnly = await readTopology(fakeSystem({ '/proc/cpuinfo': x86Block(0, 0, 0, 0), [`${CPU}/present`]: '0\n', [`${NODE}/online`]: '0\n' }));
  t.match(onlineOnly.notes[0], /^no \/sys\/devices\/system\/cpu\/online: the online CPUs are taken to be those/);
  t.match(onlineOnly.notes.at(-1), /^no NUMA nodes/, 'a node directory without nodeN entries');
});

t.test('what readTopology refuses to guess', async (t) => {
  await t.rejects(readTopology(fakeSystem({})), { ...NO_SUPPORT, message: /^cannot read \/proc\/cpuinfo: ENOENT/ });
  await t.rejects(readTopology(fakeSystem({ '/proc/cpuinfo': 'processor\t: 0\ncpu\t\t: POWER9\n\n' })), {
    ...NO_SUPPORT,
    message: /online CPU 0 \(unknown\).*: the architecture is not one of x86_64, arm64, riscv64/,
  });
  const lxcfs = { ...X86_SMT, '/proc/cpuinfo': x86Block(0, 0, 0, 0) + x86Block(1, 2, 0, 1) };
  await t.rejects(readTopology(fakeSystem(lxcfs)), { ...NO_SUPPORT, message: /online CPU 2 \(x86_64\).*: \/proc\/cpuinfo has no block for it/ }, 'a /proc/cpuinfo that shows fewer CPUs than sysfs');
  const noApic = { ...X86_SMT, '/proc/cpuinfo': x86Block(0, 0, 0, 0) + x86Block(1, undefined, 0, 1) + x86Block(2, 1, 0, 0) + x86Block(3, 3, 0, 1) };
  await t.rejects(readTopology(fakeSystem(noApic)), { message: /online CPU 1 .*: its \/proc\/cpuinfo block has no apicid field$/ });
  const badApic = { ...X86_SMT, '/proc/cpuinfo': x86Block(0, 0, 0, 0).replace('apicid\t\t: 0', 'apicid\t\t: 0x0') };
  await t.rejects(readTopology(fakeSystem(badApic)), { message: /"0x0" is not a decimal apicid/ });
  const notSelf = { ...X86_SMT, [`${CPU}/cpu1/topology/thread_siblings_list`]: '3\n' };
  await t.rejects(readTopology(fakeSystem(notSelf)), { ...NO_SUPPORT, message: /thread_siblings_list: "3\\n" does not name CPU 1 itself/ });
  const badCore = { ...X86_SMT, [`${CPU}/cpu1/topology/core_id`]: 'one\n' };
  await t.rejects(readTopology(fakeSystem(badCore)), { message: /core_id: "one\\n" is not a decimal integer/ });
  const eio = { ...X86_SMT, [`${CPU}/cpu2/topology/core_id`]: systemError('EIO', 'read', `${CPU}/cpu2/topology/core_id`) };
  await t.rejects(readTopology(fakeSystem(eio)), { code: 'EIO' }, 'errors other than a missing file are passed on');
  const hidden = { ...X86_SMT, [NODE]: systemError('EACCES', 'scandir', NODE) };
  await t.rejects(readTopology(fakeSystem(hidden)), { code: 'EACCES' });
  const badMask = { ...X86_SMT, [`${CPU}/online`]: '0-3,\n' };
  await t.rejects(readTopology(fakeSystem(badMask)), { ...NO_SUPPORT, message: /^\/sys\/devices\/system\/cpu\/online: / });
  const noMeminfo = { ...X86_SMT };
  delete noMeminfo[`${NODE}/node0/meminfo`];
  await t.rejects(readTopology(fakeSystem(noMeminfo)), { code: 'ENOENT' }, 'a node directory without meminfo is not a kernel this reads');
});

t.test('wholeCores takes siblings transitively and leaves out what cannot join a pool', async (t) => {
  const cpu = (n: number, siblings: number[], more: Partial<HostTopology['cpus'][number]> = {}) => ({ cpu: n, physicalId: 100 + n, online: true, boot: n === 0, package: 0, core: n, siblings, node: 0, ...more });
  const topo: HostTopology = {
    arch: 'x86_64',
    cpus: [cpu(0, [0]), cpu(1, [1, 2]), cpu(2, [2, 3]), cpu(3, [3]), cpu(4, [4, 9]), cpu(5, [5], { online: false }), cpu(6, [6, 7]), cpu(7, [6, 7])],
    nodes: [],
    smt: true,
    notes: [],
  };
  t.same(wholeCores(topo, [100, 101, 102, 103, 104, 105, 106, 107]), [[101, 102, 103], [106, 107]], '1-2-3 chained; 4 has a sibling the host lacks; 5 is offline; the boot CPU alone is never offered');
  t.same(wholeCores(topo, [101, 102]), [], 'CPU 3 is missing');
});

t.test("readTopology over this machine's LinuxSystem (read-only)", async (t) => {
  if (!fs.existsSync('/sys/devices/system/cpu')) {
    t.plan(0, 'this machine has no /sys/devices/system/cpu');
    return;
  }
  const cpuinfo = parseCpuinfo(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  let topo: HostTopology;
  try {
    topo = await readTopology(new LinuxSystem());
  } catch (e) {
    // an arm64 ACPI host read by a non-root user: the MADT is root's
    t.match(e, { code: 'ERR_MK_NO_SUPPORT', message: /root/ }, `this host does not show its physical CPU ids to this process: ${(e as Error).message}`);
    return;
  }
  t.comment(`${topo.arch}, ${topo.cpus.length} CPUs, ${topo.nodes.length} node(s), smt ${topo.smt}${topo.notes.length ? `; ${topo.notes.join('; ')}` : ''}`);
  const online = topo.cpus.filter((c) => c.online);
  t.equal(online.length, os.cpus().length, 'as many online CPUs as os.cpus()');
  t.same(online.map((c) => c.cpu), cpuinfo.map((c) => c.processor), 'the CPUs /proc/cpuinfo lists');
  if (topo.arch === 'x86_64') t.same(online.map((c) => c.physicalId), cpuinfo.map((c) => c.apicId), 'the apicid of each');
  t.ok(topo.cpus[0]!.boot && topo.cpus.filter((c) => c.boot).length === 1, 'one boot CPU, logical 0');
  for (const c of online) t.ok(c.siblings.includes(c.cpu), `CPU ${c.cpu} is among its siblings`);
  t.ok(topo.nodes.length > 0 && topo.nodes.every((n) => n.memoryBytes > 0n), 'every node has memory');
  const known = topo.cpus.filter((c) => c.physicalId >= 0);
  t.equal(new Set(known.map((c) => c.physicalId)).size, known.length, 'distinct physical ids');
});
