/**
 * What the simulated kernel shows when read: the pool and instance DTBs (dts.c, instance_dt.c),
 * /proc/kimage (kexec_core.c), /proc/iomem (mem.c, kernel/resource.c), /proc/cpuinfo, the cpulist
 * format and /proc/filesystems. The CPU and NUMA trees of sysfs are sysfs.ts's.
 */
import { formatCpuList } from '../../kernfs';
import { decodeFdt, encodeFdt } from '../../fdt/codec';
import { node, prop } from '../../fdt/tree';
import type { FdtNode } from '../../fdt/types';
import { SIM_PCI_DEVICE, SIM_PCI_VENDOR } from './props';
import { cpuCore, cpuPackage, type SimInstance, type SimPlatformDevice, type SimPool, type SimState } from './state';

/** The kernel's free CPU set, in its order (see SimPool.cpus). */
function poolFreeCpus(s: SimState, pool: SimPool): number[] {
  const owned = new Set(s.instances.flatMap((i) => i.cpus));
  return pool.cpus.filter((c) => !owned.has(c));
}

const PCI_HOST_BRIDGE = 'multikernel,pci-host-bridge';

interface PciFn {
  pci: string;
  alias?: string;
}

function splitBdf(pci: string): { domain: number; bus: number; slot: number; func: number } {
  const [d, b, sf] = pci.split(':') as [string, string, string];
  const [sl, f] = sf.split('.') as [string, string];
  return { domain: parseInt(d, 16), bus: parseInt(b, 16), slot: parseInt(sl, 16), func: parseInt(f, 16) };
}

/**
 * mk_dt_emit_aliases and mk_dt_emit_host_bridges (dts.c@0a54b0b4). The simulated host has one
 * root bus per PCI domain, bus 00 spanning 00-ff, with every function directly on it; it has no
 * ECAM window and no bridge windows, so the bridge carries no `reg` and no `ranges` (dts.c writes
 * both only when the host has them). A function on another bus sits behind no bridge the
 * simulator knows and is left out, as dts.c leaves out a device no bus leads to.
 */
function pciNodes(devices: PciFn[]): FdtNode[] {
  const reachable = devices.filter((d) => splitBdf(d.pci).bus === 0);
  const out: FdtNode[] = [];
  const withAlias = devices.filter((d) => d.alias);
  if (withAlias.length > 0) {
    out.push(
      node(
        'aliases',
        withAlias.filter((d) => splitBdf(d.pci).bus === 0).map((d) => {
          const { slot, func } = splitBdf(d.pci);
          return prop.string(d.alias!, `/pci@0/pci@${slot.toString(16)},${func.toString(16)}`);
        }),
      ),
    );
  }
  const domains = [...new Set(reachable.map((d) => splitBdf(d.pci).domain))];
  for (const domain of domains) {
    const leaves = reachable
      .filter((d) => splitBdf(d.pci).domain === domain)
      .map((d) => {
        const { bus, slot, func } = splitBdf(d.pci);
        return node(`pci@${slot.toString(16)},${func.toString(16)}`, [
          prop.u32('reg', (bus << 16) | (((slot << 3) | func) << 8), 0, 0, 0, 0),
          prop.u32('vendor-id', SIM_PCI_VENDOR),
          prop.u32('device-id', SIM_PCI_DEVICE),
        ]);
      });
    out.push(
      node(
        'pci@0',
        [
          prop.string('compatible', PCI_HOST_BRIDGE),
          prop.string('device_type', 'pci'),
          prop.u32('#address-cells', 3),
          prop.u32('#size-cells', 2),
          prop.u32('linux,pci-domain', domain),
          prop.u32('bus-range', 0, 0xff),
        ],
        leaves,
      ),
    );
  }
  return out;
}

/**
 * mk_dt_emit_devices: platform devices only (PCI devices are described under their bus). dts.c
 * writes `device-name` when the name is not empty and `acpi-hid` when one is set; here every
 * device is a baseline's, named and without a hid (baseline.c keeps only the name), and an empty
 * name could not be a node name anyway.
 */
function platformNode(devices: SimPlatformDevice[] | undefined): FdtNode[] {
  if (!devices || devices.length === 0) return [];
  return [node('devices', [], devices.map((d) => node(d.name, [prop.string('device-type', 'platform'), prop.string('device-name', d.name)])))];
}

/** the root properties every tree starts with (mk_dt_emit_tree) */
function rootProps(name: string, id: number) {
  return [
    prop.string('compatible', 'multikernel-v1'),
    ...(name ? [prop.string('model', name)] : []),
    prop.u32('#address-cells', 2),
    prop.u32('#size-cells', 2),
    prop.u32('id', id),
  ];
}

const cpusProp = (name: string, cpus: number[]) => (cpus.length > 0 ? [prop.u64(name, ...cpus)] : []);

/**
 * Root device_tree read (kernfs.c root_device_tree_seq_show → dts.c@0a54b0b4 mk_dt_emit_tree for
 * the host's self instance, whose name is empty). With a pool: every member CPU (the free set,
 * then each instance's CPUs), the free set, one memory node per chunk in the order they were
 * grown, and the free pool devices. Before the first baseline the host's own CPUs.
 */
export function poolDtb(s: SimState): Buffer {
  let resources: FdtNode;
  let tail: FdtNode[] = [];
  if (s.pool) {
    const free = poolFreeCpus(s, s.pool);
    const members = [...free, ...s.instances.flatMap((i) => i.cpus)];
    const chunks = s.pool.memory.map((m) =>
      node(`memory@${m.base.toString(16)}`, [
        prop.string('device_type', 'memory'),
        prop.u64('reg', m.base, m.size),
        prop.u32('numa-node-id', m.node),
      ]),
    );
    resources = node('resources', [...cpusProp('cpus', members), ...cpusProp('cpus-available', free)], [...chunks, ...platformNode(s.pool.platformDevices)]);
    if (s.pool.devicesValid) tail = pciNodes(s.pool.devices.map((d) => ({ pci: d.pciId, ...(d.alias ? { alias: d.alias } : {}) })));
  } else {
    const own = hostCpus(s, true).map((i) => s.topology.cpus[i]!.apicId);
    resources = node('resources', cpusProp('cpus', own));
  }
  return encodeFdt(node('', rootProps('', 0), [resources, ...tail]), { strings: 'libfdt' });
}

/** instances/<name>/device_tree (kernfs.c instance_device_tree_read → dts.c@0a54b0b4 mk_dt_emit_tree) */
export function instanceDtb(inst: SimInstance): Buffer {
  const bytes = inst.memory.reduce((a, r) => a + r.size, 0);
  const memory = bytes > 0 ? [prop.u64('memory-base', inst.memory[0]!.base), prop.u64('memory-bytes', bytes)] : [];
  const resources = node('resources', [...memory, ...cpusProp('cpus', inst.cpus)], platformNode(inst.platformDevices));
  const pci = pciNodes(inst.devices.map((d) => ({ pci: d, ...(inst.deviceAliases?.[d] ? { alias: inst.deviceAliases[d] } : {}) })));
  const chosen: FdtNode[] = [];
  if (inst.hostTree !== undefined) {
    const tree = decodeFdt(Buffer.from(inst.hostTree, 'base64')).root;
    chosen.push(node('chosen', [], [node('multikernel,host-tree', tree.properties, tree.children)]));
  }
  return encodeFdt(node('', rootProps(inst.name, inst.id), [resources, ...pci, ...chosen]), { strings: 'libfdt' });
}

/** /proc/kimage: kexec_core.c's header and `"%5d  %-10s  0x%012lx  %8lu  %-4s  \"%s\""` rows */
export function kimage(s: SimState): string {
  let out = 'MK_ID  Type        Start Address   Segments  Mode  Cmdline\n';
  for (const inst of s.instances.slice().sort((a, b) => a.id - b.id)) {
    const img = inst.image;
    if (!img) continue;
    out += `${String(inst.id).padStart(5)}  ${'multikernel'.padEnd(10)}  0x${img.entry.toString(16).padStart(12, '0')}  ${String(img.segments).padStart(8)}  ${'file'.padEnd(4)}  "${img.cmdline}"\n`;
  }
  return out;
}

function hexRange(start: number, end: number): string {
  return `${start.toString(16).padStart(8, '0')}-${end.toString(16).padStart(8, '0')}`;
}

/** /proc/iomem: System RAM, the pool chunks inside it and the instance regions inside those */
export function iomem(s: SimState): string {
  let out = `${hexRange(0, s.topology.memoryBytes - 1)} : System RAM\n`;
  for (const chunk of (s.pool?.memory ?? []).slice().sort((a, b) => a.base - b.base)) {
    out += `  ${hexRange(chunk.base, chunk.base + chunk.size - 1)} : Multikernel Memory Pool\n`;
    const regions = s.instances
      .flatMap((i) => i.memory.map((r, n) => ({ r, label: `mk-instance-${i.id}-${i.name}-region-${n}` })))
      .filter(({ r }) => r.base >= chunk.base && r.base < chunk.base + chunk.size)
      .sort((a, b) => a.r.base - b.r.base);
    for (const { r, label } of regions) out += `    ${hexRange(r.base, r.base + r.size - 1)} : ${label}\n`;
  }
  return out;
}

/** logical numbers of the CPUs still present on the host (pool members have departed) */
export function hostCpus(s: SimState, onlineOnly: boolean): number[] {
  const pooled = new Set(s.pool?.cpus ?? []);
  return s.topology.cpus
    .map((c, i) => ({ c, i }))
    .filter(({ c }) => !pooled.has(c.apicId) && (!onlineOnly || c.online !== false))
    .map(({ i }) => i);
}

/** the kernel's cpulist format with its newline: "0-3,5\n" */
export function cpuList(cpus: number[]): string {
  return `${formatCpuList(cpus)}\n`;
}

/**
 * /proc/cpuinfo of the online host CPUs (arch/x86/kernel/cpu/proc.c: `physical id` is the
 * package, `siblings` the online threads of the package, `cpu cores` its cores with an online
 * thread; arm64 shows no physical id)
 */
export function cpuinfo(s: SimState, arch: 'x86_64' | 'arm64'): string {
  const online = hostCpus(s, true);
  return online
    .map((i) => {
      const c = s.topology.cpus[i]!;
      if (arch === 'arm64') return `processor\t: ${i}\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n`;
      const inPackage = online.filter((j) => cpuPackage(s.topology.cpus[j]!) === cpuPackage(c));
      return [
        `processor\t: ${i}`,
        'vendor_id\t: GenuineIntel',
        'model name\t: Simulated multikernel CPU',
        `physical id\t: ${cpuPackage(c)}`,
        `siblings\t: ${inPackage.length}`,
        `core id\t\t: ${cpuCore(c, i)}`,
        `cpu cores\t: ${new Set(inPackage.map((j) => cpuCore(s.topology.cpus[j]!, j))).size}`,
        `apicid\t\t: ${c.apicId}`,
        `initial apicid\t: ${c.apicId}`,
        '',
        '',
      ].join('\n');
    })
    .join('');
}

export function filesystems(stock: boolean): string {
  const fs = ['nodev\tsysfs', 'nodev\ttmpfs', 'nodev\tproc', 'nodev\tdevtmpfs', '\text4'];
  if (!stock) fs.push('nodev\tmultikernel');
  return `${fs.join('\n')}\n`;
}
