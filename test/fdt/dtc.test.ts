/**
 * Debian's dtc as the oracle, both ways. Skips (saying why) when dtc is not installed;
 * CI installs it with `apt-get install -y device-tree-compiler`.
 */
import { deepStrictEqual } from 'node:assert';
import t from 'tap';
import fc from 'fast-check';
import { decodeFdt, encodeFdt, parseDts, printDts } from '../../lib/fdt';
import { fdtArb } from './arbitraries';
import { dtc, dtcVersion, plainFdt } from './helpers';
import { SOURCES } from './sources';

const version = dtcVersion();
const skip = version === undefined ? 'dtc not found: install it with apt-get install -y device-tree-compiler' : false;
if (version !== undefined) t.comment(`oracle: ${version}`);

t.test('hand-written sources: dtc and we compile them to the same bytes', { skip }, async (t) => {
  for (const [name, src] of Object.entries(SOURCES)) {
    const theirs = dtc(['-I', 'dts', '-O', 'dtb'], src);
    const ours = parseDts(src).fdt;
    t.same(plainFdt(decodeFdt(theirs)), plainFdt(ours), `${name}: decoded dtc blob equals our parse`);
    t.ok(encodeFdt(ours).equals(theirs), `${name}: byte-identical to dtc`);
  }
});

t.test('dtc compiles our printed DTS back to our blob; dtc decompiles our blob to DTS we parse', { skip }, async (t) => {
  for (const [name, src] of Object.entries(SOURCES)) {
    const { fdt, plugin } = parseDts(src);
    const blob = encodeFdt(fdt);
    t.ok(dtc(['-I', 'dts', '-O', 'dtb'], printDts(fdt, { plugin })).equals(blob), `${name}: printed DTS`);
    const decompiled = dtc(['-I', 'dtb', '-O', 'dts'], blob).toString('utf8');
    t.same(plainFdt(parseDts(decompiled).fdt), plainFdt(fdt), `${name}: dtc's DTS parses to our tree`);
    t.ok(dtc(['-I', 'dts', '-O', 'dtb'], decompiled).equals(blob), `${name}: dtc's DTS recompiles to our blob`);
  }
});

t.test('random trees agree with dtc both ways (seeded, 40 trees)', { skip }, async (t) => {
  let runs = 0;
  fc.assert(
    fc.property(fdtArb, (tree) => {
      runs++;
      const blob = encodeFdt(tree);
      const boot = ['-b', String(tree.bootCpuId)];
      // Our DTS through dtc is our blob, byte for byte.
      deepStrictEqual(dtc(['-I', 'dts', '-O', 'dtb', ...boot], printDts(tree)).toString('hex'), blob.toString('hex'));
      // dtc re-encoding our blob changes nothing.
      deepStrictEqual(dtc(['-I', 'dtb', '-O', 'dtb'], blob).toString('hex'), blob.toString('hex'));
      // dtc's decompiled DTS parses to our tree.
      const decompiled = dtc(['-I', 'dtb', '-O', 'dts'], blob).toString('utf8');
      deepStrictEqual(plainFdt(parseDts(decompiled).fdt), plainFdt({ ...tree, bootCpuId: 0 }));
    }),
    { seed: 0xd7c, numRuns: 40 },
  );
  t.equal(runs, 40);
});
