import t from 'tap';
import {
  decodeFdt, encodeFdt, node, prop, getProperty, getChild, findNode,
  readU32, readU32s, readU64, readU64s, readString, readStrings, DEFAULT_FDT_LIMITS, FDT_MAGIC, FDT_VERSION, FDT_LAST_COMP_VERSION, type Fdt,
} from '../../lib/fdt';
import { assemble, mkError, patch, plainFdt } from './helpers';

const BEGIN = 1;
const END_NODE = 2;
const PROP = 3;
const NOP = 4;
const END = 9;

const sample: Fdt = {
  root: node('', [prop.string('compatible', 'multikernel-v1'), prop.u32('#size-cells', 2), prop.u32('size-cells', 7)], [
    node('resources', [prop.u64('cpus', 4, 5n), prop.empty('flag')], [
      node('memory@0', [prop.u64('size', 0x80000000), prop.u32('numa-node-id', 0), prop.bytes('odd', Uint8Array.of(1, 2, 3))]),
    ]),
    node('aliases', [prop.strings('eth0', ['/resources', 'x'])]),
  ]),
  reservations: [{ address: 0x1000n, size: 0x2000n }, { address: 0xffffffffffffffffn, size: 1n }],
  bootCpuId: 3,
};

t.test('encode then decode gives the same tree, and the layout of dtc', async (t) => {
  const blob = encodeFdt(sample);
  t.same(plainFdt(decodeFdt(blob)), plainFdt(sample));
  t.equal(blob.readUInt32BE(0), 0xd00dfeed);
  t.equal(blob.readUInt32BE(4), blob.length, 'totalsize is the blob length');
  t.equal(blob.readUInt32BE(16), 40, 'reservations right after the header');
  t.equal(blob.readUInt32BE(8), 40 + 16 * 3, 'structure after the 2 entries and the terminator');
  t.equal(blob.readUInt32BE(20), 17);
  t.equal(blob.readUInt32BE(24), 16);
  t.equal(blob.readUInt32BE(28), 3);
  const strings = blob.subarray(blob.readUInt32BE(12)).toString('latin1');
  t.equal(strings, 'compatible\0#size-cells\0cpus\0flag\0size\0numa-node-id\0odd\0eth0\0', 'names shared, suffixes reused like dtc');
  t.ok(encodeFdt(sample).equals(blob), 'deterministic');
  const bare = encodeFdt(sample.root);
  const d = decodeFdt(bare);
  t.same([d.reservations, d.bootCpuId], [[], 0], 'a bare node has no reservations and boot CPU 0');
  t.ok(encodeFdt(d).equals(bare));
  t.same(plainFdt(decodeFdt(Buffer.concat([bare, Buffer.alloc(9)]))), plainFdt(d), 'bytes after totalsize are ignored');
  const copy = Buffer.from(bare);
  const tree = decodeFdt(copy);
  copy.fill(0);
  t.equal(readString(getProperty(tree.root, 'compatible')!), 'multikernel-v1', 'values do not alias the input');
});

t.test('decoding accepts NOPs and reads names through the strings table cache', async (t) => {
  const blob = assemble([NOP, BEGIN, '', NOP, PROP, 0, 0, PROP, 4, 0, Uint8Array.of(0, 0, 0, 1), BEGIN, 'a@1', END_NODE, END_NODE, NOP, END], 'reg\0');
  const f = decodeFdt(blob);
  t.same(f.root.properties.map((p) => [p.name, p.value.length]), [['reg', 0], ['reg', 4]]);
  t.equal(f.root.children[0].name, 'a@1');
});

t.test('decode rejects malformed blobs with the byte offset', async (t) => {
  const good = assemble([BEGIN, '', PROP, 1, 0, Uint8Array.of(7), END_NODE, END], 'x\0');
  t.ok(decodeFdt(good));
  t.equal(good.length, 90);
  const padded = patch(Buffer.concat([good, Buffer.alloc(22)]), 4, 112);
  t.ok(decodeFdt(padded));
  const cases: [string, Buffer, RegExp, string?][] = [
    ['short', good.subarray(0, 39), /shorter than the 40-byte header.*offset 0/],
    ['magic', patch(good, 0, 0xd00dfeee), /bad magic 0xd00dfeee/],
    ['totalsize > buffer', patch(good, 4, good.length + 1), /larger than the .*-byte buffer.*offset 4/],
    ['totalsize < header', patch(good, 4, 39), /smaller than the header/],
    ['version', patch(good, 20, 16), /version 16 is older/],
    ['last compatible', patch(good, 24, 18), /last compatible version 18/],
    ['struct misaligned', patch(good, 8, 58), /structure block offset 58 is not 4-byte aligned/],
    ['struct in header', patch(good, 8, 36), /structure block \[36, .*outside/],
    ['struct too long', patch(good, 36, good.length), /structure block .* is outside/],
    ['strings before header', patch(good, 12, 8), /strings block \[8, .*outside/],
    ['strings too long', patch(good, 32, good.length), /strings block .* is outside/],
    ['overlap', patch(good, 12, good.readUInt32BE(8) + 4), /overlaps strings block/],
    ['rsv misaligned', patch(good, 16, 44), /reservation block offset 44 is not 8-byte aligned/],
    ['rsv in header', patch(good, 16, 32), /reservation block offset 32 is inside the header/],
    ['rsv overlaps', patch(good, 16, good.readUInt32BE(8)), /reservation block overlaps/],
    ['rsv overlaps strings', patch(padded, 16, 88), /reservation block overlaps/],
    ['rsv unterminated', patch(padded, 16, 104), /without a terminating entry/],
    ['name offset', assemble([BEGIN, '', PROP, 0, 5, END_NODE, END], 'x\0'), /property name offset 5 is outside/],
    ['name unterminated', assemble([BEGIN, '', PROP, 0, 0, END_NODE, END], 'xy'), /not NUL-terminated inside the strings block/],
    ['empty name', assemble([BEGIN, '', PROP, 0, 1, END_NODE, END], 'x\0'), /is empty/],
    ['no END', assemble([BEGIN, '', END_NODE]), /ends without an FDT_END/],
    ['second root', assemble([BEGIN, '', END_NODE, BEGIN, '', END_NODE, END]), /second root/],
    ['unterminated node name', assemble([BEGIN, Uint8Array.of(0x61, 0x62, 0x63, 0x64)]), /node name is not NUL-terminated/],
    ['root name', assemble([BEGIN, 'r', END_NODE, END]), /root node has the name "r"/],
    ['empty child', assemble([BEGIN, '', BEGIN, '', END_NODE, END_NODE, END]), /node name "" is empty or holds/],
    ['slash child', assemble([BEGIN, '', BEGIN, 'a/b', END_NODE, END_NODE, END]), /node name "a\/b"/],
    ['stray END_NODE', assemble([END_NODE, END]), /FDT_END_NODE without a matching/],
    ['prop outside node', assemble([PROP, 0, 0, END]), /property outside any node/],
    ['prop header cut', assemble([BEGIN, '', PROP, 0]), /property header runs past/],
    ['prop value too long', assemble([BEGIN, '', PROP, 64, 0, END_NODE, END], 'x\0'), /value of 64 bytes runs past/],
    ['END with open nodes', assemble([BEGIN, '', END]), /FDT_END with 1 node\(s\) still open/],
    ['END first', assemble([END]), /FDT_END before the root node/],
    ['data after END', assemble([BEGIN, '', END_NODE, END, NOP]), /4 bytes follow FDT_END/],
    ['unknown token', assemble([BEGIN, '', 7]), /unknown token 0x7/],
  ];
  for (const [what, blob, re] of cases) {
    const e = mkError(() => decodeFdt(blob));
    t.equal(e.code, 'ERR_MK_INVALID_FDT', what);
    t.match(e.message, re, what);
    t.match(e.message, /at byte offset \d+/, what);
  }
});

t.test('decode enforces limits', async (t) => {
  const blob = encodeFdt(node('', [], [node('a', [], [node('b')]), node('c')]));
  t.ok(decodeFdt(blob, { maxDepth: 3, maxNodes: 4, maxSize: blob.length }));
  const cases: [object, RegExp][] = [
    [{ maxSize: blob.length - 1 }, /totalsize \d+ is larger than maxSize/],
    [{ maxDepth: 2 }, /deeper than maxDepth 2/],
    [{ maxNodes: 3 }, /more than maxNodes 3/],
  ];
  for (const [limits, re] of cases) {
    const e = mkError(() => decodeFdt(blob, limits));
    t.equal(e.code, 'ERR_MK_FDT_LIMIT');
    t.match(e.message, re);
  }
  t.same([FDT_MAGIC, FDT_VERSION, FDT_LAST_COMP_VERSION], [0xd00dfeed, 17, 16]);
  t.same(DEFAULT_FDT_LIMITS, { maxSize: 16 * 1024 * 1024, maxDepth: 64, maxNodes: 100000 });
  const deep = node('');
  let n = deep;
  for (let i = 0; i < 64; i++) {
    const c = node(`n${i}`);
    n.children.push(c);
    n = c;
  }
  t.equal(mkError(() => decodeFdt(encodeFdt(deep))).code, 'ERR_MK_FDT_LIMIT', 'default depth 64 (65 levels rejected)');
});

t.test('encode rejects trees it cannot represent', async (t) => {
  const cases: [Fdt['root'], RegExp][] = [
    [node('r'), /cannot encode \/: root node has the name "r"/],
    [node('', [], [node('')]), /cannot encode \/: node name "" is empty/],
    [node('', [], [node('a', [], [node('b/c')])]), /cannot encode \/a\/b\/c: node name "b\/c"/],
    [node('', [], [node('a\0')]), /holds NUL or a character above U\+00FF/],
    [node('', [], [node('\u0101')]), /holds NUL or a character above U\+00FF/],
    [node('', [prop.empty('')]), /property name "" is empty/],
    [node('', [], [node('x', [prop.empty('\u20ac')])]), /cannot encode \/x: property name "€"/],
    // the path named is that of the first node with the name, past subtrees without it
    [node('', [], [node('a', [], [node('b')]), node('c', [], [node('d', [prop.empty('\u20ac')])])]), /cannot encode \/c\/d: property name "€"/],
    [node('', [], [node('a', [prop.empty('n\0')])]), /cannot encode \/a: property name "n\\u0000"/],
  ];
  for (const [root, re] of cases) {
    const e = mkError(() => encodeFdt(root));
    t.equal(e.code, 'ERR_MK_INVALID_FDT');
    t.match(e.message, re);
  }
  const zero = mkError(() => encodeFdt({ root: node(''), reservations: [{ address: 1n, size: 1n }, { address: 0n, size: 0n }], bootCpuId: 0 }));
  t.match(zero.message, /reservation 1 is address 0 size 0/);
  const latin = node('', [prop.empty('\u00e9')], [node('\u00ff')]);
  t.same(plainFdt(decodeFdt(encodeFdt(latin))), plainFdt({ root: latin, reservations: [], bootCpuId: 0 }), 'latin1 names round trip');
  // node names are read in JS up to 64 bytes, longer ones by Buffer: both give the same names
  const names = ['a'.repeat(63), 'b'.repeat(64), `c@${'f'.repeat(200)}`, '\u00e9'.repeat(70)];
  const long = node('', [], names.map((n) => node(n)));
  t.same(decodeFdt(encodeFdt(long)).root.children.map((c) => c.name), names, 'short and long node names');
});

t.test('property builders and readers', async (t) => {
  const u32 = prop.u32('reg', 1, 0xffffffff);
  t.same([...u32.value], [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
  t.same(readU32s(u32), [1, 0xffffffff]);
  t.equal(readU32(prop.u32('a', 0x8086)), 0x8086);
  const u64 = prop.u64('cpus', 4, 0xffffffffffffffffn);
  t.same([...u64.value.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 4]);
  t.same(readU64s(u64), [4n, 0xffffffffffffffffn]);
  t.equal(readU64(prop.u64('size', 0x80000000)), 0x80000000n);
  t.same([...prop.string('s', 'ab').value], [0x61, 0x62, 0]);
  t.equal(readString(prop.string('s', 'é')), 'é', 'utf8');
  t.same(readStrings(prop.strings('l', ['a', '', 'b'])), ['a', '', 'b']);
  t.same(readStrings(prop.strings('l', [])), []);
  t.equal(prop.strings('l', []).value.length, 0);
  t.equal(prop.empty('e').value.length, 0);
  const src = Uint8Array.of(1, 2);
  const b = prop.bytes('b', src);
  src[0] = 9;
  t.same([...b.value], [1, 2], 'bytes are copied');
  // Readers work on views at any offset (decoded values are views into one buffer).
  const view = { name: 'v', value: new Uint8Array(Uint8Array.of(9, 0, 0, 0, 5, 0x61, 0).buffer, 1, 4) };
  t.equal(readU32(view), 5);
  t.equal(readString({ name: 's', value: new Uint8Array(Uint8Array.of(9, 0x61, 0).buffer, 1, 2) }), 'a');

  const errors: [() => unknown, RegExp][] = [
    [() => prop.u32('x', -1), /property "x": -1 is not a u32/],
    [() => prop.u32('x', 2 ** 32), /is not a u32/],
    [() => prop.u32('x', 1.5), /is not a u32/],
    [() => prop.u64('x', 2 ** 53), /is not a safe integer/],
    [() => prop.u64('x', -1n), /is not a u64/],
    [() => prop.u64('x', 1n << 64n), /is not a u64/],
    [() => prop.string('x', 'a\0b'), /holds a NUL/],
    [() => prop.strings('x', ['a', 'b\0']), /holds a NUL/],
    [() => readU32(prop.u32('reg', 1, 2)), /property "reg": value is 8 bytes, expected exactly 4/],
    [() => readU32s(prop.bytes('reg', Uint8Array.of(1))), /expected a multiple of 4/],
    [() => readU64(prop.u32('size', 1)), /value is 4 bytes, expected exactly 8/],
    [() => readU64s(prop.u32('size', 1)), /expected a multiple of 8/],
    [() => readString(prop.strings('s', ['a', 'b'])), /not exactly one NUL-terminated string/],
    [() => readString(prop.empty('s')), /not exactly one/],
    [() => readString(prop.bytes('s', Uint8Array.of(0x61))), /not exactly one/],
    [() => readStrings(prop.bytes('s', Uint8Array.of(0x61))), /not a list of NUL-terminated strings/],
  ];
  for (const [fn, re] of errors) {
    const e = mkError(fn);
    t.equal(e.code, 'ERR_MK_INVALID_FDT');
    t.match(e.message, re);
  }
});

t.test('tree lookups', async (t) => {
  const root = sample.root;
  t.equal(getChild(root, 'resources'), root.children[0]);
  t.equal(getChild(root, 'nope'), undefined);
  t.equal(getProperty(root, 'compatible'), root.properties[0]);
  t.equal(getProperty(root, 'nope'), undefined);
  t.equal(findNode(root, '/'), root);
  t.equal(findNode(root, '/resources/memory@0'), root.children[0].children[0]);
  t.equal(findNode(root, '/resources/memory'), undefined, 'unit address is part of the name');
  t.equal(findNode(root, '/resources/memory@0/x'), undefined);
  t.equal(findNode(root, 'resources'), undefined, 'relative paths find nothing');
  t.equal(findNode(root, '/resources/'), undefined);
});

t.test("the 'libfdt' strings layout: new names go in front, each property finds the first match", async (t) => {
  // fdt_sw.c fdt_find_add_string_: the table as it stands is searched for "name\0" (also as the
  // suffix of a longer name); a name not found is put in front of the table.
  const tree = node('', [prop.u32('size-cells', 1), prop.u32('#size-cells', 2), prop.u32('size-cells', 3)], [node('a', [prop.u32('#size-cells', 4)])]);
  const blob = encodeFdt(tree, { strings: 'libfdt' });
  const strOff = blob.readUInt32BE(12);
  const strSize = blob.readUInt32BE(32);
  t.equal(blob.subarray(strOff, strOff + strSize).toString('latin1'), '#size-cells\0size-cells\0', 'reverse order of first use');
  const structOff = blob.readUInt32BE(8);
  const nameoffs: number[] = [];
  for (let p = structOff; p < structOff + blob.readUInt32BE(36); p += 4) {
    if (blob.readUInt32BE(p) === 3) {
      nameoffs.push(blob.readUInt32BE(p + 8));
      p += 8 + ((blob.readUInt32BE(p + 4) + 3) & ~3);
    }
  }
  t.same(nameoffs, [12, 0, 1, 0], 'the first size-cells was added alone; the later one is found inside #size-cells');
  t.same(decodeFdt(blob).root, tree, 'decodes to the same tree');
  t.same(encodeFdt(tree).subarray(0, 8), blob.subarray(0, 8), 'same total size as the dtc layout here');
});
