/**
 * Reading back what the kernel shows, shared by Host, Pool and Instance: the instance memory
 * regions of /proc/iomem and the PCI addresses of a rendered tree.
 */
import type { TreeDevice } from './model';
import type { System } from './system/system';

/**
 * Every instance memory region /proc/iomem shows (`mk-instance-<id>-<name>-region-<n>`); [] when
 * unreadable or when the kernel hides the addresses (it prints zeros to a reader without
 * CAP_SYS_ADMIN, kernel/resource.c r_show).
 */
export async function allInstanceRegions(system: System): Promise<{ id: number; name: string; base: bigint; size: bigint }[]> {
  let iomem: string;
  try {
    iomem = (await system.readFile('/proc/iomem')).toString('latin1');
  } catch {
    return [];
  }
  const out: { id: number; name: string; base: bigint; size: bigint }[] = [];
  for (const line of iomem.split('\n')) {
    const m = /^\s*([0-9a-f]+)-([0-9a-f]+) : mk-instance-(\d+)-(.*)-region-\d+$/.exec(line);
    // without CAP_SYS_ADMIN the kernel prints every range as zeros: no addresses to go by
    if (m && /^0+$/.test(m[2]!)) return [];
    if (m) out.push({ id: Number(m[3]), name: m[4]!, base: BigInt(`0x${m[1]}`), size: BigInt(`0x${m[2]}`) - BigInt(`0x${m[1]}`) + 1n });
  }
  return out;
}

/** The PCI addresses among tree devices (platform devices have none). */
export function pciIds(devices: TreeDevice[]): string[] {
  return devices.flatMap((d) => (d.type === 'pci' ? [d.pciId] : []));
}

