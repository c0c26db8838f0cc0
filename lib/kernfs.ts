/**
 * Paths of the multikernel kernfs and procfs files, in one place
 * (docs/kernel-interface.md, "The kernfs" and "procfs").
 */
import { MULTIKERNEL_MOUNT_POINT } from './uapi';

export const MK_ROOT = MULTIKERNEL_MOUNT_POINT;
export const MK_DEVICE_TREE = `${MK_ROOT}/device_tree`;
export const MK_INSTANCES = `${MK_ROOT}/instances`;
export const MK_OVERLAYS = `${MK_ROOT}/overlays`;
export const MK_OVERLAY_NEW = `${MK_OVERLAYS}/new`;
export const MK_CONSOLE_DEVICE = '/dev/mktty';
export const PROC_CPUINFO = '/proc/cpuinfo';
export const PROC_KIMAGE = '/proc/kimage';
export const PROC_FILESYSTEMS = '/proc/filesystems';
/** The flock every overlay writer of this library takes (lib/transaction.ts). */
export const DEFAULT_LOCK_PATH = '/run/multikernel.lock';
/**
 * kerf's lock file, an empty file created with exclusive create: /var/run/kerf.lock, or
 * /tmp/kerf.lock when /var/run cannot be written (kerf src/kerf/runtime.py DeviceTreeManager).
 */
export const KERF_LOCK_PATHS: readonly string[] = ['/var/run/kerf.lock', '/tmp/kerf.lock'];

export function instanceDir(name: string): string {
  return `${MK_INSTANCES}/${name}`;
}

/** What `overlays/tx_N/status` reads (overlay.c mk_overlay_status_str), without the newline. */
export type TxStatus = 'pending' | 'applied' | 'failed' | 'removed';

export function txDir(id: number): string {
  return `${MK_OVERLAYS}/tx_${id}`;
}

/** The numeric ids of the `tx_N` entries of a listing of `overlays/`, ascending. */
export function txIds(entries: string[]): number[] {
  const ids: number[] = [];
  for (const entry of entries) {
    const m = /^tx_(\d+)$/.exec(entry);
    if (m) ids.push(Number(m[1]));
  }
  return ids.sort((a, b) => a - b);
}

/** One row of /proc/kimage (kernel/kexec_core.c). */
export interface KimageRow {
  id: number;
  type: string;
  start: bigint;
  segments: number;
  mode: string;
  cmdline: string;
}

/** Parses /proc/kimage: a header line, then `%5d  %-10s  0x%012lx  %8lu  %-4s  "%s"` rows. */
export function parseKimage(text: string): KimageRow[] {
  const rows: KimageRow[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)\s+0x([0-9a-fA-F]+)\s+(\d+)\s+(\S+)\s+"(.*)"\s*$/.exec(line);
    if (m) {
      rows.push({ id: Number(m[1]), type: m[2]!, start: BigInt(`0x${m[3]}`), segments: Number(m[4]), mode: m[5]!, cmdline: m[6]! });
    }
  }
  return rows;
}

/** One logical CPU of /proc/cpuinfo. `apicId` is the x86 physical id the kernel wants. */
export interface CpuinfoEntry {
  processor: number;
  apicId?: number;
  physicalPackage?: number;
}

/** Parses the blocks of /proc/cpuinfo (blank-line separated `key : value` lines). */
export function parseCpuinfo(text: string): CpuinfoEntry[] {
  const cpus: CpuinfoEntry[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) fields.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
    const processor = fields.get('processor');
    if (processor === undefined || !/^\d+$/.test(processor)) continue;
    const entry: CpuinfoEntry = { processor: Number(processor) };
    const apic = fields.get('apicid');
    if (apic !== undefined && /^\d+$/.test(apic)) entry.apicId = Number(apic);
    const pkg = fields.get('physical id');
    if (pkg !== undefined && /^\d+$/.test(pkg)) entry.physicalPackage = Number(pkg);
    cpus.push(entry);
  }
  return cpus;
}

/** The kernel's cpulist format (bitmap_print_to_pagebuf): "0-3,5", ascending runs; no newline. */
export function formatCpuList(cpus: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; i++) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j;
  }
  return parts.join(',');
}
