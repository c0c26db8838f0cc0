import { MultikernelError } from '../errors';
import type { Fdt, FdtLimits, FdtNode, FdtReservation } from './types';

/** Flattened device tree constants (devicetree specification, chapter 5). */
export const FDT_MAGIC = 0xd00dfeed;
export const FDT_VERSION = 17;
export const FDT_LAST_COMP_VERSION = 16;
export const FDT_HEADER_SIZE = 40;
const FDT_BEGIN_NODE = 1;
const FDT_END_NODE = 2;
const FDT_PROP = 3;
const FDT_NOP = 4;
const FDT_END = 9;

/** Limits applied when no explicit value is given. */
export const DEFAULT_FDT_LIMITS: Readonly<Required<FdtLimits>> = Object.freeze({
  maxSize: 16 * 1024 * 1024,
  maxDepth: 64,
  maxNodes: 100_000,
});

/** Fill in the defaults of `limits`. */
export function resolveLimits(limits: FdtLimits = {}): Required<FdtLimits> {
  return {
    maxSize: limits.maxSize ?? DEFAULT_FDT_LIMITS.maxSize,
    maxDepth: limits.maxDepth ?? DEFAULT_FDT_LIMITS.maxDepth,
    maxNodes: limits.maxNodes ?? DEFAULT_FDT_LIMITS.maxNodes,
  };
}

function invalid(message: string, offset: number): MultikernelError {
  return new MultikernelError('ERR_MK_INVALID_FDT', `invalid FDT: ${message} (at byte offset ${offset})`, { details: { offset } });
}

function limit(message: string, offset: number): MultikernelError {
  return new MultikernelError('ERR_MK_FDT_LIMIT', `FDT limit exceeded: ${message} (at byte offset ${offset})`, { details: { offset } });
}

/** Names up to this many bytes are decoded in JS; longer ones by Buffer (one call). */
const SHORT_NAME = 64;

/** Characters a node or property name can never hold (it would not survive encoding). */
const BAD_NAME_CHAR = /[\0\u0100-\uffff]/;

/**
 * Decode and validate a flattened device tree blob. The blob may be longer than the header's
 * totalsize (trailing bytes are ignored). Property values are views into one private copy of the
 * structure block, so the result does not alias `blob`.
 */
export function decodeFdt(blob: Uint8Array, limits?: FdtLimits): Fdt {
  const { maxSize, maxDepth, maxNodes } = resolveLimits(limits);
  if (blob.length < FDT_HEADER_SIZE) throw invalid(`blob is ${blob.length} bytes, shorter than the ${FDT_HEADER_SIZE}-byte header`, 0);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const magic = view.getUint32(0);
  if (magic !== FDT_MAGIC) throw invalid(`bad magic 0x${magic.toString(16).padStart(8, '0')}, expected 0xd00dfeed`, 0);
  const totalSize = view.getUint32(4);
  if (totalSize > maxSize) throw limit(`totalsize ${totalSize} is larger than maxSize ${maxSize}`, 4);
  if (totalSize > blob.length) throw invalid(`totalsize ${totalSize} is larger than the ${blob.length}-byte buffer`, 4);
  if (totalSize < FDT_HEADER_SIZE) throw invalid(`totalsize ${totalSize} is smaller than the header`, 4);
  const structOff = view.getUint32(8);
  const stringsOff = view.getUint32(12);
  const rsvOff = view.getUint32(16);
  const version = view.getUint32(20);
  const lastComp = view.getUint32(24);
  const bootCpuId = view.getUint32(28);
  const stringsSize = view.getUint32(32);
  const structSize = view.getUint32(36);
  if (version < FDT_VERSION) throw invalid(`version ${version} is older than ${FDT_VERSION}`, 20);
  if (lastComp > FDT_VERSION) throw invalid(`last compatible version ${lastComp} is newer than ${FDT_VERSION}`, 24);
  // Offsets and sizes are < 2^32, so these sums are exact in doubles.
  if (structOff % 4 !== 0) throw invalid(`structure block offset ${structOff} is not 4-byte aligned`, 8);
  if (structOff < FDT_HEADER_SIZE || structOff + structSize > totalSize) {
    throw invalid(`structure block [${structOff}, ${structOff + structSize}) is outside [${FDT_HEADER_SIZE}, ${totalSize})`, 8);
  }
  if (stringsOff < FDT_HEADER_SIZE || stringsOff + stringsSize > totalSize) {
    throw invalid(`strings block [${stringsOff}, ${stringsOff + stringsSize}) is outside [${FDT_HEADER_SIZE}, ${totalSize})`, 12);
  }
  if (structOff < stringsOff + stringsSize && stringsOff < structOff + structSize) {
    throw invalid(`structure block [${structOff}, ${structOff + structSize}) overlaps strings block [${stringsOff}, ${stringsOff + stringsSize})`, 12);
  }
  if (rsvOff % 8 !== 0) throw invalid(`memory reservation block offset ${rsvOff} is not 8-byte aligned`, 16);
  if (rsvOff < FDT_HEADER_SIZE) throw invalid(`memory reservation block offset ${rsvOff} is inside the header`, 16);

  // Memory reservation block: 16-byte entries up to an all-zero one, clear of the other blocks.
  const reservations: FdtReservation[] = [];
  for (let off = rsvOff; ; off += 16) {
    if (off + 16 > totalSize) throw invalid('memory reservation block runs past totalsize without a terminating entry', off);
    if ((off < structOff + structSize && structOff < off + 16) || (off < stringsOff + stringsSize && stringsOff < off + 16)) {
      throw invalid('memory reservation block overlaps the structure or strings block', off);
    }
    const address = view.getBigUint64(off);
    const size = view.getBigUint64(off + 8);
    if (address === 0n && size === 0n) break;
    reservations.push({ address, size });
  }

  // Strings block: property names by offset, each decoded once.
  const stringsEnd = stringsOff + stringsSize;
  const src = Buffer.from(blob.buffer, blob.byteOffset, totalSize);
  const names = new Map<number, string>();
  // Sorted positions of every NUL in the strings block: a name ends at the first one at or after
  // its offset. Built once, so hostile blobs with many distinct long names stay linear.
  let nuls: number[] | undefined;
  // Distinct offsets into one long string each make a new name: bound their total length.
  let nameChars = 0;
  const propName = (nameOff: number, at: number): string => {
    const known = names.get(nameOff);
    if (known !== undefined) return known;
    if (nameOff >= stringsSize) throw invalid(`property name offset ${nameOff} is outside the ${stringsSize}-byte strings block`, at);
    if (nuls === undefined) {
      nuls = [];
      for (let p = src.indexOf(0, stringsOff); p !== -1 && p < stringsEnd; p = src.indexOf(0, p + 1)) nuls.push(p);
    }
    const start = stringsOff + nameOff;
    let lo = 0;
    let hi = nuls.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (nuls[mid] < start) lo = mid + 1;
      else hi = mid;
    }
    if (lo === nuls.length) throw invalid(`property name at strings offset ${nameOff} is not NUL-terminated inside the strings block`, at);
    if (nuls[lo] === start) throw invalid(`property name at strings offset ${nameOff} is empty`, at);
    nameChars += nuls[lo] - start;
    if (nameChars > maxSize) throw limit(`property names total more than maxSize ${maxSize} characters`, at);
    const name = src.toString('latin1', start, nuls[lo]);
    names.set(nameOff, name);
    return name;
  };

  // Structure block: one private copy; values are views into it.
  // (TypedArray slice is one memcpy; Buffer.copy goes through a slower generic path)
  const copy = Uint8Array.prototype.slice.call(blob, structOff, structOff + structSize);
  const struct = Buffer.from(copy.buffer, copy.byteOffset, structSize);
  const sview = new DataView(struct.buffer, struct.byteOffset, structSize);
  const sbuf = struct.buffer;
  const sbase = struct.byteOffset;
  const stack: FdtNode[] = [];
  let root: FdtNode | undefined;
  let nodes = 0;
  let pos = 0;
  for (;;) {
    const at = structOff + pos;
    if (pos + 4 > structSize) throw invalid('structure block ends without an FDT_END token', at);
    const token = sview.getUint32(pos);
    pos += 4;
    if (token === FDT_BEGIN_NODE) {
      if (root !== undefined && stack.length === 0) throw invalid('a second root node follows the first', at);
      // Node names are short: read in JS, a call into Buffer's C++ per node costs more than the name.
      let end = pos;
      let slash = false;
      let name = '';
      for (; end < structSize; end++) {
        const c = struct[end]!;
        if (c === 0) break;
        if (c === 0x2f) slash = true;
        if (end - pos < SHORT_NAME) name += String.fromCharCode(c);
      }
      if (end === structSize) throw invalid('node name is not NUL-terminated inside the structure block', at + 4);
      if (end - pos >= SHORT_NAME) name = struct.toString('latin1', pos, end);
      if (stack.length === 0 ? name !== '' : name === '' || slash) {
        throw invalid(stack.length === 0 ? `root node has the name ${JSON.stringify(name)}` : `node name ${JSON.stringify(name)} is empty or holds '/'`, at + 4);
      }
      if (++nodes > maxNodes) throw limit(`more than maxNodes ${maxNodes} nodes`, at);
      if (stack.length >= maxDepth) throw limit(`nodes nested deeper than maxDepth ${maxDepth}`, at);
      pos = (end + 4) & ~3;
      const n: FdtNode = { name, properties: [], children: [] };
      if (stack.length === 0) root = n;
      else stack[stack.length - 1].children.push(n);
      stack.push(n);
    } else if (token === FDT_END_NODE) {
      if (stack.pop() === undefined) throw invalid('FDT_END_NODE without a matching FDT_BEGIN_NODE', at);
    } else if (token === FDT_PROP) {
      if (stack.length === 0) throw invalid('property outside any node', at);
      if (pos + 8 > structSize) throw invalid('property header runs past the structure block', at);
      const len = sview.getUint32(pos);
      const nameOff = sview.getUint32(pos + 4);
      pos += 8;
      if (len > structSize - pos) throw invalid(`property value of ${len} bytes runs past the structure block`, at);
      const name = propName(nameOff, at);
      stack[stack.length - 1].properties.push({ name, value: new Uint8Array(sbuf, sbase + pos, len) });
      pos = (pos + len + 3) & ~3;
    } else if (token === FDT_END) {
      if (stack.length !== 0) throw invalid(`FDT_END with ${stack.length} node(s) still open`, at);
      if (root === undefined) throw invalid('FDT_END before the root node', at);
      if (pos !== structSize) throw invalid(`${structSize - pos} bytes follow FDT_END in the structure block`, at + 4);
      return { root, reservations, bootCpuId };
    } else if (token !== FDT_NOP) {
      throw invalid(`unknown token 0x${token.toString(16)}`, at);
    }
  }
}

/**
 * Structure-block bytes of a subtree; adds every property name to `strings` in encounter order
 * and records the handle it got in `handles` (one per property, in the order they are written).
 */
function measure(n: FdtNode, root: FdtNode, path: string, strings: StringTable, handles: number[]): number {
  let size = 8 + ((n.name.length + 4) & ~3);
  if (n !== root && (n.name === '' || n.name.includes('/'))) throw cannotEncode(`node name ${JSON.stringify(n.name)} is empty or holds '/'`, path);
  if (BAD_NAME_CHAR.test(n.name)) throw cannotEncode(`node name ${JSON.stringify(n.name)} holds NUL or a character above U+00FF`, path);
  const props = n.properties;
  for (let i = 0; i < props.length; i++) {
    const p = props[i]!;
    // (the characters of each distinct name are checked once, by encodeFdt)
    if (p.name === '') throw cannotEncode('property name "" is empty, holds NUL or a character above U+00FF', path);
    handles.push(strings.add(p.name));
    size += 12 + ((p.value.length + 3) & ~3);
  }
  const children = n.children;
  if (children.length > 0) {
    const base = n === root ? '/' : `${path}/`;
    for (let i = 0; i < children.length; i++) size += measure(children[i]!, root, base + children[i]!.name, strings, handles);
  }
  return size;
}

/** The path of the first node with a property named `name` (for the message of a name that cannot be written). */
function pathOfProperty(n: FdtNode, name: string, path: string): string | undefined {
  if (n.properties.some((p) => p.name === name)) return path;
  for (const c of n.children) {
    const found = pathOfProperty(c, name, path === '/' ? `/${c.name}` : `${path}/${c.name}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

function cannotEncode(what: string, path: string): MultikernelError {
  return new MultikernelError('ERR_MK_INVALID_FDT', `cannot encode ${path}: ${what}`, { details: { path } });
}

/** Builds the strings block; `add` returns the name's offset for that one property. */
interface StringTable {
  add(name: string): number;
  /** the final offset of a value `add` returned (libfdt's table grows at the front) */
  offset(handle: number): number;
  readonly size: number;
  /** the block's bytes, names NUL-terminated, in block order */
  readonly list: string[];
}

/**
 * The strings block as dtc builds it: names in first-use order, and a name that is a suffix of
 * one already stored ("size-cells" after "#size-cells") points into it instead of being added.
 */
class DtcStrings implements StringTable {
  private readonly offsets = new Map<string, number>();
  readonly list: string[] = [];
  size = 0;
  add(name: string): number {
    const known = this.offsets.get(name);
    if (known !== undefined) return known;
    this.list.push(name);
    for (let i = 0; i < name.length; i++) {
      const suffix = i === 0 ? name : name.slice(i);
      if (!this.offsets.has(suffix)) this.offsets.set(suffix, this.size + i);
    }
    this.size += name.length + 1;
    return this.offsets.get(name)!;
  }
  offset(handle: number): number {
    return handle;
  }
}

/**
 * The strings block as libfdt's sequential writer builds it (fdt_sw.c fdt_find_add_string_, used
 * by pylibfdt's FdtSw and by the kernel's own tree emitters): every property looks its name up
 * in the table as it stands (the first `name\0` in block order, so also as a suffix of a longer
 * name), and a new name goes in FRONT of the table, which therefore ends up in reverse order of
 * first use. Handles count from the end of the block, which does not move.
 */
class LibfdtStrings implements StringTable {
  private table = '';
  readonly list: string[] = [];
  add(name: string): number {
    const key = `${name}\0`;
    let at = this.table.indexOf(key);
    if (at < 0) {
      this.table = key + this.table;
      this.list.unshift(name);
      at = 0;
    }
    return this.table.length - at;
  }
  get size(): number {
    return this.table.length;
  }
  offset(handle: number): number {
    return this.table.length - handle;
  }
}

/** How `encodeFdt` lays out the strings block. */
export interface EncodeFdtOptions {
  /**
   * 'dtc' (default): names in first-use order, as dtc writes them. 'libfdt': as libfdt's
   * sequential writer (pylibfdt's FdtSw, kerf, the kernel's rendered trees) writes them, so a
   * tree decoded from such a blob re-encodes byte for byte.
   */
  strings?: 'dtc' | 'libfdt';
}

/**
 * Encode a tree as an FDT version 17 blob laid out like dtc's output: header, reservation
 * block, structure block, strings block, no padding. A bare node encodes with no reservations
 * and boot CPU 0. `options.strings` picks the strings block layout (dtc's, or libfdt's
 * sequential writer's, which kerf and the kernel use; the blocks are otherwise identical).
 */
export function encodeFdt(tree: Fdt | FdtNode, options: EncodeFdtOptions = {}): Buffer {
  const fdt: Fdt = 'root' in tree ? tree : { root: tree, reservations: [], bootCpuId: 0 };
  if (fdt.root.name !== '') throw cannotEncode(`root node has the name ${JSON.stringify(fdt.root.name)}`, '/');
  const strings: StringTable = options.strings === 'libfdt' ? new LibfdtStrings() : new DtcStrings();
  const handles: number[] = [];
  const structSize = measure(fdt.root, fdt.root, '/', strings, handles) + 4;
  // every distinct name is in the table's list, or is a suffix of a name in it
  for (const name of strings.list) {
    if (BAD_NAME_CHAR.test(name)) throw cannotEncode(`property name ${JSON.stringify(name)} is empty, holds NUL or a character above U+00FF`, pathOfProperty(fdt.root, name, '/')!);
  }
  const rsvOff = FDT_HEADER_SIZE;
  const structOff = rsvOff + 16 * (fdt.reservations.length + 1);
  const stringsOff = structOff + structSize;
  const totalSize = stringsOff + strings.size;
  const out = Buffer.alloc(totalSize);
  const view = new DataView(out.buffer, out.byteOffset, totalSize);
  view.setUint32(0, FDT_MAGIC);
  view.setUint32(4, totalSize);
  view.setUint32(8, structOff);
  view.setUint32(12, stringsOff);
  view.setUint32(16, rsvOff);
  view.setUint32(20, FDT_VERSION);
  view.setUint32(24, FDT_LAST_COMP_VERSION);
  view.setUint32(28, fdt.bootCpuId);
  view.setUint32(32, strings.size);
  view.setUint32(36, structSize);
  let off = rsvOff;
  for (const r of fdt.reservations) {
    if (r.address === 0n && r.size === 0n) throw cannotEncode(`reservation ${(off - rsvOff) / 16} is address 0 size 0, which would end the reservation block`, '/');
    view.setBigUint64(off, r.address);
    view.setBigUint64(off + 8, r.size);
    off += 16;
  }
  const w: StructWriter = { out, view, strings, handles, next: 0 };
  const end = writeNode(w, fdt.root, structOff);
  view.setUint32(end, FDT_END);
  let pos: number;
  pos = stringsOff;
  for (const s of strings.list) pos += out.write(s, pos, 'latin1') + 1;
  return out;
}

/** What writeNode needs, in one object (fields, not closure variables: the hot loop stays fast). */
interface StructWriter {
  out: Buffer;
  view: DataView;
  strings: StringTable;
  /** the string handle of every property, in writing order */
  handles: number[];
  /** the next handle to use */
  next: number;
}

/** Writes a node and its subtree at `pos`; returns the position after it. */
function writeNode(w: StructWriter, n: FdtNode, pos: number): number {
  const { out, view } = w;
  view.setUint32(pos, FDT_BEGIN_NODE);
  const name = n.name;
  // names are short: written in JS rather than by a call into Buffer.write
  for (let i = 0; i < name.length; i++) out[pos + 4 + i] = name.charCodeAt(i);
  pos += 4 + ((name.length + 4) & ~3);
  const props = n.properties;
  for (let i = 0; i < props.length; i++) {
    const value = props[i]!.value;
    const len = value.length;
    view.setUint32(pos, FDT_PROP);
    view.setUint32(pos + 4, len);
    view.setUint32(pos + 8, w.strings.offset(w.handles[w.next++]!));
    // most values are a few cells: a loop beats a call into TypedArray.prototype.set
    if (len <= 16) for (let j = 0; j < len; j++) out[pos + 12 + j] = value[j]!;
    else out.set(value, pos + 12);
    pos += 12 + ((len + 3) & ~3);
  }
  const children = n.children;
  for (let i = 0; i < children.length; i++) pos = writeNode(w, children[i]!, pos);
  view.setUint32(pos, FDT_END_NODE);
  return pos + 4;
}
