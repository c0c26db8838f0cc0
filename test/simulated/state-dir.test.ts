import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { FileLocks } from '../../lib/system/simulated/lockfile';
import { baseline, memoryNode } from '../contract/suite';
import { M, MiB } from './helpers';

const loader = '@tapjs/typescript/import';
const worker = path.join(__dirname, 'fixtures', 'worker.ts');

function run(stateDir: string, tag: string, count: number): { done: Promise<number>; locked: Promise<void> } {
  const child = spawn(process.execPath, [`--import=${loader}`, worker, stateDir, tag, String(count)], { stdio: ['ignore', 'pipe', 'inherit'], cwd: path.join(__dirname, '..', '..') });
  const locked = new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve()));
  return { done: new Promise((resolve) => child.on('exit', (code) => resolve(code ?? -1))), locked };
}

t.test('two processes share one simulated host', async (t) => {
  const stateDir = t.testdir();
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, baseline([2, 4], [memoryNode(0, 512 * MiB)]));
  const a = run(stateDir, 'a', 10);
  const b = run(stateDir, 'b', 10);
  t.same(await Promise.all([a.done, b.done]), [0, 0]);
  const names = (await sim.readdir(`${M}/instances`)).sort();
  t.equal(names.length, 20, 'no update was lost');
  const txs = (await sim.readdir(`${M}/overlays`)).filter((n) => n.startsWith('tx_')).map((n) => Number(n.slice(3))).sort((x, y) => x - y);
  t.same(txs, Array.from({ length: 20 }, (_, i) => i + 2), 'tx ids 2..21, each handed out once');
  const second = new SimulatedSystem({ stateDir });
  t.teardown(() => second.dispose());
  t.same((await second.readdir(`${M}/instances`)).length, 20, 'a later process sees the same host');
  t.ok(fs.existsSync(path.join(stateDir, 'state.json')));
});

t.test('lock() is shared between processes', async (t) => {
  const stateDir = t.testdir();
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  const child = run(stateDir, 'c', 0);
  await child.locked;
  await t.rejects(sim.lock('/run/demo.lock', { wait: false }), { code: 'EWOULDBLOCK', syscall: 'flock', path: '/run/demo.lock' }, 'held by the other process');
  const t0 = Date.now();
  const held = await sim.lock('/run/demo.lock', { timeoutMs: 5000 });
  t.ok(Date.now() - t0 > 50, 'waited for the release');
  await held.release();
  await held.release();
  t.equal(await child.done, 0);
});

t.test('lock() semantics', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  const x = await sim.lock('/l');
  await t.rejects(sim.lock('/l', { wait: false }), { code: 'EWOULDBLOCK' });
  await t.rejects(sim.lock('/l', { exclusive: false, wait: false }), { code: 'EWOULDBLOCK' }, 'shared waits for an exclusive holder');
  await t.rejects(sim.lock('/l', { timeoutMs: 20 }), { code: 'ETIMEDOUT' });
  const ac = new AbortController();
  const pending = sim.lock('/l', { signal: ac.signal });
  ac.abort(new Error('stop'));
  await t.rejects(pending, { message: 'stop' });
  t.ok(await sim.lock('/other', { wait: false }), 'other paths are independent');
  await x.release();
  const s1 = await sim.lock('/l', { exclusive: false });
  const s2 = await sim.lock('/l', { exclusive: false, wait: false });
  await t.rejects(sim.lock('/l', { wait: false }), { code: 'EWOULDBLOCK' }, 'exclusive waits for shared holders');
  await s1.release();
  await s2.release();
  await (await sim.lock('/l', { wait: false })).release();
});

t.test('stale holders are recovered', async (t) => {
  const dir = t.testdir();
  const locks = new FileLocks(dir);
  const opts = { exclusive: true, wait: false, errorPath: 'k' };
  const release = await locks.acquire('k', opts);
  const file = fs.readdirSync(dir).map((f) => path.join(dir, f))[0]!;
  release();
  fs.writeFileSync(file, '999999999');
  await t.resolves(locks.acquire('k', opts).then((r) => r()), 'a dead pid is stale');
  fs.writeFileSync(file, '1');
  await t.rejects(locks.acquire('k', opts), { code: 'EWOULDBLOCK' }, 'a live process of another user holds it');
  fs.writeFileSync(file, '');
  await t.rejects(locks.acquire('k', opts), { code: 'EWOULDBLOCK' }, 'an empty file is a holder still writing its pid');
  const old = new Date(Date.now() - 5000);
  fs.utimesSync(file, old, old);
  await t.resolves(locks.acquire('k', opts).then((r) => r()), 'an empty file older than a second is stale');
  fs.writeFileSync(`${file.slice(0, -2)}.s.999999999.1`, '999999999');
  await t.resolves(locks.acquire('k', opts).then((r) => r()), 'a dead shared holder is stale');
  fs.mkdirSync(`${file.slice(0, -2)}.s.not-a-holder`);
  await t.resolves(locks.acquire('k', opts).then((r) => r()), 'an entry that cannot be read is no holder');
  fs.rmSync(dir, { recursive: true });
  await t.rejects(locks.acquire('k', opts), { code: 'ENOENT' }, 'a lock directory that vanished is an error');
});

t.test('a state file that cannot be read is an error', async (t) => {
  const stateDir = t.testdir({ 'state.json': {} });
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await t.rejects(sim.readdir(M), { code: 'EISDIR' });
});
