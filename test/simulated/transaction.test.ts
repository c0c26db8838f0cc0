/**
 * Overlay transactions against kerf's lock held by another process on the same simulated host
 * (a state directory): applyOverlay waits while the file exists and writes only once it is gone;
 * a lock left by a killed kerf is reported with its age and never removed.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { MultikernelError } from '../../lib/errors';
import { encodeBaseline, type OverlayOp } from '../../lib/model';
import { SimulatedSystem } from '../../lib/system/simulated';
import type { System } from '../../lib/system/system';
import { applyOverlay } from '../../lib/transaction';
import { M } from './helpers';

const loader = '@tapjs/typescript/import';
const root = path.join(__dirname, '..', '..');
const LOCK = '/run/multikernel.lock';
const create: OverlayOp[] = [{ op: 'instance-create', name: 'web', memoryBytes: 64n << 20n, cpus: [2] }];

/** test/simulated/fixtures/kerf-holder.ts in a process of its own; `go()` starts its hold time. */
function kerfHolder(t: Test, stateDir: string, holdMs: string) {
  const proc = spawn(process.execPath, [`--import=${loader}`, path.join(__dirname, 'fixtures', 'kerf-holder.ts'), stateDir, holdMs], {
    stdio: ['pipe', 'pipe', 'inherit'],
    cwd: root,
  });
  t.teardown(() => proc.kill('SIGKILL'));
  const lines: string[] = [];
  const done = new Promise<number>((resolve) => proc.on('exit', (code) => resolve(code ?? -1)));
  proc.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
  /** the time the child printed with `word`, once it did */
  const said = async (word: string): Promise<number> => {
    for (;;) {
      const line = lines.find((l) => l.startsWith(`${word} `));
      if (line) return Number(line.split(' ')[1]);
      if (await Promise.race([done.then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 5, false))])) {
        const late = lines.find((l) => l.startsWith(`${word} `));
        if (late) return Number(late.split(' ')[1]);
        throw new Error(`kerf-holder exited before saying ${word}`);
      }
    }
  };
  return { proc, said, done, go: () => proc.stdin.write('go\n'), end: () => proc.stdin.end() };
}

async function host(t: Test): Promise<{ sim: SimulatedSystem; stateDir: string }> {
  const stateDir = path.join(t.testdir(), 'state');
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, encodeBaseline({ cpus: [2, 4, 6], memory: [{ size: 1n << 30n }] }));
  return { sim, stateDir };
}

const fds = (): number => fs.readdirSync('/proc/self/fd').length;

t.test('kerf holds its lock in another process: we wait, and write only after it let go', async (t) => {
  const { sim, stateDir } = await host(t);
  const kerf = kerfHolder(t, stateDir, '500');
  await kerf.said('locked');
  t.same(await sim.readdir('/var/run'), ['kerf.lock'], 'this process sees the other one\'s lock file');
  const before = fds();
  let writtenAt = 0;
  const sys = new Proxy(sim, {
    get(target, key) {
      if (key === 'writeFile') {
        return async (p: string, d: Uint8Array) => {
          if (p === `${M}/overlays/new`) writtenAt = Date.now();
          return target.writeFile(p, d);
        };
      }
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as unknown as System;
  const t0 = Date.now();
  kerf.go();
  const r = await applyOverlay(sys, create, { lockPath: LOCK });
  const took = Date.now() - t0;
  const unlockedAt = await kerf.said('unlocked');
  t.equal(r.status, 'applied');
  t.ok(took >= 400, `waited ${took} ms for the 500 ms hold`);
  t.ok(writtenAt >= unlockedAt, `the overlay was written ${writtenAt - unlockedAt} ms after kerf unlinked its lock`);
  t.same(await sim.readdir('/var/run'), [], 'ours removed too');
  t.same(await sim.readdir(`${M}/instances`), ['web']);
  t.equal(fds(), before, 'no fd left open');
  kerf.end();
  t.equal(await kerf.done, 0);
});

t.test('a kerf killed while holding its lock leaves it stale: ERR_MK_LOCKED with its age, never removed', async (t) => {
  const { sim, stateDir } = await host(t);
  const kerf = kerfHolder(t, stateDir, 'forever');
  const lockedAt = await kerf.said('locked');
  kerf.proc.kill('SIGKILL');
  await kerf.done;
  const before = fds();
  const err = (await applyOverlay(sim, create, { lockPath: LOCK, lockTimeoutMs: 300 }).catch((e: unknown) => e)) as MultikernelError;
  t.equal(err.code, 'ERR_MK_LOCKED');
  t.equal(err.details.path, '/var/run/kerf.lock');
  const age = err.details.ageMs as number;
  t.ok(age >= 300 && age <= Date.now() - lockedAt + 1000, `the age of the file (${age} ms)`);
  t.match(err.message, /kerf writes no pid into it, so whether it is stale cannot be proven.*pgrep -f kerf.*rm \/var\/run\/kerf\.lock/);
  t.same(await sim.readdir('/var/run'), ['kerf.lock'], 'still there');
  t.same((await sim.readdir(`${M}/overlays`)).filter((n) => n.startsWith('tx_')), [], 'nothing written');
  t.equal(fds(), before, 'no fd left open');
  await sim.unlink('/var/run/kerf.lock');
  t.equal((await applyOverlay(sim, create, { lockPath: LOCK })).status, 'applied', 'after the operator removed it');
});
