// The daemon when things overlap (in this process, simulated host in memory): a restart that
// waits its turn behind a slow change and is cancelled by the stop meanwhile, a stop during a
// reload's apply, a restart whose start fails, and --prune with unmanaged instances and drift
// that apply itself reports.
import t from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { FakeClock, harness, spec, until } from './fixture';

const instance = (name: string, body = '') => `  ${name}:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n${body}`;
const policy = (p: string) => `    restart:\n      policy: ${p}\n      backoff: { initial: 1s, max: 2s }\n`;
const health = '    health: { interval: 50ms, timeout: 10ms, failures: 2 }\n';

async function memorySim(): Promise<SimulatedSystem> {
  const sim = new SimulatedSystem();
  await sim.mountMultikernel();
  return sim;
}

t.test('a restart waiting behind a slow forced halt is cancelled by the stop', async (t) => {
  const clock = new FakeClock();
  const sim = await memorySim();
  const h = await harness(t, spec(instance('web', policy('restart')) + instance('x', policy('stop') + health)), { sim, clock });
  await h.sim.panic(await h.id('web'));
  await h.logged(/^<5>web restarting in 1 s/);
  await new Promise((r) => setTimeout(r, 150)); // x answered its probes once
  sim.faults.add({ op: 'reboot', id: await h.id('x'), times: 1, action: { stallMs: 400 } });
  await sim.hang(await h.id('x'));
  await h.logged(/^<4>x hangs/);
  clock.advance(1000); // web's backoff ran out: its restart waits behind x's halt
  t.equal(await h.stop(), 0);
  t.notOk(h.logs.some((l) => l.startsWith('<5>restarting web')), 'not restarted once stopping');
  t.equal(await h.status('web'), 'loaded');
  t.ok(h.logs.includes('<5>x force-halted'));
});

t.test('a stop during a reload\'s apply: no READY=1 after STOPPING=1', async (t) => {
  const sim = await memorySim();
  const h = await harness(t, spec(instance('web')), { sim });
  h.writeSpec(spec(instance('web') + instance('db')));
  sim.faults.add({ op: 'kexec_file_load', times: 1, action: { stallMs: 300 } });
  const from = h.notes.length;
  h.daemon.reload();
  await h.notified(/^STATUS=applying: 3 steps$/, from);
  t.equal(await h.stop(), 0);
  const after = h.notes.slice(from);
  t.match(after.at(-1), /^STOPPING=1/);
  t.notOk(after.some((n) => n.startsWith('READY=1')));
});

t.test('a restart whose start fails is tried again after the next backoff', async (t) => {
  const clock = new FakeClock();
  const sim = await memorySim();
  const h = await harness(t, spec(instance('web', policy('restart'))), { sim, clock });
  const id = await h.id('web');
  await sim.panic(id);
  await h.logged(/^<5>web restarting in 1 s \(attempt 1\/5\)$/);
  sim.faults.add({ op: 'reboot', id, times: 1, action: { errno: 'EIO' } });
  clock.advance(1000);
  await h.logged(/^<3>restart of web failed: /);
  await h.logged(/^<5>web restarting in 2 s \(attempt 2\/5\)$/);
  clock.advance(2000);
  await h.logged(/^<5>restarting web \(attempt 2\/5, after a failed start\)$/);
  await until(async () => (await h.status('web')) === 'active');
  t.equal(await h.stop(), 0);
});

t.test('unmanaged instances and drift apply reports; --prune deletes what the spec does not name', async (t) => {
  const sim = await memorySim();
  // the host as someone left it: a pool, an instance the spec does not name, one that runs though its autostart is false
  let h = await harness(t, spec(instance('db', '    autostart: false\n')), { sim });
  await h.stop();
  const other = await h.other();
  await (await other.instance('db')).start();
  await other.createInstance({ name: 'stray', cpus: 1, memory: '128M' });
  h = await harness(t, spec(instance('db', '    autostart: false\n')), { sim });
  t.ok(h.logs.includes('<5>instance stray is not in the spec: left alone (--prune deletes it)'));
  t.ok(h.logs.some((l) => /^<4>drift: db: .*autostart is false.*\(expected .*, found active\)$/.test(l)));
  await h.stop();
  t.ok(await other.instance('stray'));

  h = await harness(t, spec(instance('db', '    autostart: false\n')), { sim, prune: true });
  t.ok(h.logs.includes(`<6>starting: spec ${h.specPath}, prune`));
  t.ok(h.logs.some((l) => /^<6>apply: delete stray /.test(l)));
  await t.rejects(other.instance('stray'), { code: 'ERR_MK_INSTANCE_NOT_FOUND' });
  await h.stop();
});
