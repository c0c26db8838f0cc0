/**
 * The simulated host's CPU and NUMA files in sysfs, and on arm64 the /cpus of its device tree,
 * rendered from the topology and the pool (docs/kernel-interface.md, "Host topology"):
 *
 *   /sys/devices/system/cpu/{online,present,possible}   cpulists of logical numbers
 *   /sys/devices/system/cpu/cpuN/                      every CPU of the topology (CPU devices stay
 *                                                      registered when they go offline or to the pool)
 *     online          "1\n" or "0\n"; read-only here (mode 0444: the simulator has no CPU hotplug
 *                     through sysfs). x86 has none for cpu0 (not hotpluggable since Linux 6.5).
 *     topology/       online host CPUs only (drivers/base/topology.c drops it while a CPU is down):
 *                     core_id, physical_package_id, thread_siblings_list, core_cpus_list
 *     nodeM           link to /sys/devices/system/node/nodeM (drivers/base/node.c)
 *     of_node         arm64: link to the CPU's device-tree node (drivers/base/core.c)
 *   /sys/devices/system/node/{online,possible,has_cpu,has_memory}, nodeN/{cpulist,meminfo}
 *   /sys/firmware/devicetree/base (/proc/device-tree links to it), arm64 only: /cpus with one
 *     cpu@<MPIDR hex> node per CPU whose `reg` is the MPIDR in #address-cells cells
 */
import { cpuList, hostCpus } from './render';
import { cpuCore, cpuPackage, type SimCpu, type SimState } from './state';

export type SysfsNode =
  | { kind: 'dir'; entries: () => string[]; symlink?: boolean }
  | { kind: 'file'; mode: number; size: number; read: () => Buffer };

const CPU = '/sys/devices/system/cpu';
const NODE = '/sys/devices/system/node';
const DT = '/sys/firmware/devicetree/base';
const PROC_DT = '/proc/device-tree';

const dir = (entries: string[]): SysfsNode => ({ kind: 'dir', entries: () => entries.slice() });
/** a sysfs attribute: st_size is always 4096 */
const attr = (text: () => string): SysfsNode => ({ kind: 'file', mode: 0o444, size: 4096, read: () => Buffer.from(text()) });
/** a device-tree property: st_size is its length */
const dtProp = (value: Buffer): SysfsNode => ({ kind: 'file', mode: 0o444, size: value.length, read: () => Buffer.from(value) });
const u32 = (...cells: number[]): Buffer => {
  const b = Buffer.alloc(cells.length * 4);
  cells.forEach((c, i) => b.writeUInt32BE(c, i * 4));
  return b;
};
const str = (s: string): Buffer => Buffer.from(`${s}\0`);
const NUMBER = '(0|[1-9]\\d*)';

/** the device-tree node name of a CPU: cpu@<reg in hex>, as arm64 trees name them */
const dtName = (c: SimCpu): string => `cpu@${c.apicId.toString(16)}`;

/**
 * #address-cells of /cpus: 2 when an MPIDR has Aff3 (bits 39:32) set, else 1 — QEMU virt's rule
 * (hw/arm/virt.c fdt_add_cpu_nodes); the arm cpus binding allows both.
 */
const dtCells = (s: SimState): number => (s.topology.cpus.some((c) => c.apicId >= 2 ** 32) ? 2 : 1);

/** Where a link in these trees points to, and whether `p` is the link itself. */
function resolveLink(s: SimState, arch: string, p: string): { target: string; exact: boolean } | undefined {
  if (arch === 'arm64' && (p === PROC_DT || p.startsWith(`${PROC_DT}/`))) return { target: DT + p.slice(PROC_DT.length), exact: p === PROC_DT };
  const m = new RegExp(`^${CPU}/cpu${NUMBER}/(of_node|node${NUMBER})(/.*)?$`).exec(p);
  const c = m && s.topology.cpus[Number(m[1])];
  if (!c) return undefined;
  const rest = m[4] ?? '';
  if (m[2] === 'of_node') return arch === 'arm64' ? { target: `${DT}/cpus/${dtName(c)}${rest}`, exact: rest === '' } : undefined;
  return Number(m[3]) === c.node ? { target: `${NODE}/node${c.node}${rest}`, exact: rest === '' } : undefined;
}

/** The file or directory at `p` (normalised), or undefined when these trees have none there. */
export function sysfsLookup(s: SimState, arch: 'x86_64' | 'arm64', p: string): SysfsNode | undefined {
  const link = resolveLink(s, arch, p);
  if (!link) return lookup(s, arch, p);
  const n = lookup(s, arch, link.target);
  return n?.kind === 'dir' && link.exact ? { ...n, symlink: true } : n;
}

function lookup(s: SimState, arch: 'x86_64' | 'arm64', p: string): SysfsNode | undefined {
  const cpus = s.topology.cpus;
  const nodes = [...Array(s.topology.numaNodes).keys()];
  const fixed: Record<string, () => SysfsNode> = {
    '/sys/devices/system': () => dir(['cpu', 'node']),
    [CPU]: () => dir([...cpus.map((_, i) => `cpu${i}`), 'online', 'possible', 'present']),
    [`${CPU}/online`]: () => attr(() => cpuList(hostCpus(s, true))),
    [`${CPU}/present`]: () => attr(() => cpuList(hostCpus(s, false))),
    [`${CPU}/possible`]: () => attr(() => cpuList(cpus.map((_, i) => i))),
    [NODE]: () => dir(['has_cpu', 'has_memory', 'online', 'possible', ...nodes.map((n) => `node${n}`)]),
    [`${NODE}/online`]: () => attr(() => cpuList(nodes)),
    [`${NODE}/possible`]: () => attr(() => cpuList(nodes)),
    [`${NODE}/has_memory`]: () => attr(() => cpuList(nodes)),
    [`${NODE}/has_cpu`]: () => attr(() => cpuList(nodes.filter((n) => hostCpus(s, true).some((i) => cpus[i]!.node === n)))),
  };
  if (Object.hasOwn(fixed, p)) return fixed[p]!();
  let m = new RegExp(`^${CPU}/cpu${NUMBER}(?:/(.+))?$`).exec(p);
  if (m) return cpuDir(s, arch, Number(m[1]), m[2]);
  m = new RegExp(`^${NODE}/node${NUMBER}(?:/(.+))?$`).exec(p);
  if (m) return nodeDir(s, Number(m[1]), m[2]);
  return arch === 'arm64' ? deviceTree(s, p) : undefined;
}

function cpuDir(s: SimState, arch: 'x86_64' | 'arm64', i: number, rest: string | undefined): SysfsNode | undefined {
  const cpus = s.topology.cpus;
  const c = cpus[i];
  if (!c) return undefined;
  const online = hostCpus(s, true);
  const isOnline = online.includes(i);
  const hasOnlineFile = !(arch === 'x86_64' && i === 0);
  if (rest === undefined) {
    return dir([...(hasOnlineFile ? ['online'] : []), ...(isOnline ? ['topology'] : []), `node${c.node}`, ...(arch === 'arm64' ? ['of_node'] : [])]);
  }
  if (rest === 'online' && hasOnlineFile) return attr(() => (isOnline ? '1\n' : '0\n'));
  if (!isOnline) return undefined;
  const pkg = cpuPackage(c);
  const core = cpuCore(c, i);
  const siblings = () => cpuList(online.filter((j) => cpuPackage(cpus[j]!) === pkg && cpuCore(cpus[j]!, j) === core));
  const topology = new Map<string, () => string>([
    ['core_id', () => `${core}\n`],
    ['physical_package_id', () => `${pkg}\n`],
    ['thread_siblings_list', siblings],
    ['core_cpus_list', siblings],
  ]);
  if (rest === 'topology') return dir([...topology.keys()]);
  const read = rest.startsWith('topology/') ? topology.get(rest.slice('topology/'.length)) : undefined;
  return read && attr(read);
}

/**
 * nodeN/meminfo in node_read_meminfo's layout (drivers/base/node.c), first lines only: MemTotal
 * is the node's share of RAM, MemFree drops by the pool chunks taken from the node.
 */
function nodeMeminfo(s: SimState, n: number): string {
  const total = Math.floor(s.topology.memoryBytes / s.topology.numaNodes);
  const pooled = (s.pool?.memory ?? []).filter((r) => r.node === n).reduce((a, r) => a + r.size, 0);
  const kb = (bytes: number) => String(Math.floor(bytes / 1024)).padStart(8);
  return [
    `Node ${n} MemTotal:       ${kb(total)} kB`,
    `Node ${n} MemFree:        ${kb(total - pooled)} kB`,
    `Node ${n} MemUsed:        ${kb(pooled)} kB`,
    '',
  ].join('\n');
}

function nodeDir(s: SimState, n: number, rest: string | undefined): SysfsNode | undefined {
  if (n >= s.topology.numaNodes) return undefined;
  if (rest === undefined) return dir(['cpulist', 'meminfo']);
  if (rest === 'cpulist') return attr(() => cpuList(hostCpus(s, true).filter((i) => s.topology.cpus[i]!.node === n)));
  if (rest === 'meminfo') return attr(() => nodeMeminfo(s, n));
  return undefined;
}

/** The arm64 host's device tree, /cpus only (a QEMU virt-like machine with Neoverse N1 CPUs). */
function deviceTree(s: SimState, p: string): SysfsNode | undefined {
  const cells = dtCells(s);
  const cpus = new Map(s.topology.cpus.map((c) => [dtName(c), c]));
  const fixed: Record<string, () => SysfsNode> = {
    '/sys/firmware': () => dir(['devicetree']),
    '/sys/firmware/devicetree': () => dir(['base']),
    [DT]: () => dir(['#address-cells', '#size-cells', 'compatible', 'cpus']),
    [`${DT}/#address-cells`]: () => dtProp(u32(2)),
    [`${DT}/#size-cells`]: () => dtProp(u32(2)),
    [`${DT}/compatible`]: () => dtProp(str('linux,dummy-virt')),
    [`${DT}/cpus`]: () => dir(['#address-cells', '#size-cells', 'name', ...cpus.keys()]),
    [`${DT}/cpus/#address-cells`]: () => dtProp(u32(cells)),
    [`${DT}/cpus/#size-cells`]: () => dtProp(u32(0)),
    [`${DT}/cpus/name`]: () => dtProp(str('cpus')),
  };
  if (Object.hasOwn(fixed, p)) return fixed[p]!();
  const m = new RegExp(`^${DT}/cpus/(cpu@[0-9a-f]+)(?:/([^/]+))?$`).exec(p);
  const c = m && cpus.get(m[1]!);
  if (!c) return undefined;
  const props = new Map<string, Buffer>([
    ['compatible', str('arm,neoverse-n1')],
    ['device_type', str('cpu')],
    ['enable-method', str('psci')],
    ['name', str('cpu')],
    ['reg', cells === 2 ? u32(Math.floor(c.apicId / 2 ** 32), c.apicId % 2 ** 32) : u32(c.apicId)],
  ]);
  if (m[2] === undefined) return dir([...props.keys()]);
  const value = props.get(m[2]);
  return value && dtProp(value);
}
