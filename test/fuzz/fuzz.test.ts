/**
 * The short fuzz runs of CI (issue 13): every target of test/fuzz/targets.ts for a few thousand
 * seeded cases in-process: each case accepted or refused with the typed error its contract names,
 * none slow. The long runs (a million cases each, a child process per target that names a hang)
 * are `npm run fuzz`; docs/reliability.md records them. The DTB and DTS targets run in
 * test/fdt/fuzz.test.ts.
 */
import t from 'tap';
import { execFrames, runCases, setStateSeed, simState, spec, type FuzzTarget } from './targets';
import { makeStateSeed } from './state-seed';

const SLOW_MS = 2000;

async function short(target: FuzzTarget<never>, seed: number, cases: number): Promise<void> {
  await t.test(`${target.name}: ${cases} cases from seed ${seed}`, async (t) => {
    const tally = await runCases(target as FuzzTarget<unknown>, seed, 0, cases);
    t.equal(tally.finding, undefined, tally.finding ? `case ${tally.finding.i}: ${tally.finding.error}\ninput: ${tally.finding.input}` : 'no finding');
    t.equal(tally.done, cases);
    t.ok(tally.accepted > 0 && tally.refused > 0, `both outcomes (${tally.accepted} accepted, ${tally.refused} refused: ${target.rejects})`);
    t.ok(tally.slowestMs < SLOW_MS, `the slowest case took ${tally.slowestMs.toFixed(1)} ms`);
  });
}

void (async () => {
  await short(execFrames as FuzzTarget<never>, 0xe7ec, 5000);
  await short(spec as FuzzTarget<never>, 0x59ec, 2000);
  setStateSeed(await makeStateSeed());
  await short(simState as FuzzTarget<never>, 0x57a7, 150);
})();
