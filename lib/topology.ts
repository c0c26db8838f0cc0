/**
 * The host's CPUs and NUMA nodes as the pool layer needs them: for every logical CPU the
 * physical id the multikernel trees take (x86 APIC id, arm64 MPIDR affinity, riscv hart id:
 * `arch_cpu_physical_id()` of arch/{x86,arm64,riscv}/include/asm/multikernel.h), whether it is
 * online, its package, core and SMT siblings, and its NUMA node; for every node its CPUs and
 * memory. Everything is read through a `System` (docs/kernel-interface.md, "Host topology").
 *
 * Where the ids come from:
 * - x86_64: `apicid` of /proc/cpuinfo (the kernel's x86_cpu_to_apicid).
 * - arm64: the `reg` of the CPU's device-tree node, `/sys/devices/system/cpu/cpuN/of_node/reg`
 *   (the link drivers/base/core.c makes for every device with a node; the value is
 *   cpu_logical_map(), which arch/arm64/kernel/smp.c reads from that `reg`). On an ACPI host there
 *   is no device tree and nothing under cpuN shows the MPIDR (`regs/identification/midr_el1` is
 *   MIDR, the part number): the id is the `arm_mpidr` of the MADT GICC entry whose ACPI processor
 *   UID is the `_UID` of the CPU's ACPI device, `cpuN/firmware_node/uid` — the match the kernel
 *   itself makes (drivers/acpi/processor_core.c map_gicc_mpidr). The MADT is
 *   /sys/firmware/acpi/tables/APIC, readable by root only.
 * - riscv64: `hart` of /proc/cpuinfo; for an offline CPU the `reg` of its device-tree node.
 *
 * A physical id that cannot be read is a MultikernelError ERR_MK_NO_SUPPORT, never a guess: the
 * host (or the view of it a container or a non-root user gets) does not show what the library
 * needs, which no change to the caller's own input could fix (ERR_MK_INVALID_SPEC says that
 * input is wrong). Files in a format these strict parsers do not read are the same error.
 *
 * An offline CPU is listed, but /proc/cpuinfo leaves it out and the kernel removes its topology
 * directory while it is offline (drivers/base/topology.c, CPUHP_TOPOLOGY_PREPARE): its id,
 * package and core may be unknown (-1). It cannot join a pool anyway (the kernel wants it online).
 */
import { MultikernelError, isSystemError, type SystemError } from './errors';
import { PROC_CPUINFO, formatCpuList } from './kernfs';
import type { System } from './system/system';

export const SYS_CPU = '/sys/devices/system/cpu';
export const SYS_NODE = '/sys/devices/system/node';
export const ACPI_MADT = '/sys/firmware/acpi/tables/APIC';
export const DT_CPUS = '/sys/firmware/devicetree/base/cpus';
export const PROC_MEMINFO = '/proc/meminfo';

export type HostArch = 'x86_64' | 'arm64' | 'riscv64' | 'unknown';

export interface HostCpu {
  /** logical number (Linux cpuN) */
  cpu: number;
  /** what the multikernel trees want: x86 APIC id, arm64 MPIDR affinity, riscv hart id; -1 for an offline CPU whose id the host does not show */
  physicalId: number;
  online: boolean;
  /** logical 0, the boot CPU: never offered to a pool */
  boot: boolean;
  /** physical_package_id (-1 when unknown) */
  package: number;
  /** core_id (-1 when unknown); unique only within a package on x86 */
  core: number;
  /** logical CPUs sharing the core (thread_siblings_list), including itself */
  siblings: number[];
  /** NUMA node (0 when the host has no node directory, -1 when unknown) */
  node: number;
}

export interface HostNumaNode {
  id: number;
  /** logical CPUs whose `node` is this one */
  cpus: number[];
  /** MemTotal */
  memoryBytes: bigint;
}

export interface HostTopology {
  arch: HostArch;
  /** the present CPUs, by logical number (CPUs that departed into the pool are not present) */
  cpus: HostCpu[];
  nodes: HostNumaNode[];
  /** some core has more than one online thread */
  smt: boolean;
  /** what could not be read and what was assumed instead */
  notes: string[];
}

// ------------------------------------------------------------------------------------- parsers

function formatError(source: string, text: string, why: string): MultikernelError {
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return new MultikernelError('ERR_MK_NO_SUPPORT', `${source}: ${JSON.stringify(shown)} ${why}`, { details: { source, text: shown } });
}

/** The largest CPU or node number a list may name (NR_CPUS is at most 8192 today). */
export const MAX_LIST_NUMBER = 65535;

/**
 * The kernel's cpulist format (bitmap_print_list_to_buf: "0-3,8,10-11\n"; an empty mask is
 * "\n"), strictly: ascending, non-overlapping decimal numbers and ranges, one optional trailing
 * newline. Used for CPU and node lists alike.
 */
export function parseCpuList(text: string, source = 'CPU list'): number[] {
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  const out: number[] = [];
  if (body === '') return out;
  for (const part of body.split(',')) {
    const m = /^(0|[1-9]\d{0,5})(?:-(0|[1-9]\d{0,5}))?$/.exec(part);
    if (!m) throw formatError(source, text, `is not a list of numbers and ranges such as "0-3,8,10-11" (at "${part}")`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi > MAX_LIST_NUMBER) throw formatError(source, text, `names ${hi}, beyond ${MAX_LIST_NUMBER}`);
    if (hi < lo) throw formatError(source, text, `has a descending range "${part}"`);
    if (out.length > 0 && lo <= out[out.length - 1]!) throw formatError(source, text, `is not in ascending order (at "${part}")`);
    for (let i = lo; i <= hi; i++) out.push(i);
  }
  return out;
}

/** A signed decimal sysfs value such as core_id ("3\n", "-1\n"). */
export function parseSysfsInt(text: string, source: string): number {
  if (!/^-?(0|[1-9]\d{0,9})\n?$/.test(text)) throw formatError(source, text, 'is not a decimal integer');
  return Number(text.trim());
}

const MEMINFO_LINE = /^([A-Za-z0-9_()]+):\s+(\d+)( kB)?$/;

/** MemTotal in bytes from meminfo lines (`text` is the whole file, for the messages) */
function memTotal(lines: string[], source: string, text: string): bigint {
  let total: bigint | undefined;
  for (const l of lines) {
    if (l === '') continue;
    const m = MEMINFO_LINE.exec(l);
    if (!m) throw formatError(source, text, `has a line that is not "<name>: <number>[ kB]" ("${l}")`);
    if (m[1] !== 'MemTotal') continue;
    if (total !== undefined) throw formatError(source, text, 'has two MemTotal lines');
    if (m[3] !== ' kB') throw formatError(source, text, 'gives MemTotal without its kB unit');
    total = BigInt(m[2]!) * 1024n;
  }
  if (total === undefined) throw formatError(source, text, 'has no MemTotal line');
  return total;
}

/** MemTotal of /proc/meminfo ("MemTotal:       16337376 kB"), in bytes. */
export function parseMeminfoTotal(text: string, source = PROC_MEMINFO): bigint {
  return memTotal(text.split('\n'), source, text);
}

/**
 * MemTotal of /sys/devices/system/node/nodeN/meminfo (drivers/base/node.c node_read_meminfo:
 * "Node 0 MemTotal:        8087288 kB"), in bytes. Every line must name node `node`.
 */
export function parseNodeMeminfoTotal(text: string, node: number, source = `${SYS_NODE}/node${node}/meminfo`): bigint {
  const prefix = `Node ${node} `;
  const lines = text.split('\n');
  for (const l of lines) {
    if (l !== '' && !l.startsWith(prefix)) throw formatError(source, text, `has a line that is not about node ${node} ("${l}")`);
  }
  return memTotal(lines.map((l) => l.slice(prefix.length)), source, text);
}

/**
 * The processor blocks of /proc/cpuinfo: one map of `key : value` fields per block that has a
 * `processor` line, in file order. Other blocks (arm's "Hardware", old arm64 headers) are skipped;
 * a processor number that is not decimal, or appears twice, is an error.
 */
export function parseCpuinfoBlocks(text: string, source = PROC_CPUINFO): Map<string, string>[] {
  const blocks: Map<string, string>[] = [];
  const seen = new Set<string>();
  for (const block of text.split(/\n[ \t]*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) fields.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
    const processor = fields.get('processor');
    if (processor === undefined) continue;
    if (!/^(0|[1-9]\d{0,5})$/.test(processor)) throw formatError(source, processor, 'is not a processor number');
    if (seen.has(processor)) throw formatError(source, processor, 'is the number of two processor blocks');
    seen.add(processor);
    blocks.push(fields);
  }
  return blocks;
}

/**
 * The architecture, from the fields /proc/cpuinfo shows (not process.arch: the host may be a
 * simulated one). riscv: `hart`/`isa` (arch/riscv/kernel/cpu.c); arm64: `CPU implementer`
 * (arch/arm64/kernel/cpuinfo.c); x86: `vendor_id`/`apicid` (arch/x86/kernel/cpu/proc.c).
 */
export function detectArch(blocks: Map<string, string>[]): HostArch {
  const first = blocks[0];
  if (!first) return 'unknown';
  if (first.has('hart') || first.has('isa')) return 'riscv64';
  if (first.has('CPU implementer')) return 'arm64';
  if (first.has('vendor_id') || first.has('apicid')) return 'x86_64';
  return 'unknown';
}

/**
 * A CPU node's `reg` as of_get_cpu_hwid reads it: the first `cells` big-endian 32-bit cells
 * (#address-cells of /cpus: 1, or 2 on arm64 with the MPIDR's Aff3 in the first). Without
 * `cells` the property must hold exactly one id of 1 or 2 cells.
 */
export function decodeCpuReg(reg: Uint8Array, source: string, cells?: number): number {
  const n = cells ?? reg.length / 4;
  if ((n !== 1 && n !== 2) || reg.length < n * 4 || (cells === undefined && reg.length !== n * 4)) {
    throw formatError(source, Buffer.from(reg).toString('hex'), `is not a CPU id of ${cells === undefined ? '1 or 2' : cells} big-endian 32-bit cells`);
  }
  const b = Buffer.from(reg.buffer, reg.byteOffset, reg.byteLength);
  return n === 1 ? b.readUInt32BE(0) : b.readUInt32BE(0) * 2 ** 32 + b.readUInt32BE(4);
}

/** ACPI MADT GICC subtable (type 11), and the bytes up to the end of its arm_mpidr field (ACPI 5.1+) */
const MADT_GICC = 0x0b;
const GICC_MPIDR_END = 76;
/** ACPI_MADT_ENABLED | ACPI_MADT_GICC_ONLINE_CAPABLE: an entry the kernel takes (map_gicc_mpidr) */
const GICC_USABLE = 0x1 | 0x8;

/**
 * The MPIDR of every usable GICC entry of an ACPI MADT (/sys/firmware/acpi/tables/APIC), by ACPI
 * processor UID: the 36-byte table header, 8 bytes of MADT fields, then subtables of `type`,
 * `length` (include/acpi/actbl2.h struct acpi_madt_generic_interrupt: uid at 8, flags at 12,
 * arm_mpidr at 68, little-endian). The first entry of a UID wins, as map_madt_entry's walk.
 */
export function parseMadtGicc(table: Uint8Array, source = ACPI_MADT): Map<number, number> {
  const b = Buffer.from(table.buffer, table.byteOffset, table.byteLength);
  const bad = (why: string) => new MultikernelError('ERR_MK_NO_SUPPORT', `${source} is not an ACPI MADT the library reads: ${why}`, { details: { source } });
  if (b.length < 44 || b.toString('latin1', 0, 4) !== 'APIC') throw bad('no "APIC" table header');
  const length = b.readUInt32LE(4);
  if (length < 44 || length > b.length) throw bad(`its length field says ${length} bytes, the file has ${b.length}`);
  const out = new Map<number, number>();
  for (let off = 44; off < length; ) {
    if (off + 2 > length) throw bad(`a subtable header at byte ${off} runs past the end`);
    const type = b[off]!;
    const len = b[off + 1]!;
    if (len < 2 || off + len > length) throw bad(`the subtable at byte ${off} has length ${len}`);
    if (type === MADT_GICC) {
      if (len < GICC_MPIDR_END) throw bad(`the GICC subtable at byte ${off} is ${len} bytes, too short to hold an MPIDR (ACPI 5.1)`);
      const uid = b.readUInt32LE(off + 8);
      const flags = b.readUInt32LE(off + 12);
      const mpidr = Number(b.readBigUInt64LE(off + 68));
      if ((flags & GICC_USABLE) !== 0 && !out.has(uid)) out.set(uid, mpidr);
    }
    off += len;
  }
  return out;
}

// ------------------------------------------------------------------------------------- reading

async function tryRead(system: System, path: string): Promise<Buffer | undefined> {
  try {
    return await system.readFile(path);
  } catch (e) {
    if (isSystemError(e, 'ENOENT', 'ENOTDIR')) return undefined;
    throw e;
  }
}

async function tryReaddir(system: System, path: string): Promise<string[] | undefined> {
  try {
    return await system.readdir(path);
  } catch (e) {
    if (isSystemError(e, 'ENOENT', 'ENOTDIR')) return undefined;
    throw e;
  }
}


interface CoreInfo {
  package: number;
  core: number;
  siblings: number[];
}

async function readCore(system: System, cpu: number): Promise<CoreInfo | undefined> {
  const dir = `${SYS_CPU}/cpu${cpu}/topology`;
  const core = await tryRead(system, `${dir}/core_id`);
  if (core === undefined) return undefined;
  const pkg = await tryRead(system, `${dir}/physical_package_id`);
  let siblingsPath = `${dir}/thread_siblings_list`;
  let siblings = await tryRead(system, siblingsPath);
  if (siblings === undefined) {
    siblingsPath = `${dir}/core_cpus_list`;
    siblings = await tryRead(system, siblingsPath);
  }
  const list = siblings === undefined ? [cpu] : parseCpuList(siblings.toString(), siblingsPath);
  if (!list.includes(cpu)) throw formatError(siblingsPath, siblings!.toString(), `does not name CPU ${cpu} itself`);
  return {
    core: parseSysfsInt(core.toString(), `${dir}/core_id`),
    package: pkg === undefined ? -1 : parseSysfsInt(pkg.toString(), `${dir}/physical_package_id`),
    siblings: list,
  };
}

/** Reads the physical ids of one architecture; -1 for a CPU the host shows no id for. */
class IdReader {
  #madt: Promise<Map<number, number> | SystemError> | undefined;
  #cells: Promise<number | undefined> | undefined;
  usedAcpi = false;

  constructor(
    private readonly system: System,
    private readonly arch: HostArch,
    private readonly blocks: Map<number, Map<string, string>>,
  ) {}

  /** the id, or the reasons it could not be read */
  async read(cpu: number): Promise<number | string[]> {
    const tried: string[] = [];
    const field = this.arch === 'x86_64' ? 'apicid' : this.arch === 'riscv64' ? 'hart' : undefined;
    if (field) {
      const block = this.blocks.get(cpu);
      const value = block?.get(field);
      if (value !== undefined) {
        if (!/^(0|[1-9]\d{0,15})$/.test(value) || !Number.isSafeInteger(Number(value))) throw formatError(`${PROC_CPUINFO} (processor ${cpu})`, value, `is not a decimal ${field}`);
        return Number(value);
      }
      tried.push(block ? `its ${PROC_CPUINFO} block has no ${field} field` : `${PROC_CPUINFO} has no block for it (it lists online CPUs only)`);
    }
    if (this.arch === 'arm64' || this.arch === 'riscv64') {
      const path = `${SYS_CPU}/cpu${cpu}/of_node/reg`;
      const reg = await tryRead(this.system, path);
      if (reg !== undefined) return decodeCpuReg(reg, path, await this.#dtCells());
      tried.push(`no ${path} (no device tree)`);
    }
    if (this.arch === 'arm64') {
      const acpi = await this.#acpi(cpu, tried);
      if (acpi !== undefined) return acpi;
    }
    if (this.arch === 'unknown') tried.push(`the architecture is not one of x86_64, arm64, riscv64 (${PROC_CPUINFO} has no apicid, CPU implementer or hart field)`);
    return tried;
  }

  /** #address-cells of /cpus, when the device tree shows it */
  #dtCells(): Promise<number | undefined> {
    const path = `${DT_CPUS}/#address-cells`;
    this.#cells ??= tryRead(this.system, path).then((b) => {
      if (b === undefined) return undefined;
      const cells = b.length === 4 ? b.readUInt32BE(0) : 0;
      if (cells !== 1 && cells !== 2) throw formatError(path, b.toString('hex'), 'is not an #address-cells of 1 or 2 (one big-endian 32-bit cell)');
      return cells;
    });
    return this.#cells;
  }

  async #acpi(cpu: number, tried: string[]): Promise<number | undefined> {
    const uidPath = `${SYS_CPU}/cpu${cpu}/firmware_node/uid`;
    const uid = await tryRead(this.system, uidPath);
    if (uid === undefined) {
      tried.push(`no ${uidPath} (no ACPI processor device)`);
      return undefined;
    }
    const text = uid.toString();
    if (!/^(0|[1-9]\d{0,9})\n?$/.test(text)) throw formatError(uidPath, text, 'is not a decimal ACPI processor UID');
    this.#madt ??= this.system.readFile(ACPI_MADT).then(
      (b) => parseMadtGicc(b),
      (e: unknown) => (isSystemError(e) ? e : Promise.reject(e)),
    );
    const madt = await this.#madt;
    if (!(madt instanceof Map)) {
      const hint = isSystemError(madt, 'EACCES', 'EPERM') ? ': the ACPI tables are readable by root only' : '';
      tried.push(`${ACPI_MADT} cannot be read (${madt.code}${hint})`);
      return undefined;
    }
    const mpidr = madt.get(Number(text.trim()));
    if (mpidr === undefined) {
      tried.push(`${ACPI_MADT} has no usable GICC entry for ACPI processor UID ${text.trim()}`);
      return undefined;
    }
    this.usedAcpi = true;
    return mpidr;
  }
}

async function cpuMask(system: System, name: 'present' | 'online'): Promise<number[] | undefined> {
  const path = `${SYS_CPU}/${name}`;
  const b = await tryRead(system, path);
  return b === undefined ? undefined : parseCpuList(b.toString(), path);
}

interface NodeView {
  nodeOf: Map<number, number>;
  nodes: { id: number; memoryBytes: bigint }[];
}

async function readNodes(system: System, cpus: number[], notes: string[]): Promise<NodeView> {
  const entries = await tryReaddir(system, SYS_NODE);
  const ids = (entries ?? [])
    .map((e) => /^node(0|[1-9]\d{0,4})$/.exec(e))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  if (ids.length === 0) {
    const meminfo = await tryRead(system, PROC_MEMINFO);
    notes.push(
      `no NUMA nodes under ${SYS_NODE} (a kernel without NUMA, or hidden from this process): every CPU is taken to be on node 0` +
        (meminfo === undefined ? `, and its memory is unknown (no ${PROC_MEMINFO})` : `, with the memory of ${PROC_MEMINFO}`),
    );
    return {
      nodeOf: new Map(cpus.map((c) => [c, 0])),
      nodes: [{ id: 0, memoryBytes: meminfo === undefined ? 0n : parseMeminfoTotal(meminfo.toString()) }],
    };
  }
  const nodeOf = new Map<number, number>();
  const nodes: { id: number; memoryBytes: bigint }[] = [];
  for (const id of ids) {
    const dir = `${SYS_NODE}/node${id}`;
    for (const cpu of parseCpuList((await system.readFile(`${dir}/cpulist`)).toString(), `${dir}/cpulist`)) {
      const other = nodeOf.get(cpu);
      if (other !== undefined) throw new MultikernelError('ERR_MK_NO_SUPPORT', `CPU ${cpu} is listed on NUMA nodes ${other} and ${id} (${SYS_NODE}/node*/cpulist)`, { details: { cpu, nodes: [other, id] } });
      nodeOf.set(cpu, id);
    }
    nodes.push({ id, memoryBytes: parseNodeMeminfoTotal((await system.readFile(`${dir}/meminfo`)).toString(), id) });
  }
  // An offline CPU is in no node's cpulist (the arch drops it from the node mask when it goes
  // down); the cpuN/nodeM link that register_cpu_under_node made still says where it is.
  const unknown: number[] = [];
  for (const cpu of cpus.filter((c) => !nodeOf.has(c))) {
    const links = ((await tryReaddir(system, `${SYS_CPU}/cpu${cpu}`)) ?? []).map((e) => /^node(\d+)$/.exec(e)).filter((m) => m !== null);
    if (links.length === 1) nodeOf.set(cpu, Number(links[0]![1]));
    else unknown.push(cpu);
  }
  if (unknown.length > 0) notes.push(`CPU ${formatCpuList(unknown)}: in no node's cpulist and without one ${SYS_CPU}/cpuN/nodeM link, NUMA node unknown (-1)`);
  return { nodeOf, nodes };
}

/**
 * Reads the host's CPU and NUMA topology through `system` (read-only). Rejects with
 * ERR_MK_NO_SUPPORT when /proc/cpuinfo cannot be read, a file is not in the kernel's format, or
 * an online CPU's physical id cannot be determined; files that are missing in containers or old
 * kernels are replaced by the assumptions `notes` lists.
 */
export async function readTopology(system: System): Promise<HostTopology> {
  const notes: string[] = [];
  let cpuinfoText: string;
  try {
    cpuinfoText = (await system.readFile(PROC_CPUINFO)).toString();
  } catch (e) {
    throw new MultikernelError('ERR_MK_NO_SUPPORT', `cannot read ${PROC_CPUINFO}: ${(e as Error).message}`, { cause: e });
  }
  const blocks = parseCpuinfoBlocks(cpuinfoText);
  const arch = detectArch(blocks);
  const byProcessor = new Map(blocks.map((b) => [Number(b.get('processor')), b]));
  const listed = [...byProcessor.keys()].sort((a, b) => a - b);

  const present = await cpuMask(system, 'present');
  const onlineMask = await cpuMask(system, 'online');
  if (present === undefined || onlineMask === undefined) {
    notes.push(`no ${SYS_CPU}/${present === undefined ? 'present' : 'online'}: the ${present === undefined ? 'present' : 'online'} CPUs are taken to be those ${PROC_CPUINFO} lists`);
  }
  const online = new Set(onlineMask ?? listed);
  const logical = [...new Set([...(present ?? listed), ...online])].sort((a, b) => a - b);

  const ids = new IdReader(system, arch, byProcessor);
  const noTopology: number[] = [];
  const offlineNoTopology: number[] = [];
  const offlineNoId: number[] = [];
  const cpus: HostCpu[] = [];
  for (const cpu of logical) {
    const isOnline = online.has(cpu);
    const id = await ids.read(cpu);
    if (typeof id !== 'number') {
      if (isOnline) {
        throw new MultikernelError(
          'ERR_MK_NO_SUPPORT',
          `cannot determine the physical id of online CPU ${cpu} (${arch}), which the multikernel trees name CPUs by: ${id.join('; ')}`,
          { details: { cpu, arch, tried: id } },
        );
      }
      offlineNoId.push(cpu);
    }
    const core = await readCore(system, cpu);
    if (!core) (isOnline ? noTopology : offlineNoTopology).push(cpu);
    cpus.push({
      cpu,
      physicalId: typeof id === 'number' ? id : -1,
      online: isOnline,
      boot: cpu === 0,
      package: core?.package ?? -1,
      core: core?.core ?? (isOnline ? cpu : -1),
      siblings: core?.siblings ?? [cpu],
      node: 0,
    });
  }
  if (ids.usedAcpi) notes.push(`physical ids (MPIDR) from the ACPI MADT: the GICC entry of each CPU's ACPI processor UID (${SYS_CPU}/cpuN/firmware_node/uid)`);
  if (offlineNoId.length > 0) notes.push(`offline CPU ${formatCpuList(offlineNoId)}: physical id unknown (-1)`);
  if (noTopology.length > 0) notes.push(`online CPU ${formatCpuList(noTopology)}: no ${SYS_CPU}/cpuN/topology (a container, or an old kernel): each is taken as a core of its own (core = its logical number, no SMT sibling, package unknown)`);
  if (offlineNoTopology.length > 0) notes.push(`offline CPU ${formatCpuList(offlineNoTopology)}: no topology while offline: package and core unknown (-1)`);

  const seen = new Map<number, number>();
  for (const c of cpus) {
    if (c.physicalId < 0) continue;
    const other = seen.get(c.physicalId);
    if (other !== undefined) throw new MultikernelError('ERR_MK_NO_SUPPORT', `CPUs ${other} and ${c.cpu} show the same physical id ${c.physicalId}: the host's CPU ids are not usable`, { details: { cpus: [other, c.cpu], physicalId: c.physicalId } });
    seen.set(c.physicalId, c.cpu);
  }

  const { nodeOf, nodes } = await readNodes(system, logical, notes);
  for (const c of cpus) c.node = nodeOf.get(c.cpu) ?? -1;
  return {
    arch,
    cpus,
    nodes: nodes.map((n) => ({ id: n.id, cpus: cpus.filter((c) => c.node === n.id).map((c) => c.cpu), memoryBytes: n.memoryBytes })),
    smt: cpus.some((c) => c.siblings.length > 1),
    notes,
  };
}

// ------------------------------------------------------------------------------------- helpers

/** physical id → logical number, for every CPU whose physical id is known */
export function physicalToLogical(topology: HostTopology): Map<number, number> {
  return new Map(topology.cpus.filter((c) => c.physicalId >= 0).map((c) => [c.physicalId, c.cpu]));
}

/** logical number → physical id, for every CPU whose physical id is known */
export function logicalToPhysical(topology: HostTopology): Map<number, number> {
  return new Map(topology.cpus.filter((c) => c.physicalId >= 0).map((c) => [c.cpu, c.physicalId]));
}

/** the CPUs on NUMA node `node`, by logical number */
export function cpusOnNode(topology: HostTopology, node: number): HostCpu[] {
  return topology.cpus.filter((c) => c.node === node);
}

/**
 * The complete cores among `candidates` (physical ids): groups of physical ids, one per core
 * every thread of which is a candidate that can join a pool — online and not the boot CPU, so
 * the boot CPU's core is never complete. A core is its CPUs' siblings lists, taken
 * transitively. Candidates that are not host CPUs or whose core is incomplete are left out.
 * Groups are ordered by their first logical CPU, ids within a group by logical number.
 */
export function wholeCores(topology: HostTopology, candidates: Iterable<number>): number[][] {
  const byCpu = new Map(topology.cpus.map((c) => [c.cpu, c]));
  const toLogical = physicalToLogical(topology);
  const eligible = new Set<number>();
  for (const id of candidates) {
    const c = byCpu.get(toLogical.get(id) ?? -1);
    if (c && c.online && !c.boot) eligible.add(c.cpu);
  }
  const done = new Set<number>();
  const cores: number[][] = [];
  for (const c of topology.cpus) {
    if (!eligible.has(c.cpu) || done.has(c.cpu)) continue;
    const group = new Set<number>([c.cpu]);
    for (const member of group) for (const s of byCpu.get(member)?.siblings ?? []) group.add(s);
    for (const member of group) done.add(member);
    if ([...group].every((m) => eligible.has(m))) {
      cores.push([...group].sort((a, b) => a - b).map((m) => byCpu.get(m)!.physicalId));
    }
  }
  return cores;
}
