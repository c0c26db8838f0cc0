/**
 * Long fuzz runs (issue 13; docs/reliability.md records them):
 *
 *   npm run fuzz -- [TARGET...] [--cases N] [--seed S] [--case-ms MS]
 *
 * Targets (test/fuzz/targets.ts): dtb, dts, exec-frames, spec, sim-state (default: all), each
 * `--cases` cases (default 1,000,000) from `--seed` (default 1). Each target runs in a child
 * process that reports its progress to this one; a child silent for longer than `--case-ms`
 * (default 5000) has hung on a case: it is killed, and the cases since its last report are run
 * again one by one to name the one that hangs. A finding (an exception the target's contract does
 * not allow, or a hang) prints the seed and case number that reproduce it and makes the exit
 * status 1. Prints per target: cases, accepted, refused, slowest case, rate; and, on stderr, how far
 * it is once a minute.
 */
import { fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { TARGETS, runCases, setStateSeed, type FuzzTarget, type Tally } from '../test/fuzz/targets';
import { makeStateSeed } from '../test/fuzz/state-seed';

type Progress = Tally;

type ToParent = { type: 'ready' } | { type: 'progress'; progress: Progress } | { type: 'end'; progress: Progress };

/** how long a child may take to load its target before its first case (the TypeScript loader compiles it) */
const START_MS = 120_000;

/** In the child: runs cases [from, to) of one target, reporting at most every 200 ms. */
async function child(name: string, seed: number, from: number, to: number): Promise<void> {
  const target = TARGETS[name] as FuzzTarget<unknown>;
  if (name === 'sim-state') setStateSeed(await makeStateSeed());
  const send = (m: ToParent): Promise<void> => new Promise((resolve) => process.send!(m, () => resolve()));
  await send({ type: 'ready' });
  const tally = await runCases(target, seed, from, to, (progress) => send({ type: 'progress', progress }));
  await send({ type: 'end', progress: tally });
}

/** Runs cases [from, to) in a child; resolves with its last progress, `hung` when it went silent. */
function runChild(name: string, seed: number, from: number, to: number, caseMs: number, onProgress?: (p: Progress) => void): Promise<{ progress: Progress; hung: boolean }> {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, ['--child', name, String(seed), String(from), String(to)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let last: Progress = { done: 0, accepted: 0, refused: 0, slowestMs: 0 };
    let ended = false;
    let timer = setTimeout(() => onSilence(), START_MS);
    const onSilence = (): void => {
      c.kill('SIGKILL');
      ended = true;
      resolve({ progress: last, hung: true });
    };
    c.on('message', (m: ToParent) => {
      if (m.type !== 'ready') {
        last = m.progress;
        onProgress?.(last);
      }
      clearTimeout(timer);
      timer = setTimeout(onSilence, caseMs);
      if (m.type === 'end') {
        ended = true;
        clearTimeout(timer);
        resolve({ progress: last, hung: false });
      }
    });
    c.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (!ended) reject(new Error(`fuzz child for ${name} exited ${code ?? signal} without a report`));
    });
  });
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: { cases: { type: 'string', default: '1000000' }, seed: { type: 'string', default: '1' }, 'case-ms': { type: 'string', default: '5000' } },
    allowPositionals: true,
  });
  const names = positionals.length > 0 ? positionals : Object.keys(TARGETS);
  for (const n of names) if (!(n in TARGETS)) throw new Error(`unknown target ${n}: one of ${Object.keys(TARGETS).join(', ')}`);
  const cases = Number(values.cases);
  const seed = Number(values.seed);
  const caseMs = Number(values['case-ms']);
  let status = 0;
  for (const name of names) {
    const t0 = performance.now();
    const total: Progress = { done: 0, accepted: 0, refused: 0, slowestMs: 0 };
    let from = 0;
    // A long run says how far it is once a minute (on stderr, so the closing line stays alone on stdout).
    let said = t0;
    const onProgress = (p: Progress): void => {
      const now = performance.now();
      if (now - said < 60_000) return;
      said = now;
      const done = from + p.done;
      const rate = done / ((now - t0) / 1000);
      process.stderr.write(`${name}: ${done} of ${cases} cases, ${rate.toFixed(0)} cases/s, about ${Math.ceil((cases - done) / rate / 60)} min left\n`);
    };
    while (from < cases) {
      const { progress, hung } = await runChild(name, seed, from, cases, caseMs, onProgress);
      total.done += progress.done;
      total.accepted += progress.accepted;
      total.refused += progress.refused;
      total.slowestMs = Math.max(total.slowestMs, progress.slowestMs);
      if (progress.finding) {
        status = 1;
        console.log(`${name}: FINDING at seed ${seed} case ${progress.finding.i} (reproduce: npm run fuzz -- ${name} --seed ${seed} --cases ${progress.finding.i + 1})\n  input: ${progress.finding.input}\n  ${progress.finding.error}`);
        break;
      }
      if (hung) {
        // the cases after the last report, one child each, to name the one that hangs
        const start = from + progress.done;
        let culprit: number | undefined;
        for (let i = start; i < Math.min(cases, start + 10_000) && culprit === undefined; i++) {
          const one = await runChild(name, seed, i, i + 1, caseMs);
          if (one.hung) culprit = i;
        }
        status = 1;
        console.log(`${name}: HANG: a case took more than ${caseMs} ms: seed ${seed} case ${culprit ?? `after ${start}`}`);
        break;
      }
      from += progress.done;
    }
    const s = (performance.now() - t0) / 1000;
    console.log(
      `${name}: ${total.done} cases (seed ${seed}): ${total.accepted} accepted, ${total.refused} refused as the contract allows (${TARGETS[name]!.rejects}), ` +
        `slowest case ${total.slowestMs.toFixed(1)} ms, ${(total.done / s).toFixed(0)} cases/s`,
    );
  }
  return status;
}

if (process.argv[2] === '--child') {
  const [, , , name, seed, from, to] = process.argv;
  void child(name!, Number(seed), Number(from), Number(to)).then(() => process.exit(0));
} else {
  void main().then((code) => process.exit(code));
}
