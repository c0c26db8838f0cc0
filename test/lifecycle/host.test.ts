// The lifecycle API (Host, Pool, Instance) on the simulated kernel: the whole lifecycle, every
// state refusal, adoption of instances made outside the library, and what the kernel reports
// after faults. The same calls run on a real kernel (test/qemu, test/contract).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Host, Instance, MultikernelError } from '../../lib';
import { systemError } from '../../lib/errors';
import { placeholderImage } from '../../lib/simulated';
import { wrap } from './helpers';
import { encodeOverlay, parseOverlay } from '../../lib/model';
import { SimulatedSystem } from '../../lib/system/simulated';
import type { System } from '../../lib/system/system';

const MiB = 1024n * 1024n;
const kernel = placeholderImage('x86_64');

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

async function setup(options: ConstructorParameters<typeof SimulatedSystem>[0] = {}) {
  const system = new SimulatedSystem({ haltTimeoutMs: 200, resourceAckTimeoutMs: 200, ...options });
  const host = await Host.open({ system, lockPath: path.join(os.tmpdir(), `mk-host-test-${process.pid}.lock`) });
  return { system, host };
}

/** Transactions whose status is not `applied` (applied ones stay listed: the kernel keeps them). */
async function txLeft(system: System): Promise<string[]> {
  const out: string[] = [];
  for (const e of await system.readdir('/sys/fs/multikernel/overlays')) {
    if (e === 'new') continue;
    const status = (await system.readFile(`/sys/fs/multikernel/overlays/${e}/status`)).toString().trim();
    if (status !== 'applied') out.push(`${e}: ${status}`);
  }
  return out;
}


t.test('the whole lifecycle, and nothing left behind', async (t) => {
  const fds = openFds();
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  t.same(host.features.missing, [], 'the simulated kernel offers everything');
  t.equal(host.features.console, true);
  t.equal(host.features.vsock, true);
  t.equal(host.features.poolFormat, 'memory-nodes');
  t.equal(host.features.llcWayMask, false);

  const empty = await host.pool.snapshot();
  t.equal(empty.exists, false, 'no pool yet');
  const pool = await host.pool.init({ cpus: 4, memory: '2G' });
  t.equal(pool.exists, true);
  t.equal(pool.cpus.length, 4);
  t.same(pool.freeCpus.length, 4);
  t.equal(pool.memoryBytes, 2048n * MiB);
  t.notOk(pool.cpus.some((c) => c.physicalId === 0), 'never the boot CPU');

  const web = await host.createInstance({ name: 'web', cpus: 2, memory: '512M' });
  t.type(web, Instance);
  t.equal(await web.status(), 'ready');
  const info = await web.info();
  t.equal(info.cpus.length, 2);
  t.equal(info.memoryBytes, 512n * MiB);
  t.equal(info.image, undefined);
  t.same((await host.instances()).map((i) => i.name), ['web']);
  t.equal((await host.instance(web.id)).name, 'web', 'by id');
  const after = await host.pool.snapshot();
  t.same(after.instances, ['web']);
  t.equal(after.freeCpus.length, 2);
  t.equal(after.freeMemoryBytes, 1536n * MiB);
  t.equal(after.cpus.filter((c) => c.instance === 'web').length, 2, 'the snapshot says who holds a CPU');

  await web.load(kernel, { cmdline: 'console=mktty0 quiet' });
  t.equal(await web.status(), 'loaded');
  t.match((await web.info()).image, { id: web.id, cmdline: 'console=mktty0 quiet' });
  await web.start();
  t.equal(await web.status(), 'active');
  t.same(await web.stop(), { how: 'graceful' });
  t.equal(await web.status(), 'loaded');
  t.same(await web.restart(), undefined, 'restart of a halted instance just starts it');
  t.same(await web.restart(), { how: 'graceful' });
  t.equal(await web.status(), 'active');
  await web.stop();
  await web.unload();
  t.equal(await web.status(), 'ready');
  await web.delete();
  await t.rejects(web.status(), { code: 'ERR_MK_INSTANCE_NOT_FOUND' });
  const torn = await host.pool.teardown();
  t.equal(torn.exists, false, 'teardown gave everything back');
  t.equal(torn.cpus.length, 0);
  t.same(await txLeft(system), [], 'every transaction applied and none is left failed');
  t.equal(openFds(), fds, 'no fd left open');
  t.same(await host.pool.teardown(), torn, 'a teardown of an empty pool changes nothing');
});

t.test('each verb checks the state first and says what to do', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await t.rejects(a.start(), { code: 'ERR_MK_INSTANCE_NOT_LOADED', message: /load\(\) one first/ });
  await t.rejects(a.unload(), { code: 'ERR_MK_INSTANCE_NOT_LOADED' });
  await t.rejects(a.stop(), { code: 'ERR_MK_INSTANCE_NOT_ACTIVE', message: /no kernel loaded/ });
  await a.load(kernel);
  await t.rejects(a.load(kernel), { code: 'ERR_MK_INSTANCE_LOADED', message: /unload\(\) it first/ });
  await t.rejects(a.delete(), { code: 'ERR_MK_INSTANCE_LOADED', message: /delete\(\{ force: true \}\)/ });
  await t.rejects(a.stop(), { code: 'ERR_MK_INSTANCE_NOT_ACTIVE', message: /kernel is still loaded/ });
  await a.start();
  await t.rejects(a.start(), { code: 'ERR_MK_INSTANCE_ACTIVE', message: /runs already/ });
  await t.rejects(a.load(kernel), { code: 'ERR_MK_INSTANCE_ACTIVE', message: /stop\(\) and unload\(\)/ });
  await t.rejects(a.unload(), { code: 'ERR_MK_INSTANCE_ACTIVE', message: /stop\(\) it first/ });
  await t.rejects(a.delete(), { code: 'ERR_MK_INSTANCE_ACTIVE' });
  await a.delete({ force: true });
  await t.rejects(host.instance('a'), { code: 'ERR_MK_INSTANCE_NOT_FOUND' });
  await t.rejects(host.instance(7), { code: 'ERR_MK_INSTANCE_NOT_FOUND', message: /no instance has id 7/ });
  const b = await host.createInstance({ name: 'b', cpus: 1, memory: '256M' });
  await b.load(kernel);
  await b.delete({ force: true });
  t.same(await host.instances(), []);
  await t.rejects(a.load(kernel, { cmdline: 'x'.repeat(2048) }), { code: 'ERR_MK_INVALID_SPEC', message: /at most 2047/ });
  await t.rejects(a.load(kernel, { cmdline: 'a\0b' }), { code: 'ERR_MK_INVALID_SPEC', message: /NUL/ });
  const aborted = AbortSignal.abort(new Error('stop now'));
  for (const call of [() => a.load(kernel, { signal: aborted }), () => a.start({ signal: aborted }), () => a.stop({ signal: aborted }), () => a.unload({ signal: aborted }), () => a.delete({ signal: aborted })]) {
    await t.rejects(call() as Promise<unknown> as Promise<void>, { message: 'stop now' }, 'an aborted signal stops before anything is read');
  }
});

t.test('a hung instance: graceful halt times out, force recovers it; a panic halts it back to loaded', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await a.load(kernel);
  await a.start();
  await system.hang(a.id);
  await t.rejects(a.stop(), { code: 'ERR_MK_HALT_TIMEOUT', message: /within the kernel's 30 s.*force: true/ });
  t.equal(await a.status(), 'active', 'still active: the kernel gave up waiting');
  await t.rejects(a.stop({ timeoutMs: 20 }), { code: 'ERR_MK_HALT_TIMEOUT', message: /within 20 ms/ });
  t.same(await a.stop({ force: true, timeoutMs: 20 }), { how: 'forced' }, 'forced after our own time limit');
  t.equal(await a.status(), 'loaded');
  await a.start();
  await system.hang(a.id);
  t.same(await a.stop({ force: true }), { how: 'forced' }, 'forced after the kernel\'s ETIMEDOUT');
  await a.start();
  await system.hang(a.id);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('operator gave up')), 20);
  t.same(await a.stop({ force: true, signal: controller.signal }), { how: 'forced' }, 'an abort turns into the forced halt');
  await a.start();
  await system.hang(a.id);
  const c2 = new AbortController();
  setTimeout(() => c2.abort(new Error('operator gave up')), 20);
  await t.rejects(a.stop({ signal: c2.signal }), { message: 'operator gave up' }, 'without force the abort is the answer');
  await a.stop({ force: true, timeoutMs: 0 });
  await a.start();
  await system.panic(a.id);
  t.equal(await a.status(), 'loaded', 'a panic halts back to the pool');
  await a.start();
  t.equal(await a.status(), 'active', 'and the same image boots again');
  system.faults.add({ op: 'reboot', times: 1, action: { errno: 'EPERM' } });
  await t.rejects(a.stop(), { code: 'EPERM' }, 'other errors of the graceful halt come through');
  await a.stop();
});

t.test('instances made by kerf or by hand are adopted; a re-created name is not confused', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 3, memory: '1G' });
  const free = (await host.pool.snapshot()).freeCpus;
  // what kerf writes: an overlay of its own, outside this library
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-create', name: 'byhand', id: 9, memoryBytes: 256n * MiB, cpus: [free[0]!] }], { strings: 'libfdt' }));
  const adopted = await host.instance('byhand');
  t.equal(adopted.id, 9);
  await adopted.load(kernel);
  await adopted.start();
  await adopted.stop();
  await adopted.unload();
  await adopted.delete();
  const first = await host.createInstance({ name: 'same', id: 5, cpus: 1, memory: '128M' });
  await first.delete();
  await host.createInstance({ name: 'same', id: 6, cpus: 1, memory: '128M' });
  await t.rejects(first.status(), { code: 'ERR_MK_INSTANCE_NOT_FOUND', message: /deleted and created again \(id 5 is now 6\)/ });
});

t.test('waitFor reads the status until it matches, times out, or the instance goes', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await a.waitFor('ready');
  await a.load(kernel);
  await a.start();
  setTimeout(() => void system.poweroffFromInside(a.id), 30);
  await a.waitFor('loaded', { intervalMs: 5, timeoutMs: 5000 });
  t.equal(await a.status(), 'loaded', 'the spawn powered itself off');
  await t.rejects(a.waitFor('active', { timeoutMs: 30, intervalMs: 10 }), { code: 'ERR_MK_TIMEOUT', message: /still "loaded" after 30 ms/ });
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('enough')), 20);
  await t.rejects(a.waitFor('active', { signal: controller.signal, intervalMs: 5 }), { message: 'enough' });
  await a.unload();
  setTimeout(() => void a.delete(), 20);
  await t.rejects(a.waitFor('active', { intervalMs: 5 }), { code: 'ERR_MK_INSTANCE_NOT_FOUND', message: /gone while waiting/ });
  await t.resolves(a.waitFor('gone'));
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/instances/b/status', times: 1, action: { errno: 'EIO' } });
  const b = await host.createInstance({ name: 'b', cpus: 1, memory: '256M' });
  await t.rejects(b.waitFor('ready'), { code: 'EIO' }, 'a read error is not "gone"');
});

t.test('createInstance: refusals before the kernel is asked, and what it did not grant', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await t.rejects(host.createInstance({ name: 'x', cpus: 1, memory: '256M' }), { code: 'ERR_MK_NO_POOL' });
  await host.pool.init({ cpus: 3, memory: '1G', devices: ['0000:00:04.0'] });
  const bad: [object, RegExp][] = [
    [{ name: 'bad/name', cpus: 1, memory: '1M' }, /name/],
    [{ name: 'x', cpus: 1, memory: 'lots' }, /memory must look like/],
    [{ name: 'x', cpus: 1, memory: 4097 }, /4 KiB pages/],
    [{ name: 'x', cpus: 0, memory: '1M' }, /cpus must be a positive integer/],
    [{ name: 'x', cpus: 1, memory: '1M', numaNode: 64 }, /numaNode must be 0..63/],
    [{ name: 'x', cpus: 1, memory: '1M', id: 0 }, /id must be 1..2047/],
  ];
  for (const [spec, message] of bad) await t.rejects(host.createInstance(spec as never), { code: 'ERR_MK_INVALID_SPEC', message }, JSON.stringify(spec));
  await host.createInstance({ name: 'x', id: 3, cpus: 1, memory: '256M', numaNode: 0, devices: ['0000:00:04.0'], virtio: [{ name: 'net0', deviceId: 1 }] });
  t.same((await (await host.instance('x')).info()).devices.map((d) => (d.type === 'pci' ? d.pciId : d.name)), ['0000:00:04.0']);
  await t.rejects(host.createInstance({ name: 'x', cpus: 1, memory: '1M' }), { code: 'ERR_MK_INSTANCE_EXISTS', message: /named "x"/ });
  await t.rejects(host.createInstance({ name: 'y', id: 3, cpus: 1, memory: '1M' }), { code: 'ERR_MK_INSTANCE_EXISTS', message: /id 3 is taken/ });
  await t.rejects(host.createInstance({ name: 'y', cpus: 1, memory: '2G' }), { code: 'ERR_MK_RESOURCES', message: /wants 2 GiB; the pool has 768 MiB free/ });
  await t.rejects(host.createInstance({ name: 'y', cpus: 5, memory: '1M' }), { code: 'ERR_MK_RESOURCES', message: /5 CPUs wanted, 2 available/ });
  await t.rejects(host.createInstance({ name: 'y', cpus: 1, memory: '1M', devices: ['0000:00:05.0'] }), { code: 'ERR_MK_RESOURCES', message: /not free in the pool \(free: none\)/ });

  // Another writer takes the chosen CPUs between our snapshot and our write: the kernel creates
  // the instance without them (it only warns), so the library removes it again; CPUs it chose
  // (a count) are chosen afresh, CPUs the caller named are not.
  const lockPath = path.join(os.tmpdir(), `mk-host-test-${process.pid}.lock`);
  let thieves = 0;
  /**
   * A host whose overlay writes are preceded, `times` times, by another writer's taking the CPU
   * it is about to take; with `recycle` that writer gives it back right after, so the same CPU is
   * free again for the next attempt.
   */
  const racer = async (times: number, recycle = false): Promise<{ host: Host; stole: number[] }> => {
    const stole: number[] = [];
    let left = times;
    const racing = wrap(system, {
      writeFile: async (p: string, data: Uint8Array) => {
        const wanted = p.endsWith('/overlays/new') ? parseOverlay(data).ops.find((o) => o.op === 'instance-create') : undefined;
        if (wanted?.op !== 'instance-create' || left === 0) return system.writeFile(p, data);
        left -= 1;
        const thief = `thief${++thieves}`;
        stole.push(wanted.cpus![0]!);
        await system.writeFile(p, encodeOverlay([{ op: 'instance-create', name: thief, memoryBytes: 4096n * 16n, cpus: [wanted.cpus![0]!] }]));
        const written = await system.writeFile(p, data);
        if (recycle) await system.writeFile(p, encodeOverlay([{ op: 'instance-remove', name: thief }]));
        return written;
      },
    });
    return { host: await Host.open({ system: racing, lockPath }), stole };
  };
  const once = await racer(1);
  const y = await once.host.createInstance({ name: 'y', cpus: 1, memory: '64M' });
  t.notOk((await y.info()).cpus.includes(once.stole[0]!), 'chosen afresh: another CPU than the one taken');
  await y.delete();
  const always = await racer(4, true);
  await t.rejects(always.host.createInstance({ name: 'y', cpus: 1, memory: '64M' }), { code: 'ERR_MK_RESOURCES', message: /CPUs missing: \[\d+\].*removed again \(4 attempts, each with CPUs chosen afresh\)$/ }, 'four attempts, then the error');
  const second = (await host.pool.snapshot()).freeCpus[0]!;
  const named = await racer(1);
  await t.rejects(named.host.createInstance({ name: 'z', cpus: { physical: [second] }, memory: '64M' }), { code: 'ERR_MK_RESOURCES', message: /CPUs missing: \[\d+\].*removed again$/ }, 'named CPUs: not chosen again');
  t.same((await host.instances()).map((i) => i.name).sort(), ['thief1', 'thief6', 'x'], 'y and z were removed again, the other writer\'s kept');
});

t.test('update: CPUs, memory and devices, live or not, in one transaction', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 5, memory: '2G', devices: ['0000:00:04.0', '0000:00:05.0'] });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await a.update({});
  await a.update({ cpus: 3, memory: '512M', devices: ['0000:00:04.0'] });
  let info = await a.info();
  t.equal(info.cpus.length, 3);
  t.equal(info.memoryBytes, 512n * MiB);
  t.same(info.memory.map((r) => r.size), [256n * MiB, 256n * MiB], 'a second region');
  t.same(info.devices.map((d) => (d.type === 'pci' ? d.pciId : '')), ['0000:00:04.0']);
  await a.update({ cpus: 2, memory: '256M', devices: ['0000:00:05.0'] });
  info = await a.info();
  t.equal(info.cpus.length, 2);
  t.equal(info.memoryBytes, 256n * MiB, 'the added region went back whole');
  t.same(info.devices.map((d) => (d.type === 'pci' ? d.pciId : '')), ['0000:00:05.0']);
  const free = (await host.pool.snapshot()).freeCpus;
  await a.update({ cpus: { physical: [info.cpus[0]!, free[0]!] } });
  t.same((await a.info()).cpus.sort(), [info.cpus[0]!, free[0]!].sort(), 'exact ids: one kept, one swapped');
  await t.rejects(a.update({ cpus: { physical: [info.cpus[0]!, 999] } }), { code: 'ERR_MK_RESOURCES', message: /999/ });
  await t.rejects(a.update({ cpus: 0 }), { code: 'ERR_MK_INVALID_SPEC' });
  await t.rejects(a.update({ memory: '100M' }), { code: 'ERR_MK_INVALID_SPEC', message: /whole memory regions/ });
  await a.update({ memory: '256M' });
  await a.load(kernel);
  await a.start();
  await t.rejects(a.update({ memory: '300M' }), { code: 'ERR_MK_INVALID_SPEC', message: /steps of 128 MiB/ });
  await a.update({ memory: '384M', cpus: 3 });
  t.equal((await a.info()).memoryBytes, 384n * MiB, 'memory added to a running instance');
  await system.hang(a.id);
  // A hung spawn acknowledges nothing: the removal times out, and so does the rollback's re-add,
  // so the kernel keeps the transaction as failed and the error says what to run.
  const err = await a.update({ cpus: 2 }).catch((e: unknown) => e as MultikernelError);
  t.match(err, { code: 'ERR_MK_TX_FAILED', details: { rolledBack: false }, message: /rmdir \/sys\/fs\/multikernel\/overlays\/tx_\d+/ });
  t.equal((await a.info()).cpus.length, 3, 'the CPU was not given back');
  t.same(await txLeft(system), [`tx_${(err as MultikernelError).details.txId as number}: failed`], 'the kernel keeps it, as the error said');
  await a.stop({ force: true, timeoutMs: 0 });
  await t.resolves(a.update({ cpus: 3 }), 'and the instance can be changed again');
});

t.test('pool: init, grow, shrink, teardown and their refusals', async (t) => {
  const { system, host } = await setup({ topology: { cpus: [0, 1, 2, 3, 4, 5].map((apicId) => ({ apicId, node: apicId < 3 ? 0 : 1 })), memoryBytes: 16 * 2 ** 30, numaNodes: 2, pciDevices: ['0000:00:04.0', '0000:00:05.0'] } });
  t.teardown(() => system.dispose());
  await t.rejects(host.pool.grow({ cpus: 1 }), { code: 'ERR_MK_NO_POOL' });
  await t.rejects(host.pool.shrink({ cpus: 1 }), { code: 'ERR_MK_NO_POOL' });
  await t.rejects(host.pool.init({ cpus: 1 }), { code: 'ERR_MK_INVALID_SPEC', message: /needs memory/ });
  for (const memory of [[], '1K1', 5000, [{ size: '1M', node: 64 }]]) {
    await t.rejects(host.pool.init({ cpus: 1, memory: memory as never }), { code: 'ERR_MK_INVALID_SPEC' }, JSON.stringify(memory));
  }
  await t.rejects(host.pool.init({ cpus: 1, memory: '1G', devices: ['nope'] }), { code: 'ERR_MK_INVALID_SPEC', message: /not a PCI address/ });
  await t.rejects(host.pool.init({ cpus: 1, memory: '1G', devices: 'nope' as never }), { code: 'ERR_MK_INVALID_SPEC' });
  await t.rejects(host.pool.init({ memory: '1G', cpus: 9 }), { code: 'ERR_MK_RESOURCES', message: /9 CPUs wanted, 5 available/ });
  let pool = await host.pool.init({ cpus: { count: 2, node: 1 }, memory: [{ size: '1G', node: 0 }, { size: '512M', node: 1 }] });
  t.same(pool.cpus.map((c) => c.physicalId).sort(), [4, 5]);
  t.same(pool.cpus.map((c) => c.node), [1, 1], 'the snapshot knows the node of a pooled CPU');
  t.same(pool.memory.map((m) => [m.size, m.node]), [[1024n * MiB, 0], [512n * MiB, 1]]);
  await t.rejects(host.pool.init({ cpus: 1, memory: '1G' }), { code: 'ERR_MK_POOL_EXISTS', message: /grow\(\) or shrink\(\) it, or teardown\(\) it first/ });
  t.same(await host.pool.grow({}), pool, 'nothing to do');
  pool = await host.pool.grow({ cpus: { logical: [1] }, memory: '256M', devices: ['0000:00:04.0'] });
  t.equal(pool.cpus.length, 3);
  t.equal(pool.memory.length, 3);
  t.equal(pool.devices.length, 1);
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  await t.rejects(host.pool.teardown(), { code: 'ERR_MK_POOL_BUSY', message: /"a": delete those instances first/ });
  const used = pool.memory.find((m) => m.size === 256n * MiB)!;
  await t.rejects(host.pool.shrink({ memory: [{ base: used.base }] }), { code: 'ERR_MK_RESOURCES', message: /holds 128 MiB of instance memory/ });
  await t.rejects(host.pool.shrink({ memory: [{ base: 1n }] }), { code: 'ERR_MK_INVALID_SPEC', message: /no memory chunk at 0x1/ });
  await t.rejects(host.pool.shrink({ memory: '100M' }), { code: 'ERR_MK_RESOURCES', message: /whole chunks only/ });
  await t.rejects(host.pool.shrink({ devices: ['0000:00:05.0'] }), { code: 'ERR_MK_RESOURCES', message: /not free in the pool/ });
  t.same(await host.pool.shrink({}), await host.pool.snapshot(), 'nothing to do');
  pool = await host.pool.shrink({ cpus: 1, memory: '512M', devices: ['0000:00:04.0'] });
  t.equal(pool.cpus.length, 2);
  t.equal(pool.devices.length, 0);
  t.same(pool.memory.map((m) => m.size), [1024n * MiB, 256n * MiB], 'the unused 512 MiB chunk went');
  await a.delete();
  const last = pool.freeCpus.at(-1)!;
  pool = await host.pool.shrink({ cpus: { physical: [last] }, memory: [{ base: used.base }] });
  t.equal(pool.cpus.length, 1);
  await host.pool.teardown();
  pool = await host.pool.init({ cpus: { cores: 1 }, memory: '256M' });
  t.equal(pool.cpus.length, 1, 'a new baseline after a full teardown (no SMT here: a core is one CPU)');
  await host.pool.teardown();
  t.same(await txLeft(system), []);
});

t.test('a pool init whose device step fails is torn down again', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await t.rejects(host.pool.init({ cpus: 1, memory: '256M', devices: ['0000:00:09.0'] }), { code: 'ERR_MK_TX_FAILED' });
  t.equal((await host.pool.snapshot()).exists, false, 'the baseline was given back');
  system.faults.add({ op: 'write', path: '/sys/fs/multikernel/device_tree', times: 1, action: { errno: 'EBUSY' } });
  await t.rejects(host.pool.init({ cpus: 1, memory: '256M' }), { code: 'EBUSY' });
  t.equal((await host.pool.snapshot()).exists, false);
  await t.resolves(host.pool.init({ cpus: 1, memory: '256M' }), 'and the next call succeeds');
});

t.test('Host.open: no support, mounting, required features', async (t) => {
  await t.rejects(Host.open({ system: new SimulatedSystem({ stockKernel: true }) }), { code: 'ERR_MK_NO_SUPPORT', message: /no multikernel support/ });
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  await t.rejects(Host.open({ system, mount: false }), { code: 'ERR_MK_NO_SUPPORT', message: /not mounted and mount: false/ });
  // another process mounts it between our probe and our mount
  const racing = wrap(system, {
    mountMultikernel: async () => {
      await system.mountMultikernel();
      throw systemError('EBUSY', 'mount', '/sys/fs/multikernel');
    },
  });
  const host = await Host.open({ system: racing, require: ['console', 'vsock', 'kimage'] });
  t.ok(host, 'a concurrent mount (EBUSY) is fine');
  system.faults.add({ op: 'mount', times: 1, action: { errno: 'EPERM' } });
  await system.umountMultikernel();
  await t.rejects(Host.open({ system }), { code: 'EPERM' });
  const limited = wrap(system, {
    vsockListen: async () => Promise.reject(Object.assign(new Error('EAFNOSUPPORT'), { code: 'EAFNOSUPPORT' })),
    stat: async (p: string) => (p === '/dev/mktty' || p === '/proc/kimage' ? Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' })) : system.stat(p)),
  });
  const partial = await Host.open({ system: limited });
  t.equal(partial.features.console, false);
  t.equal(partial.features.vsock, false);
  t.equal(partial.features.kimage, false);
  t.equal(partial.features.missing.length, 3);
  await t.rejects(Host.open({ system: limited, require: ['vsock'] }), { code: 'ERR_MK_NO_SUPPORT', message: /vsock transport/ });
  await t.rejects(Host.open({ system, signal: AbortSignal.abort(new Error('no')) }), { message: 'no' });
});

t.test('detectVsockReset asks a running instance', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  t.equal(await host.detectVsockReset(), undefined, 'no instance runs');
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await a.load(kernel);
  await a.start();
  await system.hang(a.id);
  t.equal(await host.detectVsockReset({ timeoutMs: 50, signal: new AbortController().signal }), undefined, 'a hung instance answers nothing');
  await a.stop({ force: true, timeoutMs: 0 });
  await a.start();
  t.equal(await host.detectVsockReset(), true, 'a live one resets');
  t.equal(host.features.vsockReset, true);
});

t.test('load: files, root-only trust, and what the kernel refusal means', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-load-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.chmodSync(dir, 0o755);
  const file = path.join(dir, 'vmlinux');
  fs.writeFileSync(file, kernel, { mode: 0o644 });
  const initrd = path.join(dir, 'initrd');
  fs.writeFileSync(initrd, Buffer.alloc(4096), { mode: 0o644 });
  await a.load(file, { initrd });
  await a.unload();
  await a.load(kernel, { initrd: Buffer.alloc(4096) });
  await a.unload();
  await t.rejects(a.load(path.join(dir, 'missing')), { code: 'ERR_MK_IMAGE', message: /cannot read the kernel/ });
  if (process.getuid?.() === 0) {
    fs.chmodSync(file, 0o666);
    await t.rejects(a.load(file), { code: 'ERR_MK_IMAGE', message: /writable by group or others.*trustFiles/ });
    await t.resolves(a.load(file, { trustFiles: true }));
    await a.unload();
    fs.chmodSync(file, 0o644);
    fs.chownSync(file, 1000, 1000);
    await t.rejects(a.load(file), { code: 'ERR_MK_IMAGE', message: /owned by uid 1000/ });
    fs.chownSync(file, 0, 0);
    // a link in a directory anyone may write names a trusted file: the file is what counts
    const open = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-link-'));
    t.teardown(() => fs.rmSync(open, { recursive: true, force: true }));
    fs.chmodSync(open, 0o777);
    fs.symlinkSync(file, path.join(open, 'vmlinux'));
    await t.resolves(a.load(path.join(open, 'vmlinux')));
    await a.unload();
    fs.chmodSync(dir, 0o777);
    await t.rejects(a.load(file), { code: 'ERR_MK_IMAGE', message: new RegExp(`${dir} is writable by group or others`) }, 'a directory on the path');
    fs.chmodSync(dir, 0o755);
  } else {
    t.comment('not root: the trust check only applies to root');
  }
  for (const [errno, code, message] of [
    ['EPERM', 'ERR_MK_PERMISSION', /CAP_SYS_BOOT.*lockdown/],
    ['EKEYREJECTED', 'ERR_MK_IMAGE', /signature was rejected/],
    ['ENOEXEC', 'ERR_MK_IMAGE', /no kexec loader/],
    ['ENOMEM', 'ERR_MK_RESOURCES', /too small/],
    ['EBUSY', 'ERR_MK_INSTANCE_LOADED', /another kexec load/],
    ['EIO', 'EIO', /EIO/],
  ] as const) {
    const fds = openFds();
    system.faults.add({ op: 'kexec_file_load', times: 1, action: { errno } });
    await t.rejects(a.load(kernel, { initrd: Buffer.alloc(10) }), { code, message }, errno);
    t.equal(await a.status(), 'ready', `${errno}: still ready`);
    t.equal(openFds(), fds, `${errno}: no fd left`);
  }
  await t.resolves(a.load(kernel), 'the next call succeeds');
  const arm = await setup({ arch: 'arm64' });
  t.teardown(() => arm.system.dispose());
  await arm.host.pool.init({ cpus: 1, memory: '512M' });
  const b = await arm.host.createInstance({ name: 'b', cpus: 1, memory: '256M' });
  await t.rejects(b.load(kernel), { code: 'ERR_MK_IMAGE', message: /arm64/ }, 'the host\'s arch decides which images load');
  await b.load(placeholderImage('arm64'));
});

t.test('instance errors other than ENOENT are not "not found"', async (t) => {
  const { system, host } = await setup();
  t.teardown(() => system.dispose());
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/instances/a/id', times: 2, action: { errno: 'EIO' } });
  await t.rejects(a.status(), { code: 'EIO' });
  await t.rejects(host.instance('a'), { code: 'EIO' });
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/instances/a/id', times: 1, action: { errno: 'EIO' } });
  await t.rejects(host.instances(), { code: 'EIO' });
  system.faults.add({ op: 'read', path: '/proc/iomem', times: 1, action: { errno: 'EACCES' } });
  t.same((await a.info()).memory, [], 'an unreadable /proc/iomem (root only) gives no regions');
  system.faults.add({ op: 'read', path: '/proc/kimage', times: 1, action: { errno: 'ENOENT' } });
  t.equal((await a.info()).image, undefined);
  t.ok(new MultikernelError('ERR_MK_TIMEOUT', 'x'));
});

t.test('Host.open: lockTimeoutMs is checked before any kernel call, and bounds the wait for the writers\' locks', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  let calls = 0;
  const counted = wrap(system, {
    readFile: async (p: string) => {
      calls += 1;
      return system.readFile(p);
    },
  });
  for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    await t.rejects(Host.open({ system: counted, lockTimeoutMs: bad }), { name: 'RangeError', message: /lockTimeoutMs must be a whole number of milliseconds >= 0/ }, `lockTimeoutMs ${bad}`);
  }
  t.equal(calls, 0, 'refused before the kernel was asked anything');
  const lockPath = path.join(os.tmpdir(), `mk-host-test-timeout-${process.pid}.lock`);
  const host = await Host.open({ system, lockPath, lockTimeoutMs: 150 });
  const held = await system.lock(lockPath, { exclusive: true });
  const t0 = Date.now();
  await t.rejects(host.pool.init({ cpus: 1, memory: '256M' }), { code: 'ETIMEDOUT' }, 'another writer holds the lock past the timeout');
  const waited = Date.now() - t0;
  t.ok(waited >= 140 && waited < 5000, `waited ${waited} ms for a 150 ms timeout`);
  await held.release();
  t.equal((await host.pool.init({ cpus: 1, memory: '256M' })).exists, true, 'and goes through once the lock is free');
});

t.test('two writers growing an instance, the pool, or shrinking it at once choose under the locks: both succeed', async (t) => {
  const system = new SimulatedSystem({ haltTimeoutMs: 200, resourceAckTimeoutMs: 200 });
  t.teardown(() => system.dispose());
  const lockPath = path.join(os.tmpdir(), `mk-host-test-race-${process.pid}.lock`);
  const one = await Host.open({ system, lockPath });
  const two = await Host.open({ system, lockPath });
  await one.pool.init({ cpus: 4, memory: '2G' });
  await one.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  await one.createInstance({ name: 'b', cpus: 1, memory: '128M' });
  // two CPUs free: each writer adds one to its instance; a choice made before the locks picks the same one twice
  await Promise.all([(await one.instance('a')).update({ cpus: 2 }), (await two.instance('b')).update({ cpus: 2 })]);
  const cpusOf = async (name: string) => (await (await one.instance(name)).info()).cpus;
  const [a, b] = [await cpusOf('a'), await cpusOf('b')];
  t.equal(a.length + b.length, 4, 'both updates applied');
  t.same(a.filter((c) => b.includes(c)), [], 'no CPU in both');
  t.same((await one.pool.snapshot()).freeCpus, [], 'the pool gave both its free CPUs');
  // host CPUs into the pool, from two writers at once
  const before = (await one.pool.snapshot()).cpus.length;
  await Promise.all([one.pool.grow({ cpus: 1 }), two.pool.grow({ cpus: 1 })]);
  t.equal((await one.pool.snapshot()).cpus.length, before + 2, 'both grows applied, each with its own host CPU');
  // and back out
  await Promise.all([one.pool.shrink({ cpus: 1 }), two.pool.shrink({ cpus: 1 })]);
  t.same((await one.pool.snapshot()).freeCpus, [], 'both shrinks applied, each with its own free CPU');
  t.same(await txLeft(system), [], 'no transaction failed');
  // an update with nothing to change writes nothing
  const txs = (await system.readdir('/sys/fs/multikernel/overlays')).length;
  await (await one.instance('a')).update({ cpus: 2 });
  t.equal((await system.readdir('/sys/fs/multikernel/overlays')).length, txs, 'no transaction for an update that changes nothing');
});
