/**
 * What the simulated kernel shows when read: the pool and instance DTBs (dts.c, instance_dt.c),
 * /proc/kimage (kexec_core.c), /proc/iomem (mem.c, kernel/resource.c), /proc/cpuinfo, the CPU masks
 * in sysfs and /proc/filesystems.
 */
import { encodeFdt } from '../../fdt/codec';
import { node, prop } from '../../fdt/tree';
import type { FdtNode } from '../../fdt/types';
import type { SimInstance, SimState } from './state';

function poolCpusFree(s: SimState, poolCpus: number[]): number[] {
  const owned = new Set(s.instances.flatMap((i) => i.cpus));
  return poolCpus.filter((c) => !owned.has(c));
}

/** Root device_tree read: the live pool (or, before a baseline, the host tree without memory). */
export function poolDtb(s: SimState): Buffer {
  const props = [prop.u32('id', 0), prop.u32('#address-cells', 2), prop.u32('#size-cells', 2)];
  const children: FdtNode[] = [];
  if (s.pool) {
    const memories = s.pool.memory
      .slice()
      .sort((a, b) => a.base - b.base)
      .map((m) =>
        node(`memory@${m.base.toString(16)}`, [
          prop.string('device_type', 'memory'),
          prop.u64('reg', m.base, m.size),
          prop.u32('numa-node-id', m.node),
        ]),
      );
    const devices = node(
      'devices',
      [],
      s.pool.devices.map((d) => node(d.name, [prop.string('device-type', 'pci'), prop.string('pci-id', d.pciId)])),
    );
    children.push(
      node(
        'resources',
        [prop.u64('cpus', ...s.pool.cpus), prop.u64('cpus-available', ...poolCpusFree(s, s.pool.cpus))],
        [...memories, devices],
      ),
    );
  }
  return encodeFdt(node('', props, children));
}

/** instances/<name>/device_tree (instance_dt.c) */
export function instanceDtb(inst: SimInstance): Buffer {
  const bytes = inst.memory.reduce((a, r) => a + r.size, 0);
  return encodeFdt(
    node(
      '',
      [
        prop.string('compatible', 'multikernel-v1'),
        prop.string('model', inst.name),
        prop.u32('#address-cells', 2),
        prop.u32('#size-cells', 2),
        prop.u32('id', inst.id),
      ],
      [
        node(
          'resources',
          [
            prop.u64('memory-base', inst.memory[0]?.base ?? 0),
            prop.u64('memory-bytes', bytes),
            prop.u64('cpus', ...inst.cpus),
          ],
          [node('devices', [], inst.devices.map((d, i) => node(`pci@${i}`, [prop.string('pci-id', d)])))],
        ),
      ],
    ),
  );
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

/** the kernel's cpulist format: "0-3,5\n" */
export function cpuList(cpus: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; i++) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j;
  }
  return `${parts.join(',')}\n`;
}

/** /proc/cpuinfo of the online host CPUs (x86 layout; arm64 shows no physical id) */
export function cpuinfo(s: SimState, arch: 'x86_64' | 'arm64'): string {
  return hostCpus(s, true)
    .map((i) => {
      const c = s.topology.cpus[i]!;
      if (arch === 'arm64') return `processor\t: ${i}\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n`;
      return [
        `processor\t: ${i}`,
        'vendor_id\t: GenuineIntel',
        'model name\t: Simulated multikernel CPU',
        `physical id\t: ${c.node}`,
        `core id\t\t: ${i}`,
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
