// flock between two processes: the other process (fixtures/lock-holder.cjs) holds the lock; and
// many waiters in one process, which must not starve the holder's own fs calls.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadBinding } from '../../lib/binding';
import { LinuxSystem } from '../../lib/system/linux';

const binding = loadBinding();
const holderScript = path.join(__dirname, 'fixtures', 'lock-holder.cjs');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-flock-'));
const lockPath = path.join(dir, 'lock');
fs.writeFileSync(lockPath, '');
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

async function holder(mode: 'exclusive' | 'shared'): Promise<ChildProcess> {
  const child = spawn(process.execPath, [holderScript, lockPath, mode], { stdio: ['pipe', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  if (line.toString() !== 'locked\n') throw new Error(`holder said ${line.toString()}`);
  return child;
}

async function release(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.stdin?.end();
  await exited;
}

t.test('another process holds the lock exclusively', async (t) => {
  const fd = fs.openSync(lockPath, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const child = await holder('exclusive');
  t.equal(binding.flockTry(fd, true), false, 'try exclusive: false');
  t.equal(binding.flockTry(fd, false), false, 'try shared: false');

  let started = Date.now();
  t.equal(await binding.flockWait(fd, true, 150).promise, false, 'a wait with a timeout gives up');
  const waited = Date.now() - started;
  t.ok(waited >= 145 && waited < 2000, `after ${waited} ms`);

  t.equal(await binding.flockWait(fd, true, 0).promise, false, 'timeout 0 is one try');

  const cancelled = binding.flockWait(fd, true, -1);
  started = Date.now();
  setTimeout(() => cancelled.cancel(), 50);
  t.equal(await cancelled.promise, false, 'cancel ends an unbounded wait');
  t.ok(Date.now() - started < 2000, 'promptly');
  cancelled.cancel(); // harmless after the end

  const waiting = binding.flockWait(fd, true, 10_000);
  setTimeout(() => void release(child), 100);
  started = Date.now();
  t.equal(await waiting.promise, true, 'the wait succeeds once the other process lets go');
  t.ok(Date.now() - started < 5000, `within ${Date.now() - started} ms`);
  await once(child, 'exit').catch(() => {});
  binding.flockUnlock(fd);
  binding.flockUnlock(fd); // unlocking an unlocked fd is fine
});

t.test('shared locks coexist', async (t) => {
  const fd = fs.openSync(lockPath, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const child = await holder('shared');
  t.equal(binding.flockTry(fd, false), true, 'shared next to shared');
  binding.flockUnlock(fd);
  t.equal(await binding.flockWait(fd, false, 100).promise, true, 'waiting for shared succeeds at once');
  binding.flockUnlock(fd);
  t.equal(await binding.flockWait(fd, true, 50).promise, false, 'exclusive still waits');
  await release(child);
  t.equal(binding.flockTry(fd, true), true, 'exclusive once the other is gone');
  binding.flockUnlock(fd);
});

t.test('errors', async (t) => {
  const fd = fs.openSync(lockPath, 'r+');
  fs.closeSync(fd);
  t.throws(() => binding.flockTry(fd, true), { code: 'EBADF', syscall: 'flock', errno: -9 });
  t.throws(() => binding.flockUnlock(fd), { code: 'EBADF', syscall: 'flock' });
  await t.rejects(binding.flockWait(fd, true, 100).promise, { code: 'EBADF', syscall: 'flock', message: 'EBADF: bad file descriptor, flock' });
});

t.test('16 waiters and fs traffic in one process: each gets the lock in turn', async (t) => {
  // Waiting on libuv's 4-thread pool, 4 waiters would park it, and the holder's own readFile
  // before its release would queue behind them until every wait timed out.
  const system = new LinuxSystem();
  const started = Date.now();
  let holding = 0;
  let overlaps = 0;
  const order: number[] = [];
  const traffic = Promise.all(Array.from({ length: 32 }, () => system.readFile('/proc/self/status')));
  const lockers = Array.from({ length: 16 }, async (_, i) => {
    const handle = await system.lock(lockPath, { timeoutMs: 10_000 });
    if (++holding > 1) overlaps++;
    order.push(i);
    for (let k = 0; k < 3; k++) await system.readFile('/proc/self/status');
    holding--;
    await handle.release();
  });
  const outcomes = await Promise.allSettled(lockers);
  await traffic;
  const failed = outcomes.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason));
  t.same(failed, [], 'no waiter failed');
  t.equal(order.length, 16, 'all 16 got the lock');
  t.equal(overlaps, 0, 'one at a time');
  t.comment(`16 holders in turn in ${Date.now() - started} ms`);
});

t.test('a wait keeps its async resource across a collection (async_hooks see one resource)', async (t) => {
  const { createHook, executionAsyncResource } = await import('node:async_hooks');
  const { setFlagsFromString } = await import('node:v8');
  const { runInNewContext } = await import('node:vm');
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const fd = fs.openSync(lockPath, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const child = await holder('exclusive');
  // weak, so that this test does not itself keep the resource alive
  const inits = new Map<number, WeakRef<object>>();
  const befores: { id: number; resource: object }[] = [];
  const hook = createHook({
    init(id, type, _trigger, resource) {
      if (type === 'multikernel:flock') inits.set(id, new WeakRef(resource as object));
    },
    before(id) {
      if (inits.has(id)) befores.push({ id, resource: executionAsyncResource() });
    },
  }).enable();
  t.teardown(() => hook.disable());
  const waiting = binding.flockWait(fd, true, 10_000);
  await new Promise((resolve) => setImmediate(resolve)); // a new job: a fresh WeakRef keeps its target until then
  gc();
  setTimeout(() => void release(child), 50);
  t.equal(await waiting.promise, true);
  binding.flockUnlock(fd);
  t.equal(inits.size, 1, 'one init for the wait');
  t.equal(befores.length, 1, 'the settlement runs in its context');
  t.equal(befores[0]?.resource, inits.get(befores[0]?.id ?? -1)?.deref(), 'the very resource init saw');
});
