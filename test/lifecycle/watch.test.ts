// host.watch(): what happens to instances, the pool and transactions, each seen once with its
// cause, under changes made by this process, by another writer and by the instances themselves.
import t from 'tap';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Host, type WatchEvent } from '../../lib';
import { encodeOverlay } from '../../lib/model';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';
import { systemError } from '../../lib/errors';
import type { DeviceHandle } from '../../lib/system/system';
import { HostWatcher, RequestLog, relevantRecord } from '../../lib/watch';
import { wrap } from './helpers';
import { KEXEC_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL_HALT, LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, kexecMkId } from '../../lib/uapi';

const lockPath = path.join(os.tmpdir(), `mk-watch-test-${process.pid}.lock`);

/** Collects events until `until` holds for them (or 5 s pass). */
function collect(watcher: HostWatcher, until: (events: WatchEvent[]) => boolean): Promise<WatchEvent[]> {
  const events: WatchEvent[] = [];
  return new Promise((resolve) => {
    const timer = setTimeout(done, 5000);
    function done() {
      clearTimeout(timer);
      watcher.off('event', on);
      resolve(events);
    }
    function on(e: WatchEvent) {
      events.push(e);
      if (until(events)) done();
    }
    watcher.on('event', on);
  });
}

const statuses = (events: WatchEvent[]) => events.flatMap((e) => (e.type === 'status' ? [`${e.name} ${e.from}->${e.to} ${e.cause}`] : []));

t.test('changes made here, by another writer and by the instance itself, each with its cause', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 3, memory: '1G' });
  const watcher = host.watch({ intervalMs: 10 });
  t.teardown(() => watcher.close());
  await watcher.ready;

  let seen = collect(watcher, (es) => es.some((e) => e.type === 'instance-added') && es.some((e) => e.type === 'transaction'));
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  let events = await seen;
  t.match(events.find((e) => e.type === 'instance-added'), { name: 'a', id: a.id, status: 'ready' });
  t.match(events.find((e) => e.type === 'transaction'), { status: 'applied', resources: /create a$/ });

  seen = collect(watcher, (es) => statuses(es).length >= 2);
  await a.load(placeholderImage());
  await new Promise((r) => setTimeout(r, 40));
  await a.start();
  t.same(statuses(await seen), ['a ready->loaded requested', 'a loaded->active requested'], 'ours');

  seen = collect(watcher, (es) => statuses(es).length >= 1);
  await system.panic(a.id);
  t.same(statuses(await seen), ['a active->loaded crashed'], 'a panic halts back to the pool: crashed');

  // another tool starts it with the raw door
  seen = collect(watcher, (es) => statuses(es).length >= 1);
  await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, a.id);
  t.same(statuses(await seen), ['a loaded->active external']);

  seen = collect(watcher, (es) => statuses(es).length >= 2);
  await a.stop();
  await new Promise((r) => setTimeout(r, 40));
  await a.unload();
  t.same(statuses(await seen), ['a active->loaded requested', 'a loaded->ready requested']);

  // another writer creates and removes an instance; a failed transaction is reported
  seen = collect(watcher, (es) => es.some((e) => e.type === 'instance-added'));
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-create', name: 'b', memoryBytes: 64n << 20n }]));
  t.match((await seen).find((e) => e.type === 'instance-added'), { name: 'b', status: 'ready' });
  seen = collect(watcher, (es) => es.some((e) => e.type === 'transaction' && e.status === 'failed'));
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-remove', name: 'nope' }], { resources: 'by hand' }));
  t.match((await seen).find((e) => e.type === 'transaction' && e.status === 'failed'), { resources: 'by hand' });
  seen = collect(watcher, (es) => es.some((e) => e.type === 'instance-removed'));
  await (await host.instance('b')).delete();
  t.match((await seen).find((e) => e.type === 'instance-removed'), { name: 'b' });

  // the same name again under another id: removed, then added
  seen = collect(watcher, (es) => es.filter((e) => e.type === 'instance-added' || e.type === 'instance-removed').length >= 2);
  await a.delete();
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-create', name: 'a', id: 99, memoryBytes: 64n << 20n }]));
  events = await seen;
  t.ok(events.some((e) => e.type === 'instance-removed' && e.name === 'a'), 'the old a went');
  t.ok(events.some((e) => e.type === 'instance-added' && e.name === 'a' && e.id === 99), 'a new a came');
});

t.test('the async iterator, close, and the abort signal', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const controller = new AbortController();
  const watcher = host.watch({ intervalMs: 10, signal: controller.signal });
  await watcher.ready;
  const got: WatchEvent[] = [];
  const iterating = (async () => {
    for await (const e of watcher) {
      got.push(e);
      if (e.type === 'instance-added') controller.abort();
    }
  })();
  await host.createInstance({ name: 'x', cpus: 1, memory: '64M' });
  await iterating;
  t.ok(got.some((e) => e.type === 'instance-added'), 'seen through the iterator, which ends on abort');
  watcher.close();
  const early = host.watch({ signal: AbortSignal.abort() });
  await early.ready;
  const none: WatchEvent[] = [];
  for await (const e of early) none.push(e);
  t.same(none, [], 'an aborted signal: closed at once');
  t.throws(() => host.watch({ intervalMs: 0 }), RangeError);
});

t.test('what cannot be read is left out, not reported', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '64M' });
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/instances/a/status', action: { errno: 'EIO' } });
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/device_tree', action: { errno: 'EIO' } });
  system.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/overlays', action: { errno: 'EIO' } });
  // polling: clearing a fault logs nothing, so only a timer can show what became readable
  const watcher = host.watch({ wake: 'poll', intervalMs: 10 });
  t.equal(watcher.mode, 'poll');
  await watcher.ready;
  system.faults.clear();
  const seen = collect(watcher, (es) => es.some((e) => e.type === 'instance-added'));
  t.match((await seen).find((e) => e.type === 'instance-added'), { name: 'a', id: a.id }, 'it appears once readable');
  system.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', action: { errno: 'EIO' } });
  system.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/overlays', action: { errno: 'EIO' } });
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/device_tree', action: { errno: 'EIO' } });
  const quiet: WatchEvent[] = [];
  const onQuiet = (e: WatchEvent) => quiet.push(e);
  watcher.on('event', onQuiet);
  await new Promise((r) => setTimeout(r, 60));
  watcher.off('event', onQuiet);
  t.same(quiet, [], 'listings that cannot be read are no change: nothing removed, nothing re-reported');
  system.faults.clear();
  const removed = collect(watcher, (es) => es.some((e) => e.type === 'instance-removed'));
  await a.delete();
  t.match((await removed).find((e) => e.type === 'instance-removed'), { name: 'a' });
  watcher.close();
  watcher.close();
  const log = new RequestLog();
  t.equal(log.seq, 0);
  log.note(1, 'loaded');
  log.note(1, 'active');
  t.same([log.asked(1, 'active'), log.asked(1, 'loaded'), log.asked(1, 'ready'), log.asked(2, 'active'), log.asked(1, 'active', 2), log.asked(1, 'loaded', 1)], [2, 1, undefined, undefined, undefined, undefined]);
  for (let i = 0; i < 10; i++) log.note(3, 'active');
  t.equal(log.asked(3, 'active'), 12, 'the newest');
  t.equal(log.seq, 12);
  t.equal(KEXEC_MULTIKERNEL | kexecMkId(1), 0x30);
});

t.test('closing: while the first reading runs, and while an iterator waits', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  const quick = host.watch({ intervalMs: 10 });
  quick.close();
  await quick.ready;
  const events: WatchEvent[] = [];
  quick.on('event', (e: WatchEvent) => events.push(e));
  await host.pool.init({ cpus: 1, memory: '256M' });
  await new Promise((r) => setTimeout(r, 50));
  t.same(events, [], 'closed before its first reading: nothing more');
  const waiting = host.watch({ intervalMs: 10 });
  await waiting.ready;
  const iterating = (async () => {
    const got: WatchEvent[] = [];
    for await (const e of waiting) got.push(e);
    return got;
  })();
  await new Promise((r) => setTimeout(r, 30));
  waiting.close();
  t.same(await iterating, [], 'the waiting iterator ends');
});

t.test('a transaction status or tag that cannot be read yet is read again later', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const watcher = host.watch({ intervalMs: 10 });
  t.teardown(() => watcher.close());
  await watcher.ready;
  system.faults.add({ op: 'read', path: /overlays\/tx_\d+\/status$/, times: 2, action: { errno: 'EIO' } });
  system.faults.add({ op: 'read', path: /overlays\/tx_\d+\/resources$/, times: 1, action: { errno: 'EIO' } });
  const seen = collect(watcher, (es) => es.some((e) => e.type === 'transaction'));
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-create', name: 'q', memoryBytes: 64n << 20n }], { resources: 'tagged' }));
  t.match((await seen).find((e) => e.type === 'transaction'), { status: 'applied', resources: '' }, 'reported once its status read; an unreadable tag is empty');
});

t.test('woken by the kernel log: another process, a start, a panic; the safety reading', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mk-watch-kmsg-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const system = new SimulatedSystem({ stateDir: dir });
  const other = new SimulatedSystem({ stateDir: dir });
  t.teardown(() => Promise.all([system.dispose(), other.dispose()]));
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 3, memory: '1G' });
  // no timer would read in time: only the log can wake the watcher
  const watcher = host.watch({ safetyIntervalMs: 60_000 });
  t.teardown(() => watcher.close());
  await watcher.ready;
  t.equal(watcher.mode, 'kmsg');

  // another process (its own SimulatedSystem on the same state directory) creates an instance
  let seen = collect(watcher, (es) => es.some((e) => e.type === 'instance-added'));
  const otherHost = await Host.open({ system: other, lockPath: `${lockPath}.other` });
  const started = Date.now();
  const b = await otherHost.createInstance({ name: 'b', cpus: 1, memory: '128M' });
  t.match((await seen).find((e) => e.type === 'instance-added'), { name: 'b', id: b.id, status: 'ready' }, 'seen in another process');
  t.ok(Date.now() - started < 5000, 'long before the safety reading');

  // a kexec load logs nothing (without KEXEC_FILE_DEBUG): the safety reading finds it
  const quiet = host.watch({ safetyIntervalMs: 50 });
  t.teardown(() => quiet.close());
  await quiet.ready;
  seen = collect(quiet, (es) => statuses(es).length >= 1);
  await b.load(placeholderImage());
  t.same(statuses(await seen), ['b ready->loaded external'], 'a load, by the safety reading');

  // the spawn's own transitions come with kernel lines
  seen = collect(watcher, (es) => statuses(es).length >= 2);
  await other.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, b.id);
  await new Promise((r) => setTimeout(r, 30));
  await other.panic(b.id);
  // (whether this watcher saw the load depends on a re-read that happened to follow it)
  t.same((await seen).flatMap((e) => (e.type === 'status' ? [`${e.to} ${e.cause}`] : [])), ['active external', 'loaded crashed'], 'the start and the panic were logged');
});

t.test('a log that cannot be opened or read: polling; lost records: a reading', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });

  // dmesg_restrict without CAP_SYSLOG
  system.faults.add({ op: 'open.kmsg', times: 1, action: { errno: 'EPERM' } });
  const denied = host.watch({ intervalMs: 10, safetyIntervalMs: 60_000 });
  t.teardown(() => denied.close());
  await denied.ready;
  t.equal(denied.mode, 'poll', 'no log: polling');
  let seen = collect(denied, (es) => es.some((e) => e.type === 'instance-added'));
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '64M' });
  await seen;
  seen = collect(denied, (es) => statuses(es).length >= 1);
  await a.load(placeholderImage()); // logs nothing: only a timer sees it
  t.same(statuses(await seen), ['a ready->loaded requested'], 'seen by polling');

  // a log whose reads report lost records (EPIPE), then fail for good (EIO)
  let pending: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  let closed = 0;
  const log: DeviceHandle = {
    read: () => new Promise((resolve, reject) => (pending = { resolve, reject })),
    write: async () => 0,
    close: async () => void closed++,
  };
  let readings = 0;
  const sys2 = wrap(system, {
    openKernelLog: async () => log,
    readdir: (p: string) => {
      if (p === '/sys/fs/multikernel/instances') readings++;
      return system.readdir(p);
    },
  });
  const host2 = await Host.open({ system: sys2, lockPath: `${lockPath}.2` });
  const watcher = host2.watch({ intervalMs: 10, safetyIntervalMs: 60_000 });
  t.teardown(() => watcher.close());
  await watcher.ready;
  t.equal(watcher.mode, 'kmsg');
  // a change nothing logged, then word that records were lost: the watcher reads
  seen = collect(watcher, (es) => statuses(es).length >= 1);
  await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, a.id);
  const startLine = (await system.dmesg()).length;
  t.ok(startLine > 0);
  pending!.reject(systemError('EPIPE', 'read', '/dev/kmsg'));
  t.same(statuses(await seen), ['a loaded->active external'], 'EPIPE: a reading');
  // a record of another subsystem wakes nothing, one written from user space neither
  await new Promise((r) => setTimeout(r, 60));
  const before = readings;
  pending!.resolve(Buffer.from('6,1,0,-;usb 1-1: new device\n'));
  await new Promise((r) => setTimeout(r, 10));
  pending!.resolve(Buffer.from('14,2,0,-;Multikernel instance said hello from user space\n'));
  await new Promise((r) => setTimeout(r, 60));
  t.equal(readings, before, 'no reading for records that announce nothing');
  // a relevant record: a reading at once and one more after SETTLE_MS
  pending!.resolve(Buffer.from('6,3,0,-;Multikernel instance 9 halted (graceful)\n'));
  for (const deadline = Date.now() + 5000; readings < before + 2 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 60));
  t.equal(readings, before + 2, 'a reading, and the settling one');
  seen = collect(watcher, (es) => statuses(es).length >= 1);
  await system.panic(a.id);
  pending!.reject(systemError('EIO', 'read', '/dev/kmsg'));
  t.same(statuses(await seen), ['a active->loaded crashed'], 'a failing log: polling finds it');
  t.equal(watcher.mode, 'poll');
  t.equal(closed, 1, 'the log was closed');
});

t.test('liveness: hung and responsive events', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 3, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '64M' });
  await a.load(placeholderImage());
  await a.start();
  const watcher = host.watch({ liveness: { intervalMs: 20, attempts: 2, attemptMs: 20 } });
  t.teardown(() => watcher.close());
  await watcher.ready;
  const quiet: WatchEvent[] = [];
  watcher.on('event', (e: WatchEvent) => quiet.push(e));
  await new Promise((r) => setTimeout(r, 100));
  t.same(quiet, [], 'an instance that answers: nothing to report');
  let seen = collect(watcher, (es) => es.some((e) => e.type === 'hung'));
  await system.hang(a.id);
  t.match((await seen).find((e) => e.type === 'hung'), { type: 'hung', name: 'a', id: a.id });
  seen = collect(watcher, (es) => es.some((e) => e.type === 'status'));
  await a.stop({ force: true, timeoutMs: 0 });
  t.match((await seen).find((e) => e.type === 'status'), { from: 'active', to: 'loaded', cause: 'requested' }, 'a forced halt: the status says it');
  // started again, it answers: no 'responsive' (the hang ended with the halt)
  await a.start();
  await new Promise((r) => setTimeout(r, 150));
  t.notOk(quiet.some((e) => e.type === 'responsive'));

  // a kernel that stalls and comes back (a System whose connects time out for a while)
  let stalled = false;
  const sys2 = wrap(system, {
    vsockConnect: async (o) => {
      if (stalled) {
        await new Promise((_, reject) => o.signal?.addEventListener('abort', () => reject(o.signal!.reason), { once: true }));
      }
      return system.vsockConnect(o);
    },
  });
  const host2 = await Host.open({ system: sys2, lockPath: `${lockPath}.2` });
  const w2 = host2.watch({ liveness: { intervalMs: 20, attempts: 1, attemptMs: 20 } });
  t.teardown(() => w2.close());
  await w2.ready;
  await new Promise((r) => setTimeout(r, 100)); // it answers a few probes
  seen = collect(w2, (es) => es.some((e) => e.type === 'hung'));
  stalled = true;
  t.match((await seen).find((e) => e.type === 'hung'), { name: 'a' });
  seen = collect(w2, (es) => es.some((e) => e.type === 'responsive'));
  stalled = false;
  t.match((await seen).find((e) => e.type === 'responsive'), { name: 'a', id: a.id });
  w2.close();
  // a kernel that never answered (still booting) is not reported hung
  const sys5 = wrap(system, { vsockConnect: (o) => new Promise((_, reject) => o.signal?.addEventListener('abort', () => reject(o.signal!.reason), { once: true })) });
  const w5 = (await Host.open({ system: sys5, lockPath: `${lockPath}.5` })).watch({ liveness: { intervalMs: 10, attempts: 1, attemptMs: 10 } });
  const booting: WatchEvent[] = [];
  w5.on('event', (e: WatchEvent) => booting.push(e));
  await w5.ready;
  await new Promise((r) => setTimeout(r, 100));
  w5.close();
  t.same(booting, [], 'silent since it became active: booting, not hung');
  // a probe that cannot be made (the transport fails otherwise): no event either way
  const sys3 = wrap(system, { vsockConnect: async () => Promise.reject(systemError('EIO', 'connect')) });
  const host3 = await Host.open({ system: sys3, lockPath: `${lockPath}.3` });
  const w4 = host3.watch({ liveness: { intervalMs: 10, attempts: 1, attemptMs: 10 } });
  const none: WatchEvent[] = [];
  w4.on('event', (e: WatchEvent) => none.push(e));
  await w4.ready;
  await new Promise((r) => setTimeout(r, 80));
  w4.close();
  t.same(none, [], 'probe errors report nothing');
  const w3 = host.watch({ liveness: true });
  w3.close();
  t.throws(() => host.watch({ liveness: { intervalMs: 0 } }), RangeError);
  t.throws(() => host.watch({ safetyIntervalMs: 1.5 }), RangeError);
  t.throws(() => host.watch({ wake: 'inotify' as never }), RangeError);
  t.equal(host.watch({ liveness: false, wake: 'poll' }).close(), undefined);
});

t.test('which kernel records may announce a change', async (t) => {
  t.ok(relevantRecord('6,120,5000,-;Multikernel instance 3 is now active'));
  t.ok(relevantRecord('3,121,5001,-;Failed to apply overlay transaction 7: -22\n SUBSYSTEM=x'));
  t.ok(relevantRecord('6,122,5002,-;Freed multikernel ID 3'));
  t.notOk(relevantRecord('6,123,5003,-;e1000e: eth0 NIC Link is Up'), 'another subsystem');
  t.notOk(relevantRecord('13,124,5004,-;Multikernel instance 3 is now active'), 'facility user: written from user space');
  t.notOk(relevantRecord('garbage'), 'not a record');
  t.notOk(relevantRecord('x,1,0,-;instance'), 'no priority');
  t.notOk(relevantRecord('6,1,0,-;e1000e\n instance=1'), 'only the text counts, not the dictionary lines');
});

t.test('one reading that finds the same name under another id: removed, then added', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '64M' });
  let hold: Promise<void> | undefined;
  let held: (() => void) | undefined;
  const sys2 = wrap(system, {
    readdir: async (p: string) => {
      if (p === '/sys/fs/multikernel/instances' && hold) {
        held?.();
        await hold;
      }
      return system.readdir(p);
    },
  });
  const watcher = (await Host.open({ system: sys2, lockPath: `${lockPath}.2` })).watch({ wake: 'poll', intervalMs: 10 });
  t.teardown(() => watcher.close());
  await watcher.ready;
  let release!: () => void;
  hold = new Promise((r) => (release = r));
  await new Promise<void>((r) => (held = r)); // a reading waits at the listing
  await a.delete();
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-create', name: 'a', id: 99, memoryBytes: 64n << 20n }]));
  const seen = collect(watcher, (es) => es.filter((e) => e.type === 'instance-added' || e.type === 'instance-removed').length >= 2);
  hold = undefined;
  release();
  t.match(
    (await seen).filter((e) => e.type === 'instance-added' || e.type === 'instance-removed'),
    [{ type: 'instance-removed', name: 'a', id: a.id }, { type: 'instance-added', name: 'a', id: 99 }],
  );
});

/** A small seeded generator (mulberry32), so a failing sequence can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

for (const seed of [1, 2, 3]) {
  t.test(`random changes (seed ${seed}): each seen once, with its cause`, async (t) => {
    const system = new SimulatedSystem();
    t.teardown(() => system.dispose());
    const host = await Host.open({ system, lockPath });
    await host.pool.init({ cpus: 3, memory: '1G' });
    const names = ['a', 'b', 'c'];
    const inst = new Map<string, Awaited<ReturnType<Host['createInstance']>>>();
    const state = new Map<string, 'loaded' | 'active' | 'hung'>();
    for (const name of names) {
      const i = await host.createInstance({ name, cpus: 1, memory: '128M' });
      await i.load(placeholderImage());
      inst.set(name, i);
      state.set(name, 'loaded');
    }
    const watcher = host.watch({ liveness: { intervalMs: 20, attempts: 2, attemptMs: 20 } });
    t.teardown(() => watcher.close());
    await watcher.ready;
    t.equal(watcher.mode, 'kmsg');
    const got: string[] = [];
    watcher.on('event', (e: WatchEvent) => {
      if (e.type === 'status') got.push(`${e.name} ${e.from}->${e.to} ${e.cause}`);
      if (e.type === 'hung' || e.type === 'responsive') got.push(`${e.name} ${e.type}`);
    });
    const expected: string[] = [];
    const rnd = random(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    type Op = [string, () => Promise<unknown>, string, 'loaded' | 'active' | 'hung'];
    for (let step = 0; step < 30; step++) {
      const name = pick(names);
      const i = inst.get(name)!;
      const id = i.id;
      const ops: Op[] =
        state.get(name) === 'loaded'
          ? [
              ['start here', () => i.start(), `${name} loaded->active requested`, 'active'],
              ['start by another tool', () => system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, id), `${name} loaded->active external`, 'active'],
            ]
          : state.get(name) === 'active'
            ? [
                ['stop here', () => i.stop(), `${name} active->loaded requested`, 'loaded'],
                ['stop by another tool', () => system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, id), `${name} active->loaded external`, 'loaded'],
                ['forced stop by another tool', () => system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, id), `${name} active->loaded external`, 'loaded'],
                ['panic', () => system.panic(id), `${name} active->loaded crashed`, 'loaded'],
                ['poweroff inside', () => system.poweroffFromInside(id), `${name} active->loaded crashed`, 'loaded'],
                // (after a few probes: only a kernel that answered once counts as hung when silent)
                ['hang', async () => (await new Promise((r) => setTimeout(r, 150)), system.hang(id)), `${name} hung`, 'hung'],
              ]
            : [
                ['forced stop here', () => i.stop({ force: true, timeoutMs: 0 }), `${name} active->loaded requested`, 'loaded'],
                ['forced stop by another tool', () => system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, id), `${name} active->loaded external`, 'loaded'],
              ];
      const [what, run, event, next] = pick(ops);
      const count = got.length;
      await run();
      state.set(name, next);
      expected.push(event);
      for (const deadline = Date.now() + 5000; got.length === count && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
      t.same(got.slice(count), [event], `step ${step}: ${what} ${name}`);
    }
    await new Promise((r) => setTimeout(r, 200));
    t.same(got, expected, 'nothing more: each change seen once');
  });
}
