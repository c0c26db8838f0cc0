// Crash safety of apply: a process applying a spec to a simulated host (a state directory shared
// by processes) is killed with SIGKILL at 20 points spread over the whole run; a fresh process
// then applies again. Each time it must converge with every instance once, no transaction left
// failed, and a plan made afterwards must be empty.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { SimulatedSystem } from '../../lib/simulated';
import { Host } from '../../lib/host';
import { plan } from '../../lib/spec/engine';
import { MK_OVERLAYS, txDir, txIds } from '../../lib/kernfs';
import { withWriterLocks } from '../../lib/transaction';
import { specs } from './fixtures/apply-worker';
import { kernels } from './helpers';
import { compileWorkers } from '../helpers/compile-workers';

const KILL_POINTS = 20;

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** ms from "ready" to the exit */
  ms: number;
}

/** Runs the worker; with `kill`, SIGKILLs it `ms` after it printed "step <afterStep>" ("ready" for 0). */
function run(worker: string, args: string[], kill?: { afterStep: number; ms: number }): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    // without tap's NODE_OPTIONS: its process tracking costs each start more than the work
    const child = spawn(process.execPath, [worker, ...args], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let ready = 0;
    let armed = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (ready === 0 && stdout.startsWith('ready\n')) ready = Date.now();
      const mark = kill === undefined ? undefined : kill.afterStep === 0 ? 'ready\n' : `\nstep ${kill.afterStep}\n`;
      if (!armed && mark !== undefined && stdout.includes(mark)) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), kill!.ms);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: ready === 0 ? 0 : Date.now() - ready }));
  });
}

/** What the host shows: pool, instances with status, transactions not applied, kerf's lock. */
async function state(stateDir: string): Promise<{ pool: boolean; instances: string[]; failedTxs: number[]; kerfLock: boolean }> {
  const system = new SimulatedSystem({ stateDir });
  try {
    const host = await Host.open({ system });
    const instances: string[] = [];
    for (const i of await host.instances()) instances.push(`${i.name}:${await i.status()}`);
    const failedTxs: number[] = [];
    for (const id of txIds(await system.readdir(MK_OVERLAYS))) {
      if ((await system.readFile(`${txDir(id)}/status`)).toString().trim() !== 'applied') failedTxs.push(id);
    }
    const kerfLock = await system.stat('/var/run/kerf.lock').then(() => true, () => false);
    return { pool: (await host.pool.snapshot()).exists, instances, failedTxs, kerfLock };
  } finally {
    await system.dispose();
  }
}

const scratch = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/mk-apply-kill-') : t.testdir();
t.teardown(() => fs.rmSync(scratch, { recursive: true, force: true }));
const [, , worker] = compileWorkers(path.join(scratch, 'js'), ['test/helpers/run-worker.ts', 'test/spec/helpers.ts', 'test/spec/fixtures/apply-worker.ts']);
const kernelDir = path.join(scratch, 'kernels');
fs.mkdirSync(kernelDir);
kernels(kernelDir);

t.test(`apply killed with SIGKILL at ${KILL_POINTS} points, then run again, converges`, async (t) => {

  // an undisturbed run: how many steps, and how long
  const full = await run(worker, [path.join(scratch, 'measure', 'sim'), kernelDir, 'full']);
  t.equal(full.code, 0, full.stderr);
  t.match(full.stdout, /\ndone \{"converged":\[true,true\],"errors":\[\]\}\n$/);
  const steps = full.stdout.split('\n').filter((l) => l.startsWith('step ')).length;
  const perStep = full.ms / (steps + 1);
  t.comment(`an undisturbed run: ${steps} steps in ${full.ms} ms after "ready"`);

  const seen = new Map<string, string[]>();
  let leftKerfLock = 0;
  for (let i = 0; i < KILL_POINTS; i++) {
    // spread over the steps (killed after step k, or after "ready"), and at 0, 1/3 or 2/3 of a step's time
    const afterStep = Math.floor((i * steps) / KILL_POINTS);
    const ms = Math.round(((i % 3) * perStep) / 3);
    const delay = `${afterStep === 0 ? 'ready' : `step ${afterStep}`} + ${ms} ms`;
    const stateDir = path.join(scratch, `kill-${i}`, 'sim');
    const killed = await run(worker, [stateDir, kernelDir, 'full'], { afterStep, ms });
    t.ok(killed.signal === 'SIGKILL' || killed.code === 0, `kill point ${i} (${delay}): killed or finished: ${killed.stderr}`);
    const after = await state(stateDir);
    const key = `${killed.signal === 'SIGKILL' ? 'killed' : 'finished'}: pool ${after.pool ? 'yes' : 'no'}; ${after.instances.join(' ') || 'no instances'}${after.failedTxs.length > 0 ? `; failed tx ${after.failedTxs.join(',')}` : ''}${after.kerfLock ? "; kerf's lock left" : ''}`;
    seen.set(key, [...(seen.get(key) ?? []), delay]);
    t.same(after.failedTxs, [], `kill point ${i}: no transaction left failed`);
    // Killed between creating kerf's lock file and removing it: the file names this library's
    // killed process as its writer, so the next writer removes it (transaction.ts removeIfStale)
    // instead of waiting 30 s for an operator: the second apply, when it has a step left to
    // write, else the next change (below).
    if (after.kerfLock) leftKerfLock += 1;
    const again = await run(worker, [stateDir, kernelDir, 'recover']);
    t.equal(again.code, 0, `kill point ${i}: the second apply ran: ${again.stderr}`);
    t.match(again.stdout, /\ndone \{"converged":\[true\],"errors":\[\]\}\n$/, `kill point ${i}: converged`);
    const end = await state(stateDir);
    t.same(end.instances, ['web:active', 'db:active'], `kill point ${i}: each instance once, running`);
    t.same(end.failedTxs, []);
    if (end.kerfLock) {
      // the kill came after the last write: the second apply had nothing to write, so it never
      // took the locks; the next writer does, and removes the file without waiting
      const system = new SimulatedSystem({ stateDir });
      const t0 = Date.now();
      await withWriterLocks(system, { lockPath: path.join(scratch, 'flock'), lockTimeoutMs: 5000 }, async () => undefined, () => 'nothing');
      t.ok(Date.now() - t0 < 2000, `kill point ${i}: the next writer took kerf's lock at once`);
      t.same(await system.readdir('/var/run'), [], `kill point ${i}: and no kerf lock is left`);
      await system.dispose();
    }
    const system = new SimulatedSystem({ stateDir });
    const host = await Host.open({ system });
    t.same(await plan(host, specs(kernelDir).specB, { prune: true }), { steps: [], drift: [], unmanaged: [], converged: true }, `kill point ${i}: nothing left to plan`);
    await system.dispose();
  }
  t.comment(`states left by the kills (${leftKerfLock} with kerf's lock left behind):`);
  for (const [key, delays] of seen) t.comment(`  ${key}  <- ${delays.join('; ')}`);
  t.ok(seen.size >= 5, `the kills fell in ${seen.size} different states`);
});

t.test('killed while a failed transaction waits for its rollback: the record stays, reported as drift', async (t) => {
  const stateDir = path.join(scratch, 'failtx', 'sim');
  const killed = await run(worker, [stateDir, kernelDir, 'failtx'], { afterStep: 0, ms: 2000 });
  t.equal(killed.signal, 'SIGKILL', killed.stderr);
  const left = await state(stateDir);
  t.same(left.instances, ['web:ready'], 'the create did its first (and only) operation before it failed');
  t.equal(left.failedTxs.length, 1, 'and its transaction is left failed');
  // the rollback runs under the writers' locks: kerf's lock file is left too, naming the killed
  // process; the next apply removes it
  t.equal(left.kerfLock, true, "kerf's lock is left behind");
  const reader = new SimulatedSystem({ stateDir });
  t.match((await reader.readFile('/var/run/kerf.lock')).toString(), /^multikernel pid=\d+ start=\d+ boot=\S+\n$/, 'with its writer in it');
  await reader.dispose();
  const again = await run(worker, [stateDir, kernelDir, 'recover']);
  t.match(again.stdout, /\ndone \{"converged":\[true\],"errors":\[\]\}\n$/, again.stderr);
  const end = await state(stateDir);
  t.same(end.instances, ['web:active', 'db:active'], 'the instance it made is adopted by name: no duplicate');
  t.same(end.failedTxs, left.failedTxs, 'the record is left alone');
  const system = new SimulatedSystem({ stateDir });
  const host = await Host.open({ system });
  const p = await plan(host, specs(kernelDir).specB, { prune: true });
  t.same(p.steps, []);
  t.match(p.drift, [{ subject: `tx_${left.failedTxs[0]}`, actual: 'failed', message: /create web"\) is left "failed": its writer stopped before rolling it back/ }]);
  await system.dispose();
});
