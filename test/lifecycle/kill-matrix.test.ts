// A crash of our own process at every step of every lifecycle verb (issue 13's fault matrix, the
// SIGKILL half; faults.test.ts is the errno half): a worker process runs the verb on a simulated
// host in a state directory and is killed with SIGKILL just before its K-th call that changes the
// host, for every K. Each kill must leave the host consistent: the kernel state is the one from
// before the verb or the one after it (no half-applied transaction, no transaction left
// unapplied), and the next command succeeds: the verb itself when the kill came before its
// change, otherwise the next writer, which must not wait for the lock the killed process held.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { withWriterLocks } from '../../lib/transaction';
import { compileWorkers } from '../helpers/compile-workers';
import { digest } from './fixtures/digest';
import { atStage, instanceA, killCases, openHost, openSystem } from './fixtures/kill-cases';

const scratch = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/mk-kill-matrix-') : t.testdir();
t.teardown(() => fs.rmSync(scratch, { recursive: true, force: true }));
const [, , , worker] = compileWorkers(path.join(scratch, 'js'), ['test/helpers/run-worker.ts', 'test/lifecycle/fixtures/digest.ts', 'test/lifecycle/fixtures/kill-cases.ts', 'test/lifecycle/fixtures/kill-worker.ts']);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    // without tap's NODE_OPTIONS: its process tracking costs each start more than the work
    const child = spawn(process.execPath, [worker!, ...args], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** The host of a state directory as a new process finds it: what digest() shows. */
async function look(stateDir: string, lockPath: string): Promise<string> {
  const system = openSystem(stateDir);
  try {
    return await digest(await openHost(system, lockPath), system, { kerfLock: false });
  } finally {
    await system.dispose();
  }
}

let kills = 0;
for (const [index, c] of killCases.entries()) {
  t.test(`${c.verb}: SIGKILL before each change leaves the host before or after, and the next command succeeds`, async (t) => {
    const dir = path.join(scratch, `case-${index}`);
    const lockPath = path.join(dir, 'flock');
    const setup = path.join(dir, 'setup');
    fs.mkdirSync(dir);
    {
      const system = openSystem(setup);
      await atStage(await openHost(system, lockPath), c.stage);
      await system.dispose();
    }
    const before = await look(setup, lockPath);
    const fresh = (name: string): string => {
      const to = path.join(dir, name);
      fs.cpSync(setup, to, { recursive: true });
      return to;
    };

    // an undisturbed run: how many changes, and the state after them
    const fullDir = fresh('full');
    const full = await run([fullDir, lockPath, String(index)]);
    t.equal(full.code, 0, `an undisturbed run succeeds: ${full.stderr}`);
    const { calls, log } = JSON.parse(full.stdout) as { calls: number; log: string[] };
    const after = await look(fullDir, lockPath);
    t.not(after, before, 'the verb changes the host');
    t.comment(`${calls} changing calls: ${log.join(', ')}`);

    const landed = { before: 0, after: 0 };
    for (let k = 1; k <= calls; k++) {
      const stateDir = fresh(`kill-${k}`);
      const killed = await run([stateDir, lockPath, String(index), String(k)]);
      kills += 1;
      t.equal(killed.signal, 'SIGKILL', `killed before call ${k} (${log[k - 1]}): ${killed.stderr}`);
      const fds = openFds();
      const left = await look(stateDir, lockPath);
      t.ok(left === before || left === after, `before call ${k} (${log[k - 1]}): the host is as before the verb or as after it`, { left, before, after });
      const system = openSystem(stateDir);
      try {
        const host = await openHost(system, lockPath);
        const t0 = Date.now();
        if (left === before) {
          // the next command: the verb again, which must not wait for the killed process's locks
          landed.before += 1;
          await c.run(host, await instanceA(host, c.stage));
          t.equal(await digest(host, system, { kerfLock: false }), after, `before call ${k}: the verb run again succeeds`);
        } else {
          landed.after += 1;
          await withWriterLocks(system, { lockPath, lockTimeoutMs: 5000 }, async () => undefined, () => 'nothing');
        }
        t.ok(Date.now() - t0 < 2500, `before call ${k}: the next command took the writers' locks at once (${Date.now() - t0} ms)`);
        t.same(await system.readdir('/var/run'), [], `before call ${k}: no kerf lock is left`);
      } finally {
        await system.dispose();
      }
      t.equal(openFds(), fds, `before call ${k}: the next command leaves no fd open`);
    }
    t.comment(`kills: ${landed.before} left the host as before, ${landed.after} as after`);
  });
}

t.test('the matrix ran', async (t) => {
  t.ok(kills >= killCases.length, `${kills} kills over ${killCases.length} verbs`);
});
