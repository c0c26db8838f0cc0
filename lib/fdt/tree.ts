import { MultikernelError } from '../errors';
import type { FdtNode, FdtProperty } from './types';

/** Build a node. */
export function node(name: string, properties: FdtProperty[] = [], children: FdtNode[] = []): FdtNode {
  return { name, properties, children };
}

function bad(name: string, what: string): MultikernelError {
  return new MultikernelError('ERR_MK_INVALID_FDT', `property ${JSON.stringify(name)}: ${what}`, { details: { property: name } });
}

function cells(count: number, width: 4 | 8): { value: Uint8Array; view: DataView } {
  const value = new Uint8Array(count * width);
  return { value, view: new DataView(value.buffer) };
}

function stringBytes(name: string, values: string[]): Uint8Array {
  for (const v of values) if (v.includes('\0')) throw bad(name, `string ${JSON.stringify(v)} holds a NUL character`);
  return values.length === 0 ? new Uint8Array(0) : new Uint8Array(Buffer.from(`${values.join('\0')}\0`, 'utf8'));
}

/** Property builders; all values are big-endian like every FDT cell. */
export const prop = {
  /** 32-bit cells; each value an integer in [0, 2^32). */
  u32(name: string, ...values: number[]): FdtProperty {
    const { value, view } = cells(values.length, 4);
    values.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw bad(name, `${v} is not a u32`);
      view.setUint32(i * 4, v);
    });
    return { name, value };
  },
  /** 64-bit cells (`/bits/ 64 <...>`); each value an integer in [0, 2^64). */
  u64(name: string, ...values: (bigint | number)[]): FdtProperty {
    const { value, view } = cells(values.length, 8);
    values.forEach((v, i) => {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) throw bad(name, `${v} is not a safe integer`);
      const b = BigInt(v);
      if (b < 0n || b > 0xffffffffffffffffn) throw bad(name, `${v} is not a u64`);
      view.setBigUint64(i * 8, b);
    });
    return { name, value };
  },
  /** One UTF-8 string with its NUL terminator. */
  string(name: string, value: string): FdtProperty {
    return { name, value: stringBytes(name, [value]) };
  },
  /** A string list: each string NUL-terminated; an empty list is an empty value. */
  strings(name: string, values: string[]): FdtProperty {
    return { name, value: stringBytes(name, values) };
  },
  /** Raw bytes (copied). */
  bytes(name: string, value: Uint8Array): FdtProperty {
    return { name, value: Uint8Array.from(value) };
  },
  /** A property without a value (a flag such as `ranges;`). */
  empty(name: string): FdtProperty {
    return { name, value: new Uint8Array(0) };
  },
};

/** The first property called `name`. */
export function getProperty(n: FdtNode, name: string): FdtProperty | undefined {
  return n.properties.find((p) => p.name === name);
}

/** The first child whose full name (with unit address) is `name`. */
export function getChild(n: FdtNode, name: string): FdtNode | undefined {
  return n.children.find((c) => c.name === name);
}

/** The node at an absolute path such as '/resources/memory@0' ('/' is the root). */
export function findNode(root: FdtNode, path: string): FdtNode | undefined {
  if (!path.startsWith('/')) return undefined;
  let n: FdtNode | undefined = root;
  if (path === '/') return n;
  for (const part of path.slice(1).split('/')) {
    n = getChild(n, part);
    if (n === undefined) return undefined;
  }
  return n;
}

function view(p: FdtProperty): DataView {
  return new DataView(p.value.buffer, p.value.byteOffset, p.value.byteLength);
}

function checkLength(p: FdtProperty, width: number, exact: boolean): void {
  const len = p.value.length;
  if (exact ? len !== width : len % width !== 0) {
    throw bad(p.name, `value is ${len} bytes, expected ${exact ? 'exactly' : 'a multiple of'} ${width}`);
  }
}

/** The value as one u32 (exactly 4 bytes). */
export function readU32(p: FdtProperty): number {
  checkLength(p, 4, true);
  return view(p).getUint32(0);
}

/** The value as u32 cells (a multiple of 4 bytes). */
export function readU32s(p: FdtProperty): number[] {
  checkLength(p, 4, false);
  const v = view(p);
  const out = new Array<number>(p.value.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = v.getUint32(i * 4);
  return out;
}

/** The value as one u64 (exactly 8 bytes). */
export function readU64(p: FdtProperty): bigint {
  checkLength(p, 8, true);
  return view(p).getBigUint64(0);
}

/** The value as u64 cells (a multiple of 8 bytes). */
export function readU64s(p: FdtProperty): bigint[] {
  checkLength(p, 8, false);
  const v = view(p);
  const out = new Array<bigint>(p.value.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = v.getBigUint64(i * 8);
  return out;
}

function decodeUtf8(p: FdtProperty, start: number, end: number): string {
  return Buffer.from(p.value.buffer, p.value.byteOffset + start, end - start).toString('utf8');
}

/** The value as one NUL-terminated UTF-8 string with no other NUL. */
export function readString(p: FdtProperty): string {
  const nul = p.value.indexOf(0);
  if (nul === -1 || nul !== p.value.length - 1) throw bad(p.name, 'value is not exactly one NUL-terminated string');
  return decodeUtf8(p, 0, nul);
}

/** The value as a list of NUL-terminated UTF-8 strings; an empty value is an empty list. */
export function readStrings(p: FdtProperty): string[] {
  const len = p.value.length;
  if (len !== 0 && p.value[len - 1] !== 0) throw bad(p.name, 'value is not a list of NUL-terminated strings');
  const out: string[] = [];
  for (let start = 0; start < len; ) {
    const nul = p.value.indexOf(0, start);
    out.push(decodeUtf8(p, start, nul));
    start = nul + 1;
  }
  return out;
}
