import t from 'tap';
import {
  decodeFdt, encodeFdt, findNode, getProperty, node, parseDts, printDts, prop,
  readString, readStrings, readU32, readU32s, readU64s, type Fdt,
} from '../../lib/fdt';
import { mkError, plainFdt } from './helpers';
import { BASELINE, FEATURES, OVERLAY, POOL_OVERLAY, SUGAR_OVERLAY } from './sources';

const hex = (v: Uint8Array): string => Buffer.from(v).toString('hex');
const value = (f: Fdt, path: string, name: string): Uint8Array => {
  const n = findNode(f.root, path);
  if (n === undefined) throw new Error(`no node ${path}`);
  const p = getProperty(n, name);
  if (p === undefined) throw new Error(`no property ${name} in ${path}`);
  return p.value;
};
const P = (f: Fdt, path: string, name: string) => ({ name, value: value(f, path, name) });

t.test('reference baseline (3.4) parses to the expected bytes', async (t) => {
  const { fdt, plugin } = parseDts(BASELINE, { fileName: 'baseline.dts' });
  t.equal(plugin, false);
  t.equal(hex(value(fdt, '/resources', 'cpus')), '0000000000000004000000000000000500000000000000060000000000000007');
  t.same(readU64s(P(fdt, '/resources', 'cpus')), [4n, 5n, 6n, 7n]);
  t.equal(hex(value(fdt, '/resources/memory@0', 'size')), '0000000080000000');
  t.equal(readU32(P(fdt, '/resources/memory@0', 'numa-node-id')), 0);
  t.equal(readString(P(fdt, '/', 'compatible')), 'multikernel-v1');
  t.equal(readString(P(fdt, '/resources/devices/nic0', 'pci-id')), '0000:00:04.0');
  t.same(readU32s(P(fdt, '/resources/devices/nic0', 'vendor-id')), [0x8086]);
  t.equal(readString(P(fdt, '/resources/devices/plat0', 'device-name')), 'serial8250');
  t.equal(readString(P(fdt, '/aliases', 'eth0')), '/resources/devices/nic0');
  t.same(fdt.root.children.map((c) => c.name), ['resources', 'aliases']);
  t.same(fdt.reservations, []);
});

t.test('reference overlays (3.5) parse with /plugin/', async (t) => {
  const o = parseDts(OVERLAY);
  t.equal(o.plugin, true);
  t.equal(readString(P(o.fdt, '/fragment@0', 'target-path')), '/instances');
  const res = '/fragment@0/__overlay__/instance-create/resources';
  t.equal(hex(value(o.fdt, res, 'memory-bytes')), '0000000040000000');
  t.same(readU64s(P(o.fdt, res, 'cpus')), [2n, 3n]);
  t.equal(readU32(P(o.fdt, `${res}/virtio/net0`, 'queue-size')), 256);
  t.equal(readString(P(o.fdt, '/', 'mk,resources')), 'cpus=2 mem=1G');

  const pool = parseDts(POOL_OVERLAY).fdt;
  t.equal(hex(value(pool, '/fragment@0/__overlay__/cpu-add/cpu@8', 'reg')), '0000000000000008', 'u64 reg');
  t.equal(hex(value(pool, '/fragment@0/__overlay__/cpu-add/cpu@9', 'reg')), '00000009', 'u32 reg');
  t.equal(hex(value(pool, '/fragment@0/__overlay__/memory-remove/memory@100000000', 'reg')), '00000001000000000000000040000000');

  const sugar = parseDts(SUGAR_OVERLAY);
  t.equal(sugar.plugin, true);
  t.same(sugar.fdt.root.children.map((c) => c.name), ['fragment@0', 'fragment@1']);
  t.equal(readString(P(sugar.fdt, '/fragment@0', 'target-path')), '/instances');
  t.equal(readString(P(sugar.fdt, '/fragment@0/__overlay__/instance-remove', 'instance-name')), 'web');
  t.equal(readString(P(sugar.fdt, '/fragment@1', 'target-path')), '/resources');
  t.ok(findNode(sugar.fdt.root, '/fragment@1/__overlay__/memory-add/memory@1'));
  t.same(parseDts('/dts-v1/; /plugin/; &{/} { a; };').fdt.root.children[0].children[0].properties[0].name, 'a', 'a plugin may start with a reference');
});

t.test('the feature source parses like dtc', async (t) => {
  const { fdt } = parseDts(FEATURES);
  t.same(fdt.reservations, [{ address: 0x10000000n, size: 0x4000n }, { address: 1n << 32n, size: 0x1000n }]);
  t.same(readU32s(P(fdt, '/', 'num')), [
    10, 31, 15, 0, 97, 10, 39, 65, 65, 14, 0xffffffff, 0xffffffff, 1, 0, 3, 3,
    18, 0x30, 0xcc, 1, 1, 1, 0, 1, 0,
    1, 0, 5, 6, 0, 0, 4, 0xfffffffe, 0xffffffff, 1, 2, 3, 4,
  ]);
  t.equal(hex(value(fdt, '/', '#size-cells')), '00000002', 'backslash-escaped name');
  t.equal(hex(value(fdt, '/', 'wide')), 'fffffffffffffffffffffffffffffffe' + '1234ffff' + '7fff7a' + '00000005');
  t.equal(hex(value(fdt, '/', 'bytes')), '00ff0adeadbeef0102');
  t.equal(hex(value(fdt, '/', 'mixed')), `6100${'00000001'}02${Buffer.from('b\tc"d\\e\x07\x008q\0', 'latin1').toString('hex')}00c3a900`);
  t.same(readStrings(P(fdt, '/', 'strings')), ['one', 'two', 'three']);
  t.equal(value(fdt, '/', 'empty').length, 0);
  t.same(readU32s(P(fdt, '/', 'refs')), [1, 2, 7], 'phandles assigned in tree order, skipping explicit ones');
  t.same(readU32s(P(fdt, '/', 'dref')), [5], 'explicit phandle used');
  t.same(readU32s(P(fdt, '/a/c', 'phandle')), [1]);
  t.same(readU32s(P(fdt, '/a/b@1', 'phandle')), [2]);
  t.same(readStrings(P(fdt, '/', 'path')), ['/a/c', '/a']);
  t.same(readU32s(P(fdt, '/', 'lprop')), [1, 2]);
  t.same(findNode(fdt.root, '/a/b@1')!.properties.map((p) => [p.name, hex(p.value)]), [['x', '00000003'], ['y', '00000002'], ['phandle', '00000002']], 'merge replaces in place, appends new');
  t.equal(readString(P(fdt, '/a/c', 'z')), 'merged');
  t.same(findNode(fdt.root, '/a')!.children.map((c) => c.name), ['b@1', 'c', 'd', 'e', 'new']);
  t.same(findNode(fdt.root, '/a/e')!.properties.map((p) => p.name), ['revived'], 'a deleted node revives empty at its old place');
  t.equal(findNode(fdt.root, '/gone'), undefined);
  t.same(findNode(fdt.root, '/keep')!.properties.map((p) => [p.name, hex(p.value)]), [['p', '00000009'], ['q', '00000002'], ['r', '00000003']], 'a deleted property revives at its old place');
});

t.test('deletion, root references and comments at the end', async (t) => {
  const { fdt } = parseDts('/dts-v1/; / { a { p; b { c { }; }; }; }; /delete-node/ &{/a/b}; &{/} { x; }; &{/a} { q; }; // done');
  t.same(plainFdt(fdt), plainFdt({ root: node('', [prop.empty('x')], [node('a', [prop.empty('p'), prop.empty('q')])]), reservations: [], bootCpuId: 0 }));
  t.equal(mkError(() => parseDts('/dts-v1/; / { a { }; }; &{/a/b} { };')).code, 'ERR_MK_DTS_SYNTAX');
  t.same(parseDts('/dts-v1/; / { a { b { }; }; }; &{/a//b/} { x; };').fdt.root.children[0].children[0].properties[0].name, 'x', 'empty path components are ignored, as in dtc');
  t.same(parseDts('/dts-v1/; /memreserve/ 0 0; / { };').fdt.reservations, [], '/memreserve/ 0 0 reads back as nothing from dtc too');
  const revive = parseDts('/dts-v1/; / { a { b { c = <1>; }; }; }; / { /delete-node/ a; }; / { a { b { d; }; }; };').fdt;
  t.same(plainFdt(revive), plainFdt({ root: node('', [], [node('a', [], [node('b', [prop.empty('d')])])]), reservations: [], bootCpuId: 0 }), 'children of a deleted node stay deleted');
});

t.test('printDts output parses back to the same tree', async (t) => {
  for (const src of [BASELINE, OVERLAY, FEATURES, SUGAR_OVERLAY]) {
    const { fdt, plugin } = parseDts(src);
    const dts = printDts(fdt, { plugin });
    const again = parseDts(dts);
    t.same(plainFdt(again.fdt), plainFdt(fdt));
    t.equal(again.plugin, plugin);
    t.ok(encodeFdt(again.fdt).equals(encodeFdt(fdt)));
  }
  const tree: Fdt = {
    root: node('', [
      prop.string('s', 'a"b\\c\t\x07\x08\n\x0b\x0c\r'),
      prop.strings('l', ['x', 'y']),
      prop.bytes('notstr', Buffer.from('a\0\0', 'latin1')),
      prop.bytes('leadnul', Buffer.from('\0a\0', 'latin1')),
      prop.bytes('high', Buffer.from('\u00e9\0', 'latin1')),
      prop.bytes('ctl', Buffer.from('\x01\0', 'latin1')),
      prop.bytes('nonul', Buffer.from('abc', 'latin1')),
      prop.u32('cells', 0, 0xdeadbeef),
      prop.empty('flag'),
      prop.u32('#include', 1),
      prop.empty('#'),
    ], [node('c@1,2', [], [node('d@')])]),
    reservations: [{ address: 1n, size: 0xffffffffffffffffn }],
    bootCpuId: 7,
  };
  const dts = printDts(tree);
  t.match(dts, /s = "a\\"b\\\\c\\t\\a\\b\\n\\v\\f\\r";/);
  t.match(dts, /l = "x", "y";/);
  t.match(dts, /notstr = \[61 00 00\];/);
  t.match(dts, /leadnul = \[00 61 00\];/);
  t.match(dts, /high = \[e9 00\];/);
  t.match(dts, /ctl = \[01 00\];/);
  t.match(dts, /nonul = \[61 62 63\];/);
  t.match(dts, /cells = <0x00 0xdeadbeef>;/);
  t.match(dts, /\tflag;/);
  t.match(dts, /\\#include = <0x01>;\n\t#;/, 'directive-like names are escaped');
  t.match(dts, /\/memreserve\/ 0x0000000000000001 0xffffffffffffffff;/);
  t.notMatch(dts, /plugin/);
  t.same(plainFdt(parseDts(dts).fdt), plainFdt({ ...tree, bootCpuId: 0 }), 'exact round trip; the boot CPU is not DTS');
  t.match(printDts({ root: node(''), reservations: [], bootCpuId: 0 }, { plugin: true }), /^\/dts-v1\/;\n\/plugin\/;\n\n\/ \{\n\};\n$/);
  const bad: [Fdt['root'], RegExp][] = [
    [node('', [prop.empty('a@b')]), /cannot print \/: property name "a@b" is not valid DTS/],
    [node('', [], [node('x', [], [node('a b')])]), /cannot print \/x\/a b: node name "a b"/],
    [node('', [], [node('a@b@c')]), /node name "a@b@c"/],
  ];
  for (const [root, re] of bad) {
    const e = mkError(() => printDts({ root, reservations: [], bootCpuId: 0 }));
    t.equal(e.code, 'ERR_MK_INVALID_FDT');
    t.match(e.message, re);
  }
  t.ok(decodeFdt(encodeFdt(parseDts(dts).fdt)));
});

t.test('syntax errors name file, line and column', async (t) => {
  const H = '/dts-v1/;\n';
  const cases: [string, RegExp][] = [
    ['', /^<dts>:1:1: expected '\/dts-v1\/;' but found end of input/],
    ['/ { };', /^<dts>:1:1: expected '\/dts-v1\/;'/],
    ['/dts-v1/', /1:9: expected ';' but found end of input/],
    [`${H}/* open`, /2:1: unterminated \/\* comment/],
    [`${H}#include "x.dtsi"\n/ { };`, /2:1: preprocessor directives are not supported/],
    [`${H}/ {\n  #include <x.h>\n};`, /3:3: preprocessor directives are not supported/],
    [`${H}/ {\n  # 1 "x"\n};`, /3:3: preprocessor directives are not supported/],
    [`${H}/include/ "x.dtsi"`, /2:1: \/include\/ is not supported here/],
    [`${H}/ { /omit-if-no-ref/ x; };`, /2:5: \/omit-if-no-ref\/ is not supported here/],
    [`${H}/ { = };`, /2:5: unexpected "= };"/],
    [`${H}x { };`, /2:1: unexpected "x \{ \};"/],
    [`${H}`, /no root node/],
    [`${H}&nope { };`, /2:1: label or path nope not found$/],
    [`/dts-v1/; /plugin/; / { }; &nope { };`, /label or path nope not found \(references to labels outside/],
    [`${H}/delete-node/ &{/x};`, /2:15: label or path \/x not found/],
    [`${H}/delete-node/ x;`, /2:15: expected '&label' or '&\{\/path\}'/],
    [`${H}/ { }; &{x} { };`, /2:8: path reference &\{x\} is not absolute/],
    [`${H}/ { a@b; };`, /2:5: invalid property name "a@b"/],
    [`${H}/ { /delete-property/ a@b; };`, /2:23: invalid property name "a@b"/],
    [`${H}/ { a*b { }; };`, /2:5: invalid node name "a\*b"/],
    [`${H}/ { x { }; p = <1>; };`, /2:12: properties must precede subnodes/],
    [`${H}/ { /delete-node/ x; /delete-property/ p; };`, /2:22: properties must precede subnodes/],
    [`${H}/ { p <1>; };`, /2:7: expected '\{', '=' or ';' after "p"/],
    [`${H}/ { p = ; };`, /2:9: expected a property value/],
    [`${H}/ { p = /bits/ 12 <1>; };`, /2:16: \/bits\/ must be followed by 8, 16, 32 or 64/],
    [`${H}/ { p = /bits/ x <1>; };`, /\/bits\/ must be followed/],
    [`${H}/ { p = <1 2`, /expected a number but found end of input/],
    [`${H}/ { p = <x>; };`, /2:10: expected a number but found "x>; };"/],
    [`${H}/ { p = <0x1g>; };`, /expected a number/],
    [`${H}/ { p = <09>; };`, /2:10: invalid octal literal 09/],
    [`${H}/ { p = <0x10000000000000000>; };`, /integer literal 0x10000000000000000 out of range/],
    [`${H}/ { p = <0x100000000>; };`, /2:10: value out of range for a 32-bit cell/],
    [`${H}/ { p = /bits/ 8 <256>; };`, /value out of range for a 8-bit cell/],
    [`${H}/ { p = <(1/0)>; };`, /2:12: division by zero/],
    [`${H}/ { p = <(1%0)>; };`, /division by zero/],
    [`${H}/ { p = <(1 ? 2 3)>; };`, /expected ':'/],
    [`${H}/ { p = <(1 2)>; };`, /expected '\)'/],
    [`${H}/ { p = <''>; };`, /2:10: character literal has 0 bytes instead of 1/],
    [`${H}/ { p = <'ab'>; };`, /character literal has 2 bytes/],
    [`${H}/ { p = <'é'>; };`, /character literal has 2 bytes/],
    [`${H}/ { p = <'😀'>; };`, /character literal has 4 bytes/],
    [`${H}/ { p = <'a`, /2:10: unterminated character literal/],
    [`${H}/ { p = <'\\`, /unexpected end of input after \\/],
    [`${H}/ { p = "\\x"; };`, /2:10: \\x used with no following hex digits/],
    [`${H}/ { p = "abc`, /2:9: unterminated string/],
    [`${H}/ { p = [0]; };`, /2:10: expected two hex digits or '\]'/],
    [`${H}/ { p = /bits/ 64 <&a>; };`, /phandle references are only allowed in 32-bit cells/],
    [`/dts-v1/; /plugin/; / { p = <&a>; a: a { }; };`, /need __local_fixups__/],
    [`${H}/ { p = <&a>; };`, /2:10: reference to undefined label or path a/],
    [`${H}/ { p = &a; };`, /2:9: reference to undefined label or path a/],
    [`${H}/ { x: a { }; x: b { }; };`, /2:15: duplicate label x/],
    [`${H}/ { x: p; x: q; };`, /2:11: duplicate label x/],
    [`${H}/ { p; p; };`, /2:8: duplicate property p/],
    [`${H}/ { a { }; a { }; };`, /2:12: duplicate node a/],
    [`${H}/ { a { }; /delete-node/ a; };`, /2:26: duplicate node a/],
    [`${H}/ { phandle = <1 2>; };`, /phandle must be a single 32-bit cell/],
    [`${H}/ { phandle = "abcd"; };`, /phandle must be a single 32-bit cell/],
    [`${H}/ { phandle = <1>, <2>; };`, /phandle must be a single 32-bit cell/],
    [`${H}/ { phandle = <0>; };`, /phandle value 0x0 is invalid/],
    [`${H}/ { linux,phandle = <0xffffffff>; };`, /linux,phandle value 0xffffffff is invalid/],
    [`${H}/ { phandle = <1>; linux,phandle = <2>; };`, /linux,phandle disagrees/],
    [`${H}/ { a { phandle = <1>; }; b { phandle = <1>; }; };`, /duplicate phandle 0x1/],
  ];
  for (const [src, re] of cases) {
    const e = mkError(() => parseDts(src));
    t.equal(e.code, 'ERR_MK_DTS_SYNTAX', src);
    t.match(e.message, re, src);
  }
  const e = mkError(() => parseDts(`${H}/ { p = <x>; };`, { fileName: 'board.dts' }));
  t.match(e.message, /^board\.dts:2:10: /);
  t.same(e.details, { fileName: 'board.dts', line: 2, column: 10 });
  t.same(readU32s({ name: 'p', value: parseDts(`${H}/ { phandle = <1>; linux,phandle = <1>; a = <(((((1)))))>; };`).fdt.root.properties[2].value }), [1]);
});

t.test('parsing enforces limits', async (t) => {
  const H = '/dts-v1/;\n';
  const limit = (src: string, limits: object, re: RegExp): void => {
    const e = mkError(() => parseDts(src, { limits }));
    t.equal(e.code, 'ERR_MK_FDT_LIMIT', src.slice(0, 60));
    t.match(e.message, re);
  };
  limit(`${H}/ { };`, { maxSize: 5 }, /source of 16 characters is larger than maxSize 5/);
  limit(`${H}/ { a { b { }; }; };`, { maxDepth: 2 }, /2:9: nodes nested deeper than maxDepth 2/);
  limit(`${H}/ { a: a { }; }; &a { b { }; };`, { maxDepth: 2 }, /2:18: nodes nested deeper than maxDepth 2/);
  limit('/dts-v1/; /plugin/; / { }; &{/x} { a { }; };', { maxDepth: 3 }, /nodes nested deeper than maxDepth 3/);
  limit(`${H}/ { a { }; b { }; };`, { maxNodes: 2 }, /2:12: more than maxNodes 2 nodes/);
  limit('/dts-v1/; /plugin/; &{/x} { };', { maxNodes: 1 }, /more than maxNodes 1/);
  limit(`${H}/ { p = &a, &a, &a, &a, &a; a: ${'n'.repeat(30)} { }; };`, { maxSize: 100 }, /2:17: tree larger than maxSize 100 bytes/);
  limit(`${H}/ { p = &a, &a, &a, [${'00'.repeat(8)}]; a: ${'n'.repeat(30)} { }; };`, { maxSize: 110 }, /2:5: tree larger than maxSize 110 bytes/);
  limit(`${H}/ { p = <${'('.repeat(300)}1${')'.repeat(300)}>; };`, {}, /expression nested deeper than 256/);
  limit(`${H}/ { p = <(${'-'.repeat(300)}1)>; };`, {}, /expression nested deeper than 256/);
  t.ok(parseDts(`${H}/ { a { b { }; }; };`, { limits: { maxDepth: 3, maxNodes: 3 } }));
  t.ok(parseDts(`${H}/ { p = <(${'-'.repeat(200)}1)>; };`));
});
