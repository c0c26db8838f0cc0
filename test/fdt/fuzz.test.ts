/**
 * Bounded, seeded fuzzing: random and mutated blobs and DTS text must either decode/parse or
 * fail with a MultikernelError; never another exception, never a hang. The mutations are the dtb
 * and dts targets of test/fuzz/targets.ts (whose long runs are `npm run fuzz`).
 */
import { performance } from 'node:perf_hooks';
import t, { type Test } from 'tap';
import { MultikernelError } from '../../lib/errors';
import { decodeFdt, parseDts } from '../../lib/fdt';
import { dtb, dts, runCases, type FuzzTarget } from '../fuzz/targets';
import { assemble } from './helpers';

/** A short run of a target of test/fuzz/targets.ts: every case accepted or refused with a typed error, none slow. */
async function shortRun(t: Test, target: FuzzTarget<unknown>, seed: number, cases: number): Promise<{ accepted: number; refused: number }> {
  const tally = await runCases(target, seed, 0, cases);
  t.equal(tally.finding, undefined, tally.finding ? `case ${tally.finding.i}: ${tally.finding.error}\ninput: ${tally.finding.input}` : 'no finding');
  t.equal(tally.done, cases);
  t.comment(`${target.name} fuzz: ${cases} inputs, ${tally.accepted} accepted, ${tally.refused} refused, slowest ${tally.slowestMs.toFixed(1)} ms`);
  t.ok(tally.slowestMs < 2000, 'no input takes long');
  return tally;
}

t.test('mutated and random blobs end in a tree or a MultikernelError', async (t) => {
  const tally = await shortRun(t, dtb as FuzzTarget<unknown>, 0xb10b, 6000);
  t.ok(tally.refused > 3000, 'most mutations are caught');
});

t.test('hostile blobs stay bounded', async (t) => {
  // Many properties naming distinct offsets inside one long unterminated-looking string.
  const n = 50000;
  const parts: number[] = [1, 0];
  for (let i = 0; i < n; i++) parts.push(3, 0, i);
  parts.push(2, 9);
  const blob = assemble(parts, `${'a'.repeat(n + 1000)}\0`);
  const t0 = performance.now();
  const e = (() => {
    try {
      decodeFdt(blob, { maxSize: 8 << 20 });
    } catch (err) {
      return err as MultikernelError;
    }
    return undefined;
  })();
  t.equal(e?.code, 'ERR_MK_FDT_LIMIT');
  t.match(e?.message, /property names total more than maxSize/);
  t.ok(performance.now() - t0 < 2000, 'rejected quickly');
});

t.test('mutated and random DTS text ends in a tree or a MultikernelError', async (t) => {
  const tally = await shortRun(t, dts as FuzzTarget<unknown>, 0xd75, 6000);
  t.ok(tally.refused > 0 && tally.accepted > 0);
});

t.test('hostile DTS stays bounded', async (t) => {
  const cases: [string, RegExp][] = [
    [`/dts-v1/; / { a: a { }; p = ${'&a, '.repeat(100000)}&a; };`, /./],
    [`/dts-v1/; / { ${'x { '.repeat(100)}${'}; '.repeat(100)} };`, /maxDepth/],
    [`/dts-v1/; / { p = <${'('.repeat(100000)}`, /expression nested/],
    [`/dts-v1/; / { p = <(${'~'.repeat(100000)}1)>; };`, /expression nested/],
    [`/dts-v1/; / { a: a { }; }; ${'&a { b { }; }; '.repeat(20000)}`, /./],
  ];
  for (const [src, re] of cases) {
    const t0 = performance.now();
    try {
      parseDts(src);
    } catch (e) {
      t.ok(e instanceof MultikernelError, String(e));
      t.match((e as Error).message, re);
    }
    t.ok(performance.now() - t0 < 3000, `bounded: ${src.slice(0, 40)}`);
  }
});
