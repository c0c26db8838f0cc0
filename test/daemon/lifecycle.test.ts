// The daemon's own life, in this process: a spec that cannot be loaded at start (exit 2) or at
// a reload (the old one is kept), apply failures, the watchdog and its conditions, sd_notify
// failures, and the stop (onDaemonStop: stop, gracefully or by force).
import t from 'tap';
import * as fs from 'node:fs';
import { FakeClock, harness, spec, until } from './fixture';
import { DAEMON_EXIT, formatMs, journalLine, livenessOf, PRIORITY } from '../../lib/daemon';

const instance = (name: string, body = '') => `  ${name}:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n${body}`;

t.test('journal lines, durations, liveness settings', async (t) => {
  t.equal(journalLine(PRIORITY.err, 'a\n  b'), '<3>a b\n');
  t.equal(journalLine(PRIORITY.debug, 'x'), '<7>x\n');
  t.equal(formatMs(250), '250 ms');
  t.equal(formatMs(4000), '4 s');
  t.equal(formatMs(1500), '1.5 s');
  const entry = (health?: { intervalMs: number; timeoutMs: number; failures: number }) => ({ ...(health ? { health } : {}) }) as never;
  t.equal(livenessOf({ version: 1, instances: [entry()], source: 'x' }), undefined);
  t.same(
    livenessOf({ version: 1, instances: [entry({ intervalMs: 1000, timeoutMs: 100, failures: 3 }), entry(), entry({ intervalMs: 500, timeoutMs: 200, failures: 2 })], source: 'x' }),
    { intervalMs: 500, attempts: 3, attemptMs: 200 },
    'the shortest interval, the most patient probe',
  );
});

t.test('a spec that cannot be loaded at start: every issue logged, STATUS says so, exit 2', async (t) => {
  let h = await harness(t, 'version: 2\ninstances:\n  web:\n    memory: 512X\n', { ready: false });
  t.equal(await h.done, DAEMON_EXIT.spec);
  const errors = h.logs.filter((l) => l.startsWith('<3>'));
  t.ok(errors.length >= 3, 'one line per issue and a summary');
  t.match(errors[0], new RegExp(`^<3>${h.specPath}:1:\\d+: /version: `));
  t.match(errors.at(-1), /^<3>spec .*host\.yaml: \d+ errors$/);
  t.match(h.notes, [/^STATUS=spec .*host\.yaml could not be loaded: /]);
  t.notOk(h.notes.some((n) => n.startsWith('READY=1')));

  h = await harness(t, 'version: 1\ninstances:\n  web:\n    memory: 512X\n    cpus: 1\n', { ready: false });
  t.equal(await h.done, 2);
  t.match(h.logs.filter((l) => l.startsWith('<3>')).at(-1), /: 1 error$/);
});

t.test('a spec file that is not there at start: exit 2', async (t) => {
  const h = await harness(t, '', { ready: false, noSpec: true });
  t.equal(await h.done, 2);
  t.match(h.logs.at(-1), /^<3>spec .*host\.yaml: ENOENT: no such file or directory/);
});

t.test('reload: RELOADING=1 with MONOTONIC_USEC, READY=1; an invalid spec keeps the old one', async (t) => {
  const h = await harness(t, spec(instance('web')), { ready: false });
  h.daemon.reload(); // before READY=1: done once ready
  await h.notified(/^READY=1/);
  const ready = h.notes.findIndex((n) => n.startsWith('READY=1'));
  await h.notified(/^RELOADING=1\nMONOTONIC_USEC=\d+$/, ready);
  const reloading = h.notes.find((n) => n.startsWith('RELOADING=1'))!;
  const usec = BigInt(reloading.split('MONOTONIC_USEC=')[1]!);
  const now = process.hrtime.bigint() / 1000n;
  t.ok(usec <= now && now - usec < 10_000_000n, 'CLOCK_MONOTONIC in microseconds');
  await until(() => h.notes.filter((n) => n.startsWith('READY=1')).length === 2, 30_000, 'READY=1 after the reload');
  await h.logged(/^<6>apply: the host matches the spec, nothing to do$/);

  let from = h.notes.length;
  h.writeSpec('version: 1\ninstances:\n  web: {cpus: 1, memory: 1X}\n');
  h.daemon.reload();
  await h.notified(/^READY=1\nSTATUS=1\/1 instances running; reload failed \(1 spec error\), keeping the previous spec$/, from);
  t.match(h.logs.filter((l) => l.startsWith('<3>')).at(-2), /\/instances\/web\/memory: /);
  t.equal(h.daemon.spec?.instances[0]?.memoryBytes, 256n * 1024n * 1024n, 'the old spec');

  from = h.notes.length;
  fs.rmSync(h.specPath);
  h.daemon.reload();
  await h.notified(/^READY=1\nSTATUS=1\/1 instances running; reload failed \(ENOENT: no such file or directory, open '.*'\), keeping the previous spec$/, from);

  // a good one again, with a health check: the watcher probes from now on
  from = h.notes.length;
  h.writeSpec(spec(instance('web', '    health: { interval: 50ms, timeout: 10ms, failures: 2 }\n') + instance('db')));
  h.daemon.reload();
  await h.notified(/^READY=1\nSTATUS=2\/2 instances running$/, from);
  t.equal(await h.status('db'), 'active');
  await new Promise((r) => setTimeout(r, 150));
  await h.sim.hang(await h.id('web'));
  await h.logged(/^<4>web hangs: 2 probes unanswered \(policy restart\)$/);
  t.equal(await h.stop(), 0);
  h.daemon.reload();
  t.notOk(h.notes.slice(-1)[0]!.startsWith('RELOADING'), 'no reload once stopping');
});

t.test('apply failures: a step that fails is logged and STATUS says so; an apply that throws too', async (t) => {
  const sim = new (await import('../../lib/system/simulated')).SimulatedSystem();
  await sim.mountMultikernel();
  sim.faults.add({ op: 'kexec_file_load', action: { errno: 'EIO' } });
  let h = await harness(t, spec(instance('web')), { sim });
  t.ok(h.logs.some((l) => /^<3>apply: load web failed: /.test(l)));
  t.match(h.notes.find((n) => n.startsWith('READY=1')), /^READY=1\nSTATUS=0\/1 instances running; apply did not converge: 2 of \d+ steps failed$/);
  t.ok(h.logs.some((l) => /^<3>apply did not converge: 2 of \d+ steps failed; SIGHUP tries again$/.test(l)));
  sim.faults.clear();
  const from = h.notes.length;
  h.daemon.reload();
  await h.notified(/^READY=1\nSTATUS=1\/1 instances running$/, from);
  await h.stop();

  // the host cannot be read: the plan, and so the apply, fails as a whole
  const sim2 = new (await import('../../lib/system/simulated')).SimulatedSystem();
  await sim2.mountMultikernel();
  sim2.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', times: 1, action: { errno: 'EIO' } });
  h = await harness(t, spec(instance('web')), { sim: sim2 });
  t.match(h.notes.find((n) => n.startsWith('READY=1')), /; apply failed: EIO.*$/);
  t.ok(h.logs.some((l) => /^<3>apply failed: .*; SIGHUP tries again$/.test(l)));
  t.equal(await h.stop(), 0);
});

t.test('a stop during the initial apply: the apply is interrupted, no READY=1, exit 0', async (t) => {
  const sim = new (await import('../../lib/system/simulated')).SimulatedSystem();
  await sim.mountMultikernel();
  sim.faults.add({ op: 'kexec_file_load', action: { stallMs: 300 } });
  const h = await harness(t, spec(instance('web')), { sim, ready: false });
  await h.logged(/^<6>apply: create web/);
  t.equal(await h.stop(), 0);
  t.ok(h.logs.includes('<4>apply: interrupted by the stop'));
  t.notOk(h.notes.some((n) => n.startsWith('READY=1')));
  t.match(h.notes.at(-1), /^STOPPING=1/);
});

t.test('watchdog: WATCHDOG=1 every WATCHDOG_USEC/2 after a host read; none for another pid, none when the host does not answer', async (t) => {
  const clock = new FakeClock();
  // the watcher reads the listing once, at its start: the faults below hit the watchdog's reads
  const h = await harness(t, spec(instance('web')), { clock, env: { WATCHDOG_USEC: '2000000', WATCHDOG_PID: String(process.pid) }, watch: { wake: 'poll', intervalMs: 600_000 } });
  t.ok(h.logs.includes('<6>watchdog: a ping every 1 s'));
  const pings = () => h.notes.filter((n) => n === 'WATCHDOG=1').length;
  clock.advance(0);
  await until(() => pings() === 1, 30_000, 'the first ping');
  for (let i = 2; i <= 4; i++) {
    clock.advance(1000);
    await until(() => pings() === i, 30_000, `ping ${i}`);
  }
  h.sim.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', times: 1, action: { errno: 'EIO' } });
  clock.advance(1000);
  await h.logged(/^<4>watchdog: no ping, the host did not answer: EIO/);
  t.equal(pings(), 4);
  h.sim.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', times: 1, action: { stallMs: 100 } });
  clock.advance(1000);
  await new Promise((r) => setTimeout(r, 10));
  clock.advance(1000); // the answer is late: the tick's own limit runs out first
  await h.logged(/^<4>watchdog: no ping, the host did not answer: no answer within 1 s$/);
  await new Promise((r) => setTimeout(r, 150));
  clock.advance(0); // the next tick is due at once (timed from the late one's start), within its own limit
  await until(() => pings() === 5, 30_000, 'pings again once the host answers');
  // a tick whose read is under way when the stop comes: no ping after STOPPING=1
  h.sim.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', times: 1, action: { stallMs: 100 } });
  clock.advance(1000);
  t.equal(await h.stop(), 0);
  await new Promise((r) => setTimeout(r, 150));
  t.notOk(h.notes.slice(h.notes.findIndex((n) => n.startsWith('STOPPING=1'))).includes('WATCHDOG=1'));
  const after = pings();
  clock.advance(5000);
  t.equal(pings(), after, 'none after STOPPING=1');

  for (const env of [{ WATCHDOG_USEC: '2000000', WATCHDOG_PID: '1' }, { WATCHDOG_USEC: 'soon' }, { WATCHDOG_USEC: '0' }, {}]) {
    const c = new FakeClock();
    const other = await harness(t, spec(instance('web')), { clock: c, env });
    c.advance(10_000);
    await new Promise((r) => setTimeout(r, 20));
    t.notOk(other.notes.includes('WATCHDOG=1'), JSON.stringify(env));
    await other.stop();
  }
  const empty = await harness(t, spec(instance('web')), { env: { WATCHDOG_USEC: '20000', WATCHDOG_PID: '' } });
  await empty.notified(/^WATCHDOG=1$/);
  await empty.stop();
});

t.test('sd_notify that fails is said once, until it works again', async (t) => {
  let fail = true;
  const sent: string[] = [];
  const h = await harness(t, spec(instance('web')), {
    ready: false,
    notify: async (s) => {
      if (fail) throw new Error('ECONNREFUSED');
      sent.push(s);
      return true;
    },
  });
  await h.logged(/^<5>ready: /);
  t.equal(h.logs.filter((l) => l.startsWith('<4>sd_notify failed: ECONNREFUSED')).length, 1);
  fail = false;
  await h.sim.panic(await h.id('web'));
  await until(() => sent.some((s) => s.startsWith('STATUS=')), 30_000, 'a status once notify works');
  fail = true;
  await h.sim.panic(await h.id('web')).catch(() => undefined);
  t.equal(await h.stop(), 0);
  t.equal(h.logs.filter((l) => l.startsWith('<4>sd_notify failed')).length, 2);
});

t.test('the stop: onDaemonStop: stop halts gracefully, by force when the kernel does not answer; failures logged', async (t) => {
  const sim = new (await import('../../lib/system/simulated')).SimulatedSystem({ haltTimeoutMs: 5000 });
  await sim.mountMultikernel();
  const h = await harness(
    t,
    spec(instance('a', '    onDaemonStop: stop\n') + instance('b', '    onDaemonStop: stop\n') + instance('c', '    onDaemonStop: stop\n    autostart: false\n') + instance('d', '    onDaemonStop: stop\n')),
    { sim, stopTimeoutMs: 50 },
  );
  await sim.hang(await h.id('b'));
  await (await (await h.other()).instance('d')).delete({ force: true });
  await h.logged(/drift: d was deleted/);
  t.equal(await h.stop(), 0);
  t.ok(h.logs.includes('<6>stopping a (onDaemonStop: stop)'));
  t.ok(h.logs.includes('<6>a stopped'));
  t.ok(h.logs.includes('<4>b stopped by force after 50 ms'));
  t.notOk(h.logs.some((l) => l.includes('stopping c')), 'not running: nothing to stop');
  t.ok(h.logs.some((l) => /^<3>stopping d failed: /.test(l)));
  t.equal(await h.status('a'), 'loaded');
  t.equal(await h.status('b'), 'loaded');
});
