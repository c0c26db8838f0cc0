// The daemon's supervision in this process, on a simulated host in memory, with the real spec
// loader and apply: restart policies after a panic, the backoff and the restart limit (fake clock),
// hangs, drift, reload, and the stop.
import t from 'tap';
import { FakeClock, harness, spec, until } from './fixture';

const restart = (policy: string, extra = '') => `    restart:\n      policy: ${policy}\n      backoff: { initial: 1s, max: 4s }\n      limit: { attempts: 3, window: 1m }\n${extra}`;
const instance = (name: string, body = '') => `  ${name}:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n${body}`;

t.test('start: applies the spec, READY=1 with the status, one log line per step', async (t) => {
  const h = await harness(t, spec(instance('web') + instance('db', '    autostart: false\n') + '  spare:\n    cpus: 1\n    memory: 128M\n'));
  t.match(h.notes.find((n) => n.startsWith('READY=1')), /^READY=1\nSTATUS=1\/1 instances running$/);
  t.match(h.logs, ['<6>starting: spec ' + h.specPath]);
  t.ok(h.logs.some((l) => /^<6>apply: create web \(/.test(l)), 'a line per step');
  t.ok(h.logs.includes('<6>apply: done, 9 steps') || h.logs.some((l) => /^<6>apply: done, \d+ steps$/.test(l)));
  t.equal(await h.status('web'), 'active');
  t.equal(await h.status('db'), 'loaded');
  t.equal(await h.status('spare'), 'ready');
  t.equal(h.daemon.status, '1/1 instances running');
  t.equal(h.daemon.spec?.instances.length, 3);
  t.equal(await h.stop(), 0);
  t.match(h.notes.at(-1), /^STOPPING=1/);
  t.equal(await h.status('web'), 'active', 'onDaemonStop: keep (the default) leaves it running');
  t.match(h.logs.slice(-2), ['<5>stopping', '<5>stopped']);
});

t.test('a panic under restart: restarted after the backoff, doubling, up to the limit; reset after a stable run', async (t) => {
  const clock = new FakeClock();
  const h = await harness(t, spec(instance('web', restart('restart'))), { clock });
  const id = await h.id('web');
  // the daemon saw it running (a panic before the watcher's next reading would look like no change)
  const up = (n: number) => until(() => h.logs.filter((l) => /^<7>web: loaded -> active$|^<5>web was started behind/.test(l)).length >= n, 30_000, `the daemon to see start ${n}`);
  const crash = async (n: number) => {
    await up(n - 1);
    const before = h.logs.length;
    await h.sim.panic(id);
    await until(() => h.logs.slice(before).some((l) => /restarting in|gave up/.test(l)), 30_000, `the daemon to see crash ${n}`);
    return h.logs.slice(before);
  };
  let lines = await crash(1);
  t.match(lines, ['<4>web crashed (its kernel halted by itself: active -> loaded)', '<5>web restarting in 1 s (attempt 1/3)']);
  await h.notified(/^STATUS=0\/1 instances running; web restarting in 1 s \(attempt 1\/3\)$/);
  t.equal(await h.status('web'), 'loaded', 'not before the backoff');
  clock.advance(999);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(await h.status('web'), 'loaded');
  clock.advance(1);
  await until(async () => (await h.status('web')) === 'active', 30_000, 'the restart');
  await h.logged(/^<5>restarting web \(attempt 1\/3, after it crashed\)$/);
  await h.notified(/^STATUS=1\/1 instances running$/);

  lines = await crash(2);
  t.match(lines.at(-1), '<5>web restarting in 2 s (attempt 2/3)', 'the backoff doubles');
  clock.advance(2000);
  await until(async () => (await h.status('web')) === 'active');
  lines = await crash(3);
  t.match(lines.at(-1), '<5>web restarting in 4 s (attempt 3/3)');
  clock.advance(4000);
  await until(async () => (await h.status('web')) === 'active');
  lines = await crash(4);
  t.match(lines.at(-1), '<3>web: gave up after 3 restarts within 60 s', 'the limit: at error priority');
  t.match(lines.at(-1), /left loaded until a reload \(SIGHUP\)$/);
  await h.notified(/^STATUS=0\/1 instances running; web gave up after 3 restarts within 60 s$/);
  clock.advance(60_000);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(await h.status('web'), 'loaded', 'given up: not restarted');

  // started by hand: supervised again, with the window moved on
  await (await (await h.other()).instance('web')).start();
  await h.logged(/^<5>web was started behind the daemon's back \(loaded -> active\)$/);
  await h.notified(/^STATUS=1\/1 instances running$/, h.notes.length - 1);
  lines = await crash(5);
  t.match(lines.at(-1), '<5>web restarting in 4 s (attempt 1/3)', 'the window moved on; the backoff is still at its max');
  clock.advance(4000);
  await until(async () => (await h.status('web')) === 'active');
  await until(() => [...clock.timers.values()].some((x) => x.at === clock.t + 8000), 30_000, 'the stability timer');
  clock.advance(8000);
  await h.logged(/^<7>web stayed up 8 s: its restart backoff starts again from 1 s$/);
  lines = await crash(6);
  t.match(lines.at(-1), '<5>web restarting in 1 s (attempt 2/3)', 'reset after 2 x max up');
  t.equal(await h.stop(), 0);
});

t.test('preserve and stop: a panicked instance is left loaded and the status says so', async (t) => {
  const h = await harness(t, spec(instance('keep', restart('preserve')) + instance('halt', restart('stop'))));
  await h.sim.panic(await h.id('keep'));
  await h.logged(/^<5>keep left loaded for a post-mortem \(restart policy preserve\)$/);
  await h.sim.panic(await h.id('halt'));
  await h.logged(/^<5>halt stays loaded \(restart policy stop\)$/);
  await h.notified(/^STATUS=0\/2 instances running; keep crashed, preserved; halt crashed, stopped \(policy stop\)$/);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await h.status('keep'), 'loaded');
  t.equal(await h.status('halt'), 'loaded');
  t.equal(await h.stop(), 0);
});
