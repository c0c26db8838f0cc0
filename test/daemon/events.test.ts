// The daemon's answers to what others do to the host (in this process, simulated host in memory):
// drift (deleted, unloaded) is reported and put right only by a reload; a halt by another tool is
// a stop the daemon did not ask for; hangs under each policy; unmanaged instances are left alone.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SimulatedSystem } from '../../lib/system/simulated';
import { StateDir } from '../../lib/system/simulated/state-dir';
import { DEFAULT_TOPOLOGY, initialState, type SimState } from '../../lib/system/simulated/state';
import { dtbo, fragment, instanceCreate } from '../contract/suite';
import { harness, spec, until } from './fixture';

const instance = (name: string, body = '') => `  ${name}:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n${body}`;
const policy = (p: string, initial = '100ms') => `    restart:\n      policy: ${p}\n      backoff: { initial: ${initial}, max: 1s }\n`;
const health = '    health: { interval: 60ms, timeout: 20ms, failures: 2 }\n';

t.test('drift: deleted and unloaded behind the daemon\'s back, reported, re-applied at the reload', async (t) => {
  const h = await harness(t, spec(instance('web', '    autostart: false\n') + instance('db', '    autostart: false\n')));
  const other = await h.other();
  await (await other.instance('web')).delete({ force: true });
  await h.logged(/^<4>drift: web was deleted behind the daemon's back; SIGHUP re-applies the spec$/);
  await (await other.instance('db')).unload();
  await h.logged(/^<4>drift: db went loaded -> ready behind the daemon's back; SIGHUP re-applies the spec$/);
  await h.notified(/^STATUS=0\/0 instances running; drift: web, db \(SIGHUP re-applies\)$/);
  await new Promise((r) => setTimeout(r, 60));
  await t.rejects(other.instance('web'), { code: 'ERR_MK_INSTANCE_NOT_FOUND' }, 'not re-created silently');
  t.equal(await h.status('db'), 'ready', 'not reloaded silently');

  // it comes back by someone else's hand: no longer drift
  await other.createInstance({ name: 'web', cpus: 1, memory: '256M' });
  await h.logged(/^<5>web is back \(id \d+, ready\); SIGHUP re-applies the spec to it$/);
  const from = h.notes.length;
  h.daemon.reload();
  await h.notified(/^RELOADING=1\nMONOTONIC_USEC=\d+$/, from);
  await h.notified(/^READY=1\nSTATUS=0\/0 instances running$/, from);
  t.equal(await h.status('web'), 'loaded');
  t.equal(await h.status('db'), 'loaded');
  t.equal(await h.stop(), 0);
});

t.test('a halt by another tool (the kernel log says so) is a stop the daemon did not ask for', async (t) => {
  const h = await harness(t, spec(instance('web', policy('restart'))), { watch: {} });
  const other = await h.other();
  await (await other.instance('web')).stop();
  await h.logged(/^<5>web was halted by another tool \(active -> loaded\)$/);
  await h.logged(/^<5>web restarting in 100 ms \(attempt 1\/5\)$/);
  await h.logged(/^<5>restarting web \(attempt 1\/5, after it was halted\)$/);
  await until(async () => (await h.status('web')) === 'active');
  t.equal(await h.stop(), 0);
});

t.test('unmanaged instances: left alone, their changes logged at low priority', async (t) => {
  const h = await harness(t, spec(instance('web')));
  const other = await h.other();
  const extra = await other.createInstance({ name: 'extra', cpus: 1, memory: '128M' });
  await h.logged(/^<5>instance extra \(id \d+\) appeared, not in the spec: left alone$/);
  const { placeholderImage } = await import('../../lib/image');
  await extra.load(placeholderImage());
  await h.logged(/^<7>instance extra \(not in the spec\): ready -> loaded \(external\)$/);
  await extra.unload();
  await extra.delete();
  await h.logged(/^<6>instance extra \(id \d+\), not in the spec, was removed$/);
  await other.pool.grow({ cpus: 1 });
  await h.logged(/^<7>the pool changed$/);
  await h.logged(/^<7>transaction \d+ applied "/);
  // an instance id that is taken: a failed transaction, left for whoever wrote it to remove
  const blob = dtbo([fragment('0', '/instances', [instanceCreate('dup', { id: await h.id('web'), cpus: [6], memoryBytes: 128 * 1024 * 1024 })])], 'a test');
  await h.sim.writeFile('/sys/fs/multikernel/overlays/new', blob).catch(() => undefined);
  await h.logged(/^<4>transaction \d+ failed "a test"$/);
  t.equal(await h.stop(), 0);
});

t.test('hangs: restart force-halts and starts again, stop force-halts, preserve leaves it; no health check: nothing done', async (t) => {
  const h = await harness(
    t,
    spec(instance('a', policy('restart') + health) + instance('b', policy('stop') + health) + instance('c', policy('preserve') + health) + instance('d', policy('restart'))),
  );
  // the watcher reports a hang of a kernel that answered once: let the probes see them alive
  await new Promise((r) => setTimeout(r, 200));
  for (const name of ['a', 'b', 'c', 'd']) await h.sim.hang(await h.id(name));
  await h.logged(/^<4>a hangs: 2 probes unanswered \(policy restart\)$/);
  await h.logged(/^<5>a force-halted$/);
  await h.logged(/^<5>restarting a \(attempt 1\/5, after a hang\)$/);
  await until(async () => (await h.status('a')) === 'active', 30_000, 'a running again');
  await h.logged(/^<4>b hangs: 2 probes unanswered \(policy stop\)$/);
  await h.logged(/^<5>b force-halted$/);
  await h.logged(/^<5>c left hanging for a post-mortem \(restart policy preserve\)$/);
  await h.logged(/^<6>d does not answer its probes \(no health check in the spec: nothing done\)$/);
  await h.notified(/^STATUS=2\/4 instances running; b hung, stopped \(policy stop\); c hung, preserved$/);
  t.equal(await h.status('b'), 'loaded');
  t.equal(await h.status('c'), 'active');
  t.equal(await h.status('d'), 'active');
  t.equal(await h.stop(), 0);
});

t.test('a hung instance that answers again is reported; a forced halt that fails is logged', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-daemon-sd-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sim = new SimulatedSystem({ stateDir: path.join(dir, 'sim') });
  await sim.mountMultikernel();
  const h = await harness(t, spec(instance('c', policy('preserve') + health) + instance('s', policy('stop') + health)), { sim });
  await new Promise((r) => setTimeout(r, 200));
  await sim.hang(await h.id('c'));
  await h.logged(/^<5>c left hanging/);
  // the kernel recovers by itself (nothing in the simulator does that: edit its state)
  const state = new StateDir(path.join(dir, 'sim'));
  const release = await state.lock();
  const s: SimState = state.load(() => initialState(DEFAULT_TOPOLOGY));
  s.instances.find((i) => i.name === 'c')!.hung = false;
  state.save(s);
  release();
  await h.logged(/^<5>c answers its probes again$/);
  sim.faults.add({ op: 'reboot', action: { errno: 'EIO' } });
  await sim.hang(await h.id('s'));
  await h.logged(/^<3>s: the forced halt failed: /);
  sim.faults.clear();
  t.equal(await h.stop(), 0);
});
