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
export const MAX_OVERLAY_BYTES = 1024 * 1024;

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
export function numaOf(n: FdtNode): number {
  const b = raw(n, 'numa-node-id');
  if (!b) return -1;
  if (b.length !== 4 || u32At(b, 0) >= MAX_NUMNODES) throw new KErr('EINVAL');
  return u32At(b, 0);
}
export function memSize(n: FdtNode): number {
  const b = raw(n, 'size');
  if (!b || b.length !== 8) throw new KErr('EINVAL');
  const size = u64At(b, 0);
  if (size === 0 || size % PAGE_SIZE !== 0) throw new KErr('EINVAL');
  return size;
}
export function memReg(n: FdtNode): { base: number; size: number } {
  const b = raw(n, 'reg');
  if (!b || b.length !== 16) throw new KErr('EINVAL');
  return { base: u64At(b, 0), size: u64At(b, 1) };
}
export function cpuReg(n: FdtNode): number {
  const b = raw(n, 'reg');
  if (!b || (b.length !== 4 && b.length !== 8)) throw new KErr('EINVAL');
  return b.length === 8 ? u64At(b, 0) : u32At(b, 0);
}
export function pciId(n: FdtNode): string {
  const s = str(n, 'pci-id');
  const m = s === undefined ? null : /^([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\.([0-9a-f]+)/i.exec(s);
  if (!m) throw new KErr('EINVAL');
  const h = (x: string, w: number): string => parseInt(x, 16).toString(16).padStart(w, '0');
  return `${h(m[1]!, 4)}:${h(m[2]!, 2)}:${h(m[3]!, 2)}.${parseInt(m[4]!, 16).toString(16)}`;
}
/** u64 cells of a `cpus` property: non-zero multiple of 8 bytes */
export function cpuList(b: Uint8Array): number[] {
  if (b.length === 0 || b.length % 8 !== 0) throw new KErr('EINVAL');
  return Array.from({ length: b.length / 8 }, (_, i) => u64At(b, i));
}

export function decodeOrEinval(blob: Uint8Array): FdtNode {
  try {
    return decodeFdt(blob).root;
  } catch {
    throw new KErr('EINVAL');
  }
}
