import { deepStrictEqual } from 'node:assert';
import t from 'tap';
import fc from 'fast-check';
import { decodeFdt, encodeFdt, parseDts, printDts } from '../../lib/fdt';
import { fdtArb } from './arbitraries';
import { plainFdt } from './helpers';

// Seeded and bounded: the same cases on every run, a second or two each.
const RUNS = 300;

t.test('decode(encode(tree)) is the tree, and encode(decode(blob)) the blob', async (t) => {
  fc.assert(
    fc.property(fdtArb, (tree) => {
      const blob = encodeFdt(tree);
      const back = decodeFdt(blob);
      deepStrictEqual(plainFdt(back), plainFdt(tree));
      return encodeFdt(back).equals(blob);
    }),
    { seed: 0x5eed, numRuns: RUNS },
  );
  t.pass(`${RUNS} random trees`);
});

t.test('parseDts(printDts(tree)) is the tree (boot CPU aside), with and without /plugin/', async (t) => {
  fc.assert(
    fc.property(fdtArb, fc.boolean(), (tree, plugin) => {
      const parsed = parseDts(printDts(tree, { plugin }));
      deepStrictEqual(plainFdt(parsed.fdt), plainFdt({ ...tree, bootCpuId: 0 }));
      return parsed.plugin === plugin;
    }),
    { seed: 0xd75, numRuns: RUNS },
  );
  t.pass(`${RUNS} random trees`);
});
