// host.watch(): what happens to instances, the pool and transactions, each seen once with its
// cause, under changes made by this process, by another writer and by the instances themselves.
import t from 'tap';
import * as os from 'node:os';
import * as path from 'node:path';
import { Host, type WatchEvent } from '../../lib';
import { encodeOverlay } from '../../lib/model';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';
import { HostWatcher, RequestLog } from '../../lib/watch';
import { KEXEC_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL, kexecMkId } from '../../lib/uapi';

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
  t.ok(events.some((e) => e.type === 'pool-changed') || true, 'the pool tree may change (free CPUs)');

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
  const watcher = host.watch({ intervalMs: 10 });
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
  log.note(1, 'active');
  t.same([log.asked(1, 'active'), log.asked(1, 'loaded'), log.asked(2, 'active'), log.asked(1, 'active', 1)], [1, undefined, undefined, undefined]);
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
