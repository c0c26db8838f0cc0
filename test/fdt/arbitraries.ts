/** fast-check generators of device trees dtc accepts (not a test file). */
import fc from 'fast-check';
import type { Fdt, FdtNode, FdtProperty } from '../../lib/fdt';

const lower = 'abcdefghijklmnopqrstuvwxyz';
const nodeChars = `${lower}ABCXYZ0123456789,._+-`;
const propChars = `${nodeChars}#?*`;
const word = (chars: string, max: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...chars), minLength: 1, maxLength: max });

/** Names dtc treats specially (or rejects) are left out: its checks would change the tree. */
const propName = word(propChars, 12).filter((n) => !['name', 'phandle', 'linux,phandle'].includes(n));
const nodeName = fc.tuple(word(`${lower}0123456789,._+-`, 10), fc.option(word(`${lower}0123456789`, 6), { nil: undefined }))
  .map(([base, unit]) => (unit === undefined ? base : `${base}@${unit}`));

const printable = fc.string({ unit: fc.constantFrom(...`${lower} "\\\t\n'{};/*<>[]&`), minLength: 1, maxLength: 12 });
const value: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 24 }),
  fc.array(printable, { minLength: 1, maxLength: 3 }).map((l) => new Uint8Array(Buffer.from(`${l.join('\0')}\0`, 'latin1'))),
  fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 6 }).map((cells) => {
    const b = Buffer.alloc(cells.length * 4);
    cells.forEach((c, i) => b.writeUInt32BE(c, i * 4));
    return new Uint8Array(b);
  }),
);

const properties: fc.Arbitrary<FdtProperty[]> = fc.uniqueArray(fc.record({ name: propName, value }), { selector: (p) => p.name, maxLength: 5 });

const level = (inner: fc.Arbitrary<FdtNode> | undefined): fc.Arbitrary<FdtNode> =>
  fc.record({
    name: nodeName,
    properties,
    children: inner === undefined ? fc.constant([]) : fc.uniqueArray(inner, { selector: (n) => n.name, maxLength: 3 }),
  });
/** Up to four levels below the root. */
const tree = level(level(level(level(undefined))));

const u64 = fc.bigInt({ min: 0n, max: 0xffffffffffffffffn });

/** Whole trees: root named "", a few reservations (never 0/0), any boot CPU. */
export const fdtArb: fc.Arbitrary<Fdt> = fc.record({
  root: fc.record({ properties, children: fc.uniqueArray(tree, { selector: (n) => n.name, maxLength: 4 }) }).map((r) => ({ name: '', ...r })),
  reservations: fc.array(fc.record({ address: u64, size: u64 }).filter((r) => r.address !== 0n || r.size !== 0n), { maxLength: 3 }),
  bootCpuId: fc.integer({ min: 0, max: 0xffffffff }),
});
