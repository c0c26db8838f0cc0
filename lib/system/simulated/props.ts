/**
 * What every part of the simulated kernel shares: the errno carrier (`KErr`), the kernel's size
 * constants, and readers of device-tree properties with the kernel's exact length rules
 * (of_property_read_* as dts.c, baseline.c and overlay.c use them).
 */
import { constants as osConstants } from 'node:os';
import { decodeFdt } from '../../fdt/codec';
import type { FdtNode, FdtProperty } from '../../fdt/types';
import { MiB, GiB } from './state';

export const PAGE_SIZE = 4096;
/** x86 memory_block_size: hot-added memory of a running instance must be aligned to it */
export const MEMORY_BLOCK_SIZE = 128 * MiB;
/** first 1 GiB of node 0 belongs to the host kernel and is never given to the pool */
export const HOST_RESERVED_BYTES = 1 * GiB;
export const MAX_NUMNODES = 64;
export const MAX_VIRTIO_DEVICES = 16;
/**
 * mk_overlay_new_write's own size check (overlay.c@14213ee5: > 1 MiB → EFBIG). Not the limit a
 * writer meets: kernfs hands the handler at most PAGE_SIZE per write(2) (no atomic_write_len),
 * so a larger write is cut short long before this; the library's limit is the model's
 * MAX_OVERLAY_WRITE_BYTES.
 */
export const MK_OVERLAY_HANDLER_MAX_BYTES = 1024 * 1024;
/** baseline.c MK_BASELINE_MAX_MEM_REQS (= MAX_NUMNODES): more memory@ nodes → E2BIG */
export const MAX_BASELINE_MEM_REQS = MAX_NUMNODES;
/** include/uapi/linux/multikernel_virtio.h MK_VIRTIO_MAX_QUEUES */
export const MAX_VIRTIO_QUEUES = 8;

/** A kernel-internal failure: an errno name. */
export class KErr extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

const errnoByName = osConstants.errno as Record<string, number>;

/** "-17" as the kernel prints an error code with %d */
export function neg(code: string): string {
  return `-${errnoByName[code]}`;
}

/** `size >> 20` of a u64 as the kernel prints it (%llu MB); JS `>>` would cut at 32 bits */
export function mb(bytes: number): number {
  return Math.floor(bytes / MiB);
}
/** %llx */
export function hex(v: number): string {
  return v.toString(16);
}
/** %pa of a phys_addr_t: 0x and 16 hex digits */
export function pa(v: number): string {
  return `0x${v.toString(16).padStart(16, '0')}`;
}
/** mk_cpu_set_format of a non-empty set (every caller here has one): the physical ids comma-separated in set order */
export function cpuSetFormat(ids: number[]): string {
  return ids.join(',');
}
/**
 * Vendor and device id of a simulated host PCI function (what pci_get_domain_bus_and_slot finds):
 * every simulated function is an Intel 82540EM (QEMU's e1000, 8086:100e).
 */
export const SIM_PCI_VENDOR = 0x8086;
export const SIM_PCI_DEVICE = 0x100e;

// ---------- property readers with the kernel's exact length rules ----------

export function raw(n: FdtNode, name: string): Uint8Array | undefined {
  return n.properties.find((p: FdtProperty) => p.name === name)?.value;
}
export function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
export function u32At(b: Uint8Array, i: number): number {
  return dv(b).getUint32(i * 4);
}
export function u64At(b: Uint8Array, i: number): number {
  return Number(dv(b).getBigUint64(i * 8));
}
/** a NUL-terminated string property, or undefined when it is missing or malformed */
export function str(n: FdtNode, name: string): string | undefined {
  const b = raw(n, name);
  if (!b || b.length === 0 || b[b.length - 1] !== 0) return undefined;
  return Buffer.from(b.subarray(0, b.indexOf(0))).toString('utf8');
}
export function child(n: FdtNode, name: string): FdtNode | undefined {
  return n.children.find((c) => c.name === name);
}
export function childrenWithPrefix(n: FdtNode, prefix: string): FdtNode[] {
  return n.children.filter((c) => c.name.startsWith(prefix));
}
/** sscanf("%x:%x:%x.%x") of a pci-id, normalised to DDDD:BB:SS.F; undefined when it does not scan. */
export function parseBdf(s: string): string | undefined {
  const m = /^\s*([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\.([0-9a-f]+)/i.exec(s);
  if (!m) return undefined;
  const [d, b, sl, f] = [m[1]!, m[2]!, m[3]!, m[4]!].map((x) => parseInt(x, 16)) as [number, number, number, number];
  // the kernel keeps u16 domain, u8 bus, and PCI_DEVFN(slot, func) (slot 5 bits, func 3 bits)
  const devfn = ((sl & 0x1f) << 3) | (f & 7);
  return `${(d & 0xffff).toString(16).padStart(4, '0')}:${(b & 0xff).toString(16).padStart(2, '0')}:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
}

export function decodeOrEinval(blob: Uint8Array): FdtNode {
  try {
    return decodeFdt(blob).root;
  } catch {
    throw new KErr('EINVAL');
  }
}
