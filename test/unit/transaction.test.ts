/**
 * Overlay transactions (lib/transaction.ts) on the simulated kernel: the kernel's outcomes
 * (applied, refused, failed, failed and not undoable), identification by content among other
 * writers' transactions, kerf's lock file, aborts. After every call: no transaction of ours left
 * (except where the kernel keeps one), no kerf.lock left, no fd left open.
 * Another process holding kerf's lock: test/simulated/transaction.test.ts.
 */
import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { MultikernelError, systemError } from '../../lib/errors';
import { KERF_LOCK_PATHS, txIds } from '../../lib/kernfs';
import { encodeBaseline, encodeOverlay, type OverlayOp } from '../../lib/model';
import { SimulatedSystem, type SimulatedSystemOptions } from '../../lib/system/simulated';
import type { System } from '../../lib/system/system';
import { applyOverlay, applyOverlayBlob, transactionTag } from '../../lib/transaction';

const M = '/sys/fs/multikernel';
const LOCK = '/run/multikernel.lock';
const TAG = /^multikernel-js pid=\d+ tx=[0-9a-f]{8}/;

const create = (name = 'web', cpus: number[] | undefined = [2]): OverlayOp[] => [{ op: 'instance-create', name, memoryBytes: 64n << 20n, ...(cpus && { cpus }) }];
/** applies, then fails: instance-remove of an unknown instance is ENOENT (its undo only warns) */
const failing: OverlayOp[] = [{ op: 'instance-remove', name: 'nope' }];
const intruder = (name: string): Buffer => encodeOverlay(create(name, undefined), { resources: `another writer ${name}` });

/** A mounted simulated host with a pool of CPUs 2, 4, 6 and 1 GiB. */
async function host(t: Test, options: SimulatedSystemOptions = {}): Promise<SimulatedSystem> {
  const sim = new SimulatedSystem(options);
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, encodeBaseline({ cpus: [2, 4, 6], memory: [{ size: 1n << 30n }] }));
  return sim;
}

/** `sim` with some methods replaced (a writer outside the rules, a failing call). */
function wrap(sim: SimulatedSystem, overrides: Partial<System>): System {
  return new Proxy(sim, {
    get(target, key) {
      const own = (overrides as Record<string | symbol, unknown>)[key];
      if (own !== undefined) return own;
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as unknown as System;
}

const fds = (): number => fs.readdirSync('/proc/self/fd').length;
const txs = async (sim: System): Promise<number[]> => txIds(await sim.readdir(`${M}/overlays`));
const text = async (sim: System, p: string): Promise<string> => (await sim.readFile(p)).toString().trim();
const instances = async (sim: System): Promise<string[]> => sim.readdir(`${M}/instances`);

/** Checks after every call: the transactions left are `expected`, no kerf.lock, our flock free, no fd open. */
async function leftovers(t: Test, sim: SimulatedSystem, expected: number[], fdsBefore: number): Promise<void> {
  t.same(await txs(sim), expected, `transactions left: ${expected.join(',') || 'none'}`);
  t.same([...(await sim.readdir('/var/run')), ...(await sim.readdir('/tmp'))], [], 'no kerf.lock left');
  await (await sim.lock(LOCK, { wait: false })).release();
  t.equal(fds(), fdsBefore, 'no fd left open');
}

async function rejection(p: Promise<unknown>): Promise<MultikernelError> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as MultikernelError,
  );
}

t.test('applied: the result names the transaction, its ops and its unique tag', async (t) => {
  const sim = await host(t);
  const before = fds();
  const ops = create();
  const r = await applyOverlay(sim, ops, { description: 'web server', lockPath: LOCK });
  t.match(r, { id: 2, status: 'applied' });
  t.equal(r.ops, ops, 'the ops as given');
  t.match(r.resources, new RegExp(`${TAG.source}: web server$`));
  t.equal(await text(sim, `${M}/overlays/tx_2/resources`), r.resources, 'tx_N/resources shows the tag');
  t.same(await instances(sim), ['web']);
  const second = await applyOverlay(sim, create('db', [4]), { lockPath: LOCK });
  t.match(second.resources, new RegExp(`${TAG.source}$`), 'no description: the tag alone');
  t.not(second.resources.slice(0, 40), r.resources.slice(0, 40), 'a new nonce each time');
  await leftovers(t, sim, [2, 3], before);
});

t.test('the default flock path and kerf lock paths', async (t) => {
  const sim = await host(t);
  const created: string[] = [];
  const locked: string[] = [];
  const sys = wrap(sim, {
    createExclusive: async (p: string) => (created.push(p), sim.createExclusive(p)),
    lock: async (p, o) => (locked.push(p), sim.lock(p, o)),
  });
  await applyOverlay(sys, create());
  t.same(locked, ['/run/multikernel.lock']);
  t.same(created, ['/var/run/kerf.lock']);
  t.same(KERF_LOCK_PATHS, ['/var/run/kerf.lock', '/tmp/kerf.lock']);
});

t.test('a blob the kernel refuses up front rejects with its errno and creates no transaction', async (t) => {
  const sim = await host(t);
  const before = fds();
  await t.rejects(applyOverlayBlob(sim, Buffer.from('not a device tree'), { lockPath: LOCK }), { code: 'EINVAL', syscall: 'write' });
  await leftovers(t, sim, [], before);
});

t.test('a transaction that applies, then fails: rolled back, and the error says what to do', async (t) => {
  const sim = await host(t);
  const before = fds();
  const err = await rejection(applyOverlay(sim, failing, { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.details, { txId: 2, ops: failing, status: 'failed', reason: undefined, rolledBack: true });
  t.match(err.details.resources, TAG);
  t.notOk('rollbackError' in err.details);
  t.match(err.message, /^overlay transaction tx_2 did not apply: its status is "failed"; see dmesg for the kernel's reason\. It was rolled back \(rmdir \/sys\/fs\/multikernel\/overlays\/tx_2\)/);
  t.match(err.message, /; nothing of it is in effect$/);
  t.match(err.details, { inEffect: false });
  t.match((await sim.dmesg()).join('\n'), /Overlay transaction 2 rolled back successfully/);
  await leftovers(t, sim, [], before);
});

t.test('a kernel with tx_N/reason: the reason is reported', async (t) => {
  const sim = await host(t, { txReason: true });
  const before = fds();
  const err = await rejection(applyOverlay(sim, failing, { lockPath: LOCK }));
  t.match(err.details, { txId: 2, status: 'failed', reason: 'ENOENT: no such file or directory', rolledBack: true });
  t.match(err.message, /its status is "failed"; the kernel's reason: ENOENT: no such file or directory\. It was rolled back/);
  await leftovers(t, sim, [], before);
});

t.test('a reason file that cannot be read counts as absent', async (t) => {
  const sim = await host(t, { txReason: true });
  sim.faults.add({ op: 'read', path: /tx_\d+\/reason$/, action: { errno: 'EIO' }, times: 1 });
  const err = await rejection(applyOverlay(sim, failing, { lockPath: LOCK }));
  t.match(err.details, { reason: undefined, rolledBack: true });
  t.match(err.message, /see dmesg/);
});

t.test('the rollback fails too: the kernel keeps the transaction as "failed", and the error says what to run', async (t) => {
  const sim = await host(t);
  const before = fds();
  sim.faults.add({ op: 'overlay.rollback', action: { errno: 'EBUSY' }, times: 1 });
  const err = await rejection(applyOverlay(sim, failing, { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.details, { txId: 2, status: 'failed', rolledBack: false, rollbackError: { code: 'EBUSY', syscall: 'rmdir' } });
  t.match(
    err.message,
    /Rolling it back failed \(EBUSY\), so the kernel keeps \/sys\/fs\/multikernel\/overlays\/tx_2 with status "failed"; nothing of it is in effect, so it is only a record \(.*\): rmdir \/sys\/fs\/multikernel\/overlays\/tx_2 retries$/,
  );
  t.match(err.details, { inEffect: false });
  t.equal(err.cause, err.details.rollbackError);
  t.equal(await text(sim, `${M}/overlays/tx_2/status`), 'failed', 'kept, failed');
  await leftovers(t, sim, [2], before);
  await sim.rmdir(`${M}/overlays/tx_2`);
  t.same(await txs(sim), [], 'the retry the message names works');
});

t.test('the rollback fails and the listing that would confirm the kept transaction fails too', async (t) => {
  const sim = await host(t);
  let listings = 0;
  const sys = wrap(sim, {
    readdir: async (p: string) => {
      if (p === `${M}/overlays` && ++listings === 3) throw 'listing refused';
      return sim.readdir(p);
    },
    rmdir: async () => {
      throw new Error('rmdir broke');
    },
  });
  const err = await rejection(applyOverlay(sys, failing, { lockPath: LOCK }));
  t.match(err.message, /Rolling it back failed \(rmdir broke\), so the kernel keeps \S+tx_2 with status "failed", though \/sys\/fs\/multikernel\/overlays could not be listed to confirm it; nothing of it is in effect/);
  t.match(err.details, { rolledBack: false, rollbackError: { message: 'rmdir broke' } });
  await sim.rmdir(`${M}/overlays/tx_2`);
});

t.test('the rollback reports an error but the transaction is gone: the error says so', async (t) => {
  const sim = await host(t);
  const sys = wrap(sim, {
    rmdir: async (p: string) => {
      await sim.rmdir(p);
      throw systemError('EINTR', 'rmdir', p);
    },
  });
  const err = await rejection(applyOverlay(sys, failing, { lockPath: LOCK }));
  t.match(err.message, /Rolling it back failed \(EINTR\) and \/sys\/fs\/multikernel\/overlays\/tx_2 is gone now \(another process removed it\?\); nothing of it is in effect$/);
  t.match(err.details, { rolledBack: false });
  t.same(await txs(sim), []);
});

t.test('an unreadable status is a failure, never a success: rolled back', async (t) => {
  const sim = await host(t);
  const before = fds();
  sim.faults.add({ op: 'read', path: /tx_\d+\/status$/, action: { errno: 'EIO' }, times: 1 });
  const err = await rejection(applyOverlay(sim, create(), { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.details, { txId: 2, status: undefined, rolledBack: true });
  t.match(err.message, /tx_2 did not apply: its status could not be read \(EIO\), and an unreadable status is never taken for success; see dmesg/);
  t.match(err.cause, { code: 'EIO', syscall: 'open' });
  t.same(await instances(sim), [], 'the instance it created was undone');
  await leftovers(t, sim, [], before);
});

t.test('an unreadable status on a kernel with tx_N/reason: an empty reason is no reason', async (t) => {
  const sim = await host(t, { txReason: true });
  sim.faults.add({ op: 'read', path: /tx_\d+\/status$/, action: { errno: 'EIO' }, times: 1 });
  const err = await rejection(applyOverlay(sim, create(), { lockPath: LOCK }));
  t.match(err.details, { status: undefined, reason: undefined, rolledBack: true });
  t.match(err.message, /see dmesg for the kernel's reason/);
});

t.test('a short write reported after the transaction was made, and a rollback that throws a non-error', async (t) => {
  const sim = await host(t);
  const sys = wrap(sim, {
    writeFile: async (p: string, data: Uint8Array) => {
      await sim.writeFile(p, data);
      throw new MultikernelError('ERR_MK_SHORT_WRITE', 'short write');
    },
    rmdir: async () => Promise.reject('no'),
  });
  const err = await rejection(applyOverlay(sys, create(), { lockPath: LOCK }));
  t.match(err.message, /^overlay transaction tx_2 did not apply: the write failed with ERR_MK_SHORT_WRITE; see dmesg for the kernel's reason\. Rolling it back failed too \(no\)/);
  t.match(err.details, { rolledBack: false, rollbackError: 'no' });
  await sim.rmdir(`${M}/overlays/tx_2`);
});

t.test('a status other than "applied" is a failure', async (t) => {
  const sim = await host(t);
  const sys = wrap(sim, { readFile: async (p: string) => (p.endsWith('/status') ? Buffer.from('applied \n') : sim.readFile(p)) });
  const err = await rejection(applyOverlay(sys, create(), { lockPath: LOCK }));
  t.match(err.details, { status: 'applied ', rolledBack: true });
});

t.test('a kernel that reports the failure from write() (a possible future kernel): rolled back', async (t) => {
  const sim = await host(t);
  const before = fds();
  const future = wrap(sim, {
    writeFile: async (p: string, data: Uint8Array) => {
      await sim.writeFile(p, data);
      throw systemError('EBUSY', 'write', p);
    },
  });
  const err = await rejection(applyOverlay(future, create(), { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.message, /tx_2 did not apply: the write failed with EBUSY; see dmesg/);
  t.match(err.details, { status: 'applied', rolledBack: true });
  t.match(err.cause, { code: 'EBUSY' });
  t.same(await instances(sim), [], 'rolled back');
  await leftovers(t, sim, [], before);
});

t.test('a write that reports success but made no transaction', async (t) => {
  const sim = await host(t);
  const silent = wrap(sim, { writeFile: async () => 0 });
  const err = await rejection(applyOverlay(silent, create(), { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.equal(err.message, 'the overlay write created no transaction in /sys/fs/multikernel/overlays');
  const other = wrap(sim, { writeFile: async (p: string) => sim.writeFile(p, intruder('x')) });
  const err2 = await rejection(applyOverlay(other, create(), { lockPath: LOCK }));
  t.equal(err2.message, 'the overlay write created no transaction in /sys/fs/multikernel/overlays (tx_2 appeared meanwhile, from other writers)');
  t.same(await instances(sim), ['x'], 'the other writer\'s transaction is left alone');
});

for (const when of ['after', 'before'] as const) {
  t.test(`a writer that skips the locks writes ${when} ours: ours is found by content, not as the newest`, async (t) => {
    const sim = await host(t);
    const before = fds();
    const sys = wrap(sim, {
      writeFile: async (p: string, data: Uint8Array) => {
        if (p !== `${M}/overlays/new`) return sim.writeFile(p, data);
        if (when === 'before') await sim.writeFile(p, intruder('intruder'));
        const n = await sim.writeFile(p, data);
        if (when === 'after') await sim.writeFile(p, intruder('intruder'));
        return n;
      },
    });
    const r = await applyOverlay(sys, create(), { lockPath: LOCK });
    const ours = when === 'after' ? 2 : 3;
    t.equal(r.id, ours, `tx_${ours} is ours although tx_${5 - ours} is ${when === 'after' ? 'newer' : 'older'}`);
    t.equal(await text(sim, `${M}/overlays/tx_${r.id}/resources`), r.resources, 'tx_N/resources is our tag');
    t.equal(await text(sim, `${M}/overlays/tx_${5 - ours}/resources`), 'another writer intruder');
    t.same((await instances(sim)).sort(), ['intruder', 'web']);
    await leftovers(t, sim, [2, 3], before);
  });
}

t.test('a failed transaction of ours among another writer\'s: only ours is rolled back', async (t) => {
  const sim = await host(t);
  const sys = wrap(sim, {
    writeFile: async (p: string, data: Uint8Array) => {
      const n = await sim.writeFile(p, data);
      if (p === `${M}/overlays/new`) await sim.writeFile(p, intruder('intruder'));
      return n;
    },
  });
  const err = await rejection(applyOverlay(sys, failing, { lockPath: LOCK }));
  t.match(err.details, { txId: 2, rolledBack: true });
  t.same(await txs(sim), [3], 'the other writer\'s tx_3 stays');
});

t.test('two transactions with the very same bytes cannot be told apart: neither is touched', async (t) => {
  const sim = await host(t);
  const before = fds();
  const blob = encodeOverlay(failing, { resources: 'same' });
  const twice = wrap(sim, {
    writeFile: async (p: string, data: Uint8Array) => {
      await sim.writeFile(p, data);
      return sim.writeFile(p, data);
    },
  });
  const err = await rejection(applyOverlayBlob(twice, blob, { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.message, /^tx_2, tx_3 all hold the overlay just written, byte for byte, so which one this call made cannot be told: none was checked or rolled back/);
  t.match(err.details, { txIds: [2, 3] });
  await leftovers(t, sim, [2, 3], before);
});

t.test('applyOverlayBlob: a blob of your own; identical blobs one after the other are each found', async (t) => {
  const sim = await host(t);
  const blob = encodeOverlay(create(), { resources: 'mine' });
  t.same(await applyOverlayBlob(sim, blob, { lockPath: LOCK }), { id: 2, status: 'applied' });
  t.equal(await text(sim, `${M}/overlays/tx_2/resources`), 'mine');
  const removal = encodeOverlay([{ op: 'instance-remove', name: 'web' }]);
  t.same(await applyOverlayBlob(sim, new Uint8Array(removal), { lockPath: LOCK }), { id: 3, status: 'applied' }, 'a Uint8Array');
  await t.rejects(applyOverlayBlob(sim, Buffer.alloc(4097), { lockPath: LOCK }), { code: 'ERR_MK_INVALID_SPEC', details: { bytes: 4097, limit: 4096 } });
  t.same(await txs(sim), [2, 3], 'nothing written for the oversized blob');
});

t.test('the listing after the write fails: the error says how to find the transaction', async (t) => {
  const sim = await host(t);
  let listings = 0;
  const sys = wrap(sim, {
    readdir: async (p: string) => {
      if (p === `${M}/overlays` && ++listings === 2) throw systemError('EIO', 'scandir', p);
      return sim.readdir(p);
    },
  });
  const err = await rejection(applyOverlay(sys, create(), { lockPath: LOCK }));
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.message, /^the overlay was written, but \/sys\/fs\/multikernel\/overlays could not be listed afterwards \(EIO\), so its transaction is unknown \(look for the tx_N whose resources reads "multikernel-js pid=\d+ tx=[0-9a-f]{8}"\): check its status, and rmdir it if it failed$/);
  t.match(err.details, { ops: create() });
  t.same(await txs(sim), [2], 'nothing is rolled back blindly');
});

t.test('a dtbo that cannot be read: whether it is ours cannot be told', async (t) => {
  const sim = await host(t);
  sim.faults.add({ op: 'read', path: /tx_\d+\/dtbo$/, action: { errno: 'EIO' }, times: 1 });
  const err = await rejection(applyOverlayBlob(sim, encodeOverlay(create()), { lockPath: LOCK }));
  t.match(err.message, /^the dtbo of tx_2, which appeared during the write, could not be read \(EIO\), so whether the overlay just written made it cannot be told: check its status/);
  t.match(err.details, { txIds: [2] });
  t.match(err.cause, { code: 'EIO' });
});

t.test('kerf\'s lock: waited for while it exists, never removed by us, ERR_MK_LOCKED at the timeout', async (t) => {
  const sim = await host(t);
  const before = fds();
  await sim.createExclusive('/var/run/kerf.lock');
  await new Promise((resolve) => setTimeout(resolve, 120));
  const t0 = Date.now();
  const err = await rejection(applyOverlay(sim, create(), { lockPath: LOCK, lockTimeoutMs: 250 }));
  t.ok(Date.now() - t0 >= 240, 'waited for the timeout');
  t.equal(err.code, 'ERR_MK_LOCKED');
  t.equal(err.details.path, '/var/run/kerf.lock');
  t.ok((err.details.ageMs as number) >= 350, `its age (${err.details.ageMs} ms) is that of the file`);
  t.match(err.message, /^kerf's lock \/var\/run\/kerf\.lock exists since \d{4}-\d\d-\d\dT[\d:.]+Z \(\d+\.\d s\) and was not released within 250 ms: a kerf command holds it, or a kerf that was killed left it behind\. kerf writes no pid into it, so whether it is stale cannot be proven, and this library removes only those its own killed processes left\. Check that no kerf runs \(pgrep -f kerf\), then remove it \(rm \/var\/run\/kerf\.lock\) and try again$/);
  t.same(await sim.readdir('/var/run'), ['kerf.lock'], 'not removed');
  t.same(await txs(sim), [], 'nothing written');
  await sim.unlink('/var/run/kerf.lock');
  await leftovers(t, sim, [], before);
  const r = await applyOverlay(sim, create(), { lockPath: LOCK, lockTimeoutMs: 0 });
  t.equal(r.id, 2, 'once it is gone, even a zero timeout takes it');
});

/** `sim`, calling `before` when an overlay is written (the writer holds kerf's lock then). */
function spyOnOverlayWrite(sim: SimulatedSystem, before: () => Promise<void>): SimulatedSystem {
  return new Proxy(sim, {
    get(target, prop) {
      if (prop === 'writeFile') {
        return async (p: string, data: Uint8Array) => {
          if (p.endsWith('/overlays/new')) await before();
          return target.writeFile(p, data);
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

t.test("kerf's lock written by this library: its writer named; removed once the writer is gone, never while it runs", async (t) => {
  const sim = await host(t);
  const boot = (await sim.readFile('/proc/sys/kernel/random/boot_id')).toString().trim();
  const selfStat = (await sim.readFile('/proc/self/stat')).toString();
  const myStart = selfStat.slice(selfStat.lastIndexOf(')') + 2).split(' ')[19]!;
  // what a transaction writes into it: read when the overlay is written
  let seen = '';
  await applyOverlay(spyOnOverlayWrite(sim, async () => void (seen = (await sim.readFile('/var/run/kerf.lock')).toString())), create('a', [4]), { lockPath: LOCK });
  t.equal(seen, `multikernel pid=${process.pid} start=${myStart} boot=${boot}\n`, 'pid, start time and boot id of the writer');
  t.same(await sim.readdir('/var/run'), [], 'and removed after');

  const record = (pid: number, start: string, bootId = boot): Buffer => Buffer.from(`multikernel pid=${pid} start=${start} boot=${bootId}\n`);
  const stale: [string, Buffer][] = [
    ['a pid that runs no process', record(999_999_999, '1')],
    ['the pid of a process started later (pid reused)', record(process.pid, String(Number(myStart) + 1))],
    ['another boot', record(process.pid, myStart, '00000000-0000-0000-0000-000000000000')],
  ];
  let n = 0;
  for (const [what, data] of stale) {
    await sim.createExclusive('/var/run/kerf.lock', data);
    const t0 = Date.now();
    const r = await applyOverlay(sim, create(`s${n}`, [6 + 2 * n]), { lockPath: LOCK, lockTimeoutMs: 5000 });
    n += 1;
    t.ok(r.id > 0 && Date.now() - t0 < 1000, `${what}: removed at once, the transaction ran`);
    t.same(await sim.readdir('/var/run'), [], `${what}: nothing left`);
  }
  const kept: [string, Buffer][] = [
    ['a live writer (this process)', record(process.pid, myStart)],
    ["kerf's own (empty)", Buffer.alloc(0)],
    ['something else', Buffer.from('1234\n')],
  ];
  for (const [what, data] of kept) {
    await sim.createExclusive('/var/run/kerf.lock', data);
    await t.rejects(applyOverlay(sim, create('k', [14]), { lockPath: LOCK, lockTimeoutMs: 150 }), { code: 'ERR_MK_LOCKED' }, `${what}: waited for`);
    t.same(await sim.readdir('/var/run'), ['kerf.lock'], `${what}: not removed`);
    await sim.unlink('/var/run/kerf.lock');
  }
});

t.test("kerf's lock left by a writer of ours: what cannot be read is not removed", async (t) => {
  const sim = await host(t);
  const dead = Buffer.from('multikernel pid=999999999 start=1 boot=00000000-0000-0000-0000-000000000000\n');
  const lockedOut = async (what: string): Promise<void> => {
    await t.rejects(applyOverlay(sim, create(), { lockPath: LOCK, lockTimeoutMs: 150 }), { code: 'ERR_MK_LOCKED' }, `${what}: waited for`);
    t.same(await sim.readdir('/var/run'), ['kerf.lock'], `${what}: kept`);
  };
  await sim.createExclusive('/var/run/kerf.lock', dead);
  sim.faults.add({ op: 'read', path: '/var/run/kerf.lock', action: { errno: 'EIO' } });
  await lockedOut('the file cannot be read');
  sim.faults.clear();
  // the boot id cannot be read: the pid decides; the pid's stat cannot be read: taken as running
  sim.faults.add({ op: 'read', path: '/proc/sys/kernel/random/boot_id', action: { errno: 'EACCES' } });
  sim.faults.add({ op: 'read', path: '/proc/999999999/stat', action: { errno: 'EACCES' } });
  await lockedOut('neither boot nor process can be read');
  sim.faults.clear();
  // removed by someone else between our read and our unlink: we go on
  sim.faults.add({ op: 'unlink', path: '/var/run/kerf.lock', action: { errno: 'ENOENT' }, times: 1 });
  const r = await applyOverlay(sim, create(), { lockPath: LOCK, lockTimeoutMs: 1000 });
  t.ok(r.id > 0, 'the transaction ran');
  // an unlink that fails otherwise is the transaction's error
  await sim.createExclusive('/var/run/kerf.lock', dead);
  sim.faults.add({ op: 'unlink', path: '/var/run/kerf.lock', action: { errno: 'EROFS' }, times: 1 });
  await t.rejects(applyOverlay(sim, create('b', [6]), { lockPath: LOCK, lockTimeoutMs: 1000 }), { code: 'EROFS', syscall: 'unlink' });
});

t.test("kerf's lock: without /proc to name the writer, an empty file as kerf's", async (t) => {
  const sim = await host(t);
  for (const [n, errno] of ['EACCES', 'ENOENT'].entries()) {
    let seen: string | undefined;
    sim.faults.add({ op: 'read', path: '/proc/self/stat', action: { errno }, times: 1 });
    await applyOverlay(spyOnOverlayWrite(sim, async () => void (seen = (await sim.readFile('/var/run/kerf.lock')).toString())), create(`p${n}`, [4 + 2 * n]), { lockPath: LOCK });
    t.equal(seen, '', errno);
  }
});

t.test('kerf\'s lock released while we wait: we go on', async (t) => {
  const sim = await host(t);
  await sim.createExclusive('/var/run/kerf.lock');
  let releasedAt = 0;
  let writtenAt = 0;
  setTimeout(() => void sim.unlink('/var/run/kerf.lock').then(() => (releasedAt = Date.now())), 250);
  const sys = wrap(sim, { writeFile: async (p: string, d: Uint8Array) => ((writtenAt = Date.now()), sim.writeFile(p, d)) });
  const r = await applyOverlay(sys, create(), { lockPath: LOCK });
  t.equal(r.status, 'applied');
  t.ok(releasedAt > 0 && writtenAt >= releasedAt, 'written after kerf let go');
});

t.test('the age of a lock that cannot be stat\'ed', async (t) => {
  const sim = await host(t);
  await sim.createExclusive('/var/run/kerf.lock');
  const sys = wrap(sim, { stat: async (p: string) => Promise.reject(systemError('ENOENT', 'lstat', p)) });
  const err = await rejection(applyOverlay(sys, create(), { lockPath: LOCK, lockTimeoutMs: 0 }));
  t.match(err, { code: 'ERR_MK_LOCKED', details: { path: '/var/run/kerf.lock', ageMs: undefined } });
  t.match(err.message, /^kerf's lock \/var\/run\/kerf\.lock exists \(its age could not be read: ENOENT\) and was not released within 0 ms/);
});

t.test('/var/run not writable: /tmp/kerf.lock, as kerf falls back', async (t) => {
  const sim = await host(t, { readOnlyHostDirs: ['/var/run'] });
  const before = fds();
  const calls: string[] = [];
  const sys = wrap(sim, {
    createExclusive: async (p: string) => (calls.push(`create ${p}`), sim.createExclusive(p)),
    unlink: async (p: string) => (calls.push(`unlink ${p}`), sim.unlink(p)),
  });
  await applyOverlay(sys, create(), { lockPath: LOCK });
  t.same(calls, ['create /var/run/kerf.lock', 'create /tmp/kerf.lock', 'unlink /tmp/kerf.lock']);
  await leftovers(t, sim, [2], before);
  await sim.createExclusive('/tmp/kerf.lock');
  await t.rejects(applyOverlay(sim, create('db', [4]), { lockPath: LOCK, lockTimeoutMs: 150 }), { code: 'ERR_MK_LOCKED', details: { path: '/tmp/kerf.lock' } }, 'and waits for a kerf holding /tmp/kerf.lock');
  await sim.unlink('/tmp/kerf.lock');
  for (const errno of ['EPERM', 'EROFS', 'ENOENT']) {
    sim.faults.add({ op: 'create', path: '/var/run/kerf.lock', action: { errno }, times: 1 });
    calls.length = 0;
    await applyOverlay(sys, create(`n-${errno}`, undefined), { lockPath: LOCK });
    t.same(calls.slice(0, 2), ['create /var/run/kerf.lock', 'create /tmp/kerf.lock'], `${errno}: the next path`);
  }
});

t.test('no writable lock directory at all: the errno of the last path, nothing written', async (t) => {
  const sim = await host(t, { readOnlyHostDirs: ['/var/run', '/tmp'] });
  const before = fds();
  await t.rejects(applyOverlay(sim, create(), { lockPath: LOCK }), { code: 'EACCES', syscall: 'open', path: '/tmp/kerf.lock' });
  sim.faults.add({ op: 'create', action: { errno: 'EIO' }, times: 1 });
  await t.rejects(applyOverlay(sim, create(), { lockPath: LOCK }), { code: 'EIO' }, 'another errno is not a fallback');
  await leftovers(t, sim, [], before);
});

t.test('kerfLock: false takes no lock file; paths choose others', async (t) => {
  const sim = await host(t);
  const created: string[] = [];
  const sys = wrap(sim, { createExclusive: async (p: string) => (created.push(p), sim.createExclusive(p)) });
  await sim.createExclusive('/var/run/kerf.lock');
  await applyOverlay(sys, create(), { lockPath: LOCK, kerfLock: false });
  t.same(created, [], 'no lock file, whoever holds kerf\'s');
  await applyOverlay(sys, [{ op: 'instance-remove', name: 'web' }], { lockPath: LOCK, kerfLock: { paths: ['/run/other.lock'] } });
  t.same(created, ['/run/other.lock']);
  t.same(await sim.readdir('/run'), [], 'removed afterwards');
  await t.rejects(applyOverlay(sys, create(), { kerfLock: { paths: [] } }), RangeError);
  await t.rejects(applyOverlay(sys, create(), { lockTimeoutMs: -1 }), RangeError);
  await t.rejects(applyOverlay(sys, create(), { lockTimeoutMs: 1.5 }), RangeError);
  await t.rejects(applyOverlay(sys, encodeOverlay(create()) as unknown as OverlayOp[]), { name: 'TypeError', message: /applyOverlayBlob/ });
  await t.rejects(applyOverlay(sys, [{ op: 'instance-create', name: 'bad/name', memoryBytes: 1n << 20n }]), { code: 'ERR_MK_INVALID_SPEC' });
});

t.test('our flock is taken first and waited for', async (t) => {
  const sim = await host(t);
  const held = await sim.lock(LOCK);
  await t.rejects(applyOverlay(sim, create(), { lockPath: LOCK, lockTimeoutMs: 50 }), { code: 'ETIMEDOUT', syscall: 'flock' });
  t.same(await sim.readdir('/var/run'), [], 'kerf\'s lock was not taken while waiting for ours');
  await held.release();
});

t.test('kerf\'s lock cannot be removed after an applied transaction: ERR_MK_LOCKED says it applied and what to run', async (t) => {
  const sim = await host(t);
  const sys = wrap(sim, { unlink: async (p: string) => Promise.reject(systemError('EIO', 'unlink', p)) });
  const err = await rejection(applyOverlay(sys, create(), { lockPath: LOCK }));
  t.match(err, { code: 'ERR_MK_LOCKED', details: { path: '/var/run/kerf.lock', result: { id: 2 } } });
  t.equal(err.message, "tx_2 applied, but kerf's lock /var/run/kerf.lock could not be removed afterwards (EIO): kerf refuses to run while it exists, so remove it: rm /var/run/kerf.lock");
  t.same(await instances(sim), ['web']);
  t.same(await sim.readdir('/var/run'), ['kerf.lock'], 'left, as the message says');
  await sim.unlink('/var/run/kerf.lock');
  await t.rejects(applyOverlay(sys, failing, { lockPath: LOCK }), { code: 'ERR_MK_TX_FAILED' }, 'after a failure the failure is reported');
  await sim.unlink('/var/run/kerf.lock');
  await (await sim.lock(LOCK, { wait: false })).release();
});

t.test('kerf\'s lock removed by someone else meanwhile: not an error', async (t) => {
  const sim = await host(t);
  const sys = wrap(sim, {
    writeFile: async (p: string, d: Uint8Array) => {
      await sim.unlink('/var/run/kerf.lock');
      return sim.writeFile(p, d);
    },
  });
  t.equal((await applyOverlay(sys, create(), { lockPath: LOCK })).status, 'applied');
});

t.test('abort before the write: nothing written, everything released', async (t) => {
  const sim = await host(t);
  const before = fds();
  await t.rejects(applyOverlay(sim, create(), { lockPath: LOCK, signal: AbortSignal.abort(new Error('early')) }), { message: 'early' });
  await sim.createExclusive('/var/run/kerf.lock');
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('tired of waiting')), 150);
  await t.rejects(applyOverlay(sim, create(), { lockPath: LOCK, signal: ac.signal }), { message: 'tired of waiting' }, 'while waiting for kerf');
  t.same(await sim.readdir('/var/run'), ['kerf.lock'], 'kerf\'s file is not ours to remove');
  await sim.unlink('/var/run/kerf.lock');
  const ac2 = new AbortController();
  const sys = wrap(sim, {
    readdir: async (p: string) => {
      ac2.abort(new Error('just before the write'));
      return sim.readdir(p);
    },
  });
  await t.rejects(applyOverlay(sys, create(), { lockPath: LOCK, signal: ac2.signal }), { message: 'just before the write' });
  const ac3 = new AbortController();
  const slow = wrap(sim, {
    createExclusive: async (p: string) => {
      await sim.createExclusive(p);
      ac3.abort(new Error('while creating the file'));
      throw systemError('EEXIST', 'open', p);
    },
  });
  await t.rejects(applyOverlay(slow, create(), { lockPath: LOCK, signal: ac3.signal }), { message: 'while creating the file' });
  await sim.unlink('/var/run/kerf.lock');
  await leftovers(t, sim, [], before);
});

t.test('abort after the write: the transaction is settled first', async (t) => {
  const sim = await host(t);
  const before = fds();
  let ac = new AbortController();
  const sys = wrap(sim, {
    writeFile: async (p: string, d: Uint8Array) => {
      const n = await sim.writeFile(p, d);
      ac.abort(new Error('too late'));
      return n;
    },
  });
  const r = await applyOverlay(sys, create(), { lockPath: LOCK, signal: ac.signal });
  t.match(r, { id: 2, status: 'applied' }, 'applied: reported, since an abort cannot unmake it');
  ac = new AbortController();
  await t.rejects(applyOverlay(sys, failing, { lockPath: LOCK, signal: ac.signal }), { message: 'too late' }, 'failed and rolled back: the abort reason');
  t.same(await txs(sim), [2], 'rolled back before rejecting');
  ac = new AbortController();
  sim.faults.add({ op: 'overlay.rollback', action: { errno: 'EBUSY' }, times: 1 });
  await t.rejects(applyOverlay(sys, failing, { lockPath: LOCK, signal: ac.signal }), { code: 'ERR_MK_TX_FAILED', details: { txId: 4, rolledBack: false } }, 'a transaction left behind is reported, not hidden by the abort');
  await leftovers(t, sim, [2, 4], before);
});

t.test('transactionTag: printable ASCII, at most 255 characters', async (t) => {
  t.match(transactionTag(), new RegExp(`${TAG.source}$`));
  t.match(transactionTag(''), new RegExp(`${TAG.source}$`));
  t.match(transactionTag('naïve\ttab'), new RegExp(`${TAG.source}: na\\?ve\\?tab$`));
  const long = transactionTag('x'.repeat(400));
  t.equal(long.length, 255);
  const r = await applyOverlay(await host(t), create(), { description: 'é'.repeat(300), lockPath: LOCK });
  t.equal(r.resources.length, 255, 'encodable: the model accepts it');
});

t.test('a raw blob that fails and is rolled back: the kernel\'s undo is all there is, and the error says its limits', async (t) => {
  const sim = await host(t);
  const err = await rejection(applyOverlayBlob(sim, encodeOverlay(failing), { lockPath: LOCK }));
  t.match(err.message, /It was rolled back \(rmdir \S+tx_2\); the kernel's undo has limits .*re-read the pool and instances$/);
  t.match(err.details, { rolledBack: true, inEffect: false });
});

t.test('a raw blob has no view from before: a rollback that fails leaves the state unknown, and the error says re-read', async (t) => {
  const sim = await host(t);
  sim.faults.add({ op: 'overlay.rollback', action: { errno: 'EBUSY' }, times: 1 });
  const err = await rejection(applyOverlayBlob(sim, encodeOverlay(failing), { lockPath: LOCK }));
  t.match(err.message, /Rolling it back failed too \(EBUSY\).*re-read the pool and instances\. After reading dmesg, run: rmdir \S+tx_2$/);
  t.match(err.details, { rolledBack: false, inEffect: true });
  await sim.rmdir(`${M}/overlays/tx_2`);
});

t.test('what a failed transaction left in effect is undone by one more transaction', async (t) => {
  const sim = await host(t);
  // the memory-add runs, then the cpu-add fails; the kernel's rollback stops at the inverse of
  // the cpu-add (a CPU that never joined) and never reaches the memory
  const ops: OverlayOp[] = [
    { op: 'memory-add', target: 'pool', size: 256n << 20n },
    { op: 'cpu-add', target: 'pool', id: 8 },
  ];
  sim.faults.add({ op: 'overlay.apply', action: { halfway: true }, times: 1 });
  const err = await rejection(applyOverlay(sim, ops, { lockPath: LOCK }));
  t.match(err.details, { rolledBack: false, inEffect: false, compensation: { txId: 3, ops: [{ op: 'memory-remove', target: 'pool', size: 256n << 20n }] } });
  t.match(err.message, /what it left in effect was undone by tx_3 \(memory-remove\)/);
  t.same((await sim.readFile(`${M}/overlays/tx_3/status`)).toString(), 'applied\n');
});

t.test('when what is in effect cannot be read, the error says so', async (t) => {
  const sim = await host(t);
  let reads = 0;
  const sys = wrap(sim, {
    readFile: async (p: string) => (p === `${M}/device_tree` && ++reads === 2 ? Buffer.from('garbage') : sim.readFile(p)),
  });
  const err = await rejection(applyOverlay(sys, failing, { lockPath: LOCK }));
  t.match(err.message, /what it left in effect could not be read \(ERR_MK_INVALID_FDT\): re-read the pool and instances$/);
  t.match(err.details, { inEffect: true, compensationError: { code: 'ERR_MK_INVALID_FDT' } });
});

t.test('an undo that fails too is reported with what stays in effect', async (t) => {
  const sim = await host(t);
  const ops: OverlayOp[] = [
    { op: 'memory-add', target: 'pool', size: 256n << 20n },
    { op: 'cpu-add', target: 'pool', id: 8 },
  ];
  sim.faults.add({ op: 'overlay.apply', action: { halfway: true }, times: 1 });
  let writes = 0;
  const sys = wrap(sim, {
    writeFile: async (p: string, d: Uint8Array) => {
      if (p === `${M}/overlays/new` && ++writes > 1) throw systemError('ENOMEM', 'write', p);
      return sim.writeFile(p, d);
    },
  });
  const err = await rejection(applyOverlay(sys, ops, { lockPath: LOCK }));
  t.match(err.message, /it left memory-remove in effect, and undoing that failed too \(ENOMEM\): re-read the pool and instances/);
  t.match(err.details, { inEffect: true, compensationError: { code: 'ENOMEM' } });
  t.notOk('compensation' in err.details);
});
