// 8 processes x 200 operations on one state directory, with random SIGKILLs: never two holders
// of the state lock at once, and no acknowledged update lost. Once with flock(2) (the addon) and
// once with the lock files of lockfile.ts (what a host without the addon uses).
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { FORCE_FILE_LOCKS_ENV } from '../../lib/system/simulated/state-dir';
import { compileWorkers } from '../helpers/compile-workers';

const WORKERS = 8;
const OPERATIONS = 200;
const KILLS = 3 * WORKERS;

/** Scratch space on tmpfs where there is one: fsync is then free, and the run measures the
 *  locking rather than the disk (an fsync takes ~10 ms on a loaded VM, 1600 of them a minute). */
function scratch(t: Test, name: string): string {
  const dir = fs.existsSync('/dev/shm') ? fs.mkdtempSync(`/dev/shm/mk-${name}-`) : t.testdir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The pid in the worker's critical-section marker, if there is one. */
function insidePid(dir: string): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(dir, 'in-critical-section'), 'latin1'));
  } catch {
    return undefined;
  }
}

interface Slot {
  done: number;
  incarnation: number;
  child?: ChildProcess;
  /** operations acknowledged by the current process */
  sinceSpawn: number;
}

async function stress(t: Test, worker: string, dir: string, env: NodeJS.ProcessEnv) {
  const acked = new Set<string>();
  const failures: string[] = [];
  const started = Date.now();
  const slots: Slot[] = Array.from({ length: WORKERS }, () => ({ done: 0, incarnation: 0, sinceSpawn: 0 }));
  // The kills fall at random points between 5% and 90% of the work, a random 0-20 ms after the
  // acknowledgement that triggers them (so anywhere in an operation).
  const total = WORKERS * OPERATIONS;
  const killAt = Array.from({ length: KILLS }, () => Math.floor(total * (0.05 + Math.random() * 0.85))).sort((a, b) => a - b);
  let kills = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  let running = 0;
  t.teardown(() => slots.forEach((s) => s.child?.kill('SIGKILL')));

  // A kill hits the process inside the critical section when the worker's marker names one, so
  // that the lock is often left behind by a dead holder; otherwise a random busy worker.
  const maybeKill = (): void => {
    if (killAt.length === 0 || acked.size < killAt[0]!) return;
    killAt.shift();
    setTimeout(() => {
      const busy = slots.filter((s) => s.child && s.sinceSpawn > 0 && s.done < OPERATIONS);
      const inside = insidePid(dir);
      const victim = busy.find((s) => s.child!.pid === inside) ?? busy[Math.floor(Math.random() * busy.length)];
      if (victim?.child!.kill('SIGKILL')) {
        victim.sinceSpawn = 0;
        kills += 1;
      }
    }, Math.random() * 20);
  };

  const spawnSlot = (n: number): void => {
    const slot = slots[n]!;
    const tag = `w${n}.${slot.incarnation++}`;
    const child = spawn(process.execPath, [worker, dir, tag, String(OPERATIONS - slot.done)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    slot.child = child;
    slot.sinceSpawn = 0;
    running += 1;
    let partial = '';
    child.stdout!.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        acked.add(line);
        slot.done += 1;
        slot.sinceSpawn += 1;
        maybeKill();
      }
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code, signal) => {
      running -= 1;
      slot.child = undefined;
      if (signal !== 'SIGKILL' && code !== 0) failures.push(`${tag} exited ${code ?? signal}: ${stderr}`);
      if (slot.done < OPERATIONS && failures.length === 0) spawnSlot(n);
      else if (running === 0) finish();
    });
  };
  for (let n = 0; n < WORKERS; n++) spawnSlot(n);
  await finished;
  const sim = new SimulatedSystem({ stateDir: dir });
  const entries = await sim.notified();
  await sim.dispose();
  return { acked, entries, kills, failures, seconds: (Date.now() - started) / 1000 };
}

t.test('the state lock under contention and SIGKILLs', async (t) => {
  const [worker] = compileWorkers(scratch(t, 'state-stress-js'), ['test/simulated/fixtures/state-worker.ts']);
  for (const protocol of ['flock', 'files'] as const) {
    await t.test(`${WORKERS} processes x ${OPERATIONS} operations with ${KILLS} random SIGKILLs (${protocol})`, async (t) => {
      const dir = path.join(scratch(t, 'state-stress'), 'state');
      // Without tap's NODE_OPTIONS: its process tracking costs each start more than the work.
      const env = { ...process.env, NODE_OPTIONS: '', [FORCE_FILE_LOCKS_ENV]: protocol === 'files' ? 'files' : '' };
      const r = await stress(t, worker, dir, env);
      t.comment(`${protocol}: ${r.acked.size} acknowledged, ${r.entries.length} in the state, ${r.kills} SIGKILLs, ${r.seconds.toFixed(1)} s`);
      t.equal(fs.readFileSync(path.join(dir, 'locks', 'protocol'), 'utf8'), `${protocol}\n`);
      t.same(r.failures, [], 'no worker saw a second holder in the critical section, or failed');
      t.equal(r.acked.size, WORKERS * OPERATIONS, 'every operation was acknowledged once');
      t.ok(r.kills >= WORKERS, `${r.kills} workers were killed`);
      t.equal(new Set(r.entries).size, r.entries.length, 'no operation applied twice');
      t.same([...r.acked].filter((a) => !r.entries.includes(a)), [], 'no acknowledged operation lost');
      const unacked = r.entries.length - r.acked.size;
      t.ok(unacked >= 0 && unacked <= r.kills, `${unacked} applied but unacknowledged operations, at most one per SIGKILL`);
    });
  }
});
