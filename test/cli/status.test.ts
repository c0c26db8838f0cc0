// mkctl status and list on a simulated host, in this process and as real processes.
import t from 'tap';
import { inProcess, simulatedHost, spawnMkctl } from './helpers';

t.test('status and list: an empty host, then a pool and instances, text and --json', async (t) => {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  let r = await inProcess(['status'], sim.env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^host {6}simulated \(.*sim\) · console, kimage, vsock\npool {6}none \(mkctl pool init\)\ninstances none\n$/);
  r = await inProcess(['list', '--json'], sim.env);
  t.same(r.json(), { version: 1, instances: [] });
  r = await inProcess(['list'], sim.env);
  t.equal(r.stdout, 'no instances\n');

  // a pool and an instance, made through the library on the same state directory
  const { Host } = await import('../../lib');
  const { SimulatedSystem } = await import('../../lib/simulated');
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR });
  const host = await Host.open({ system });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const web = await host.createInstance({ name: 'web', cpus: 1, memory: '256M' });
  await system.dispose();

  r = await inProcess(['status', '--probe'], sim.env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^pool {6}2 CPUs \(1 free\) · 1 GiB \(768 MiB free\)$/m);
  t.match(r.stdout, /^NAME +ID +STATUS +CPUS +MEMORY +LIVENESS\nweb +1 +ready +\d+ +256 MiB +-$/m);
  r = await inProcess(['status', '--json'], sim.env);
  const doc = r.json<{ version: number; backend: { kind: string }; pool: { exists: boolean; memoryBytes: string }; instances: { name: string; id: number; memoryBytes: string }[]; attention: unknown[] }>();
  t.same([doc.version, doc.backend.kind, doc.pool.exists, doc.pool.memoryBytes], [1, 'simulated', true, String(1 << 30)]);
  t.match(doc.instances, [{ name: 'web', id: web.id, memoryBytes: String(256 << 20) }]);
  t.same(doc.attention, []);
  r = await inProcess(['list'], sim.env);
  t.match(r.stdout, /^NAME +ID +STATUS +CPUS +MEMORY\nweb +1 +ready +\d+ +256 MiB\n$/);

  // as real processes
  r = await spawnMkctl(['list', '--json'], sim.env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.json(), { version: 1, instances: [{ name: 'web', status: 'ready' }] });
  r = await spawnMkctl(['status', 'extra'], sim.env);
  t.equal(r.code, 2, 'usage error');
  t.match(r.stderr, /^mkctl status: unexpected argument "extra"\n\(see mkctl status --help\)\n$/);
  r = await spawnMkctl(['list', '--json', '--nope'], sim.env);
  t.equal(r.code, 2);
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_USAGE', exitCode: 2 } });
});

t.test('status: what needs attention', async (t) => {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const { Host } = await import('../../lib');
  const { SimulatedSystem, placeholderImage } = await import('../../lib/simulated');
  const { encodeOverlay } = await import('../../lib/model');
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR });
  t.teardown(() => system.dispose());
  const host = await Host.open({ system });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  await a.load(placeholderImage());
  await a.start();
  await system.hang(a.id);
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-remove', name: 'nope' }], { resources: 'by hand' }));
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-remove', name: 'nope' }]));
  await system.createExclusive('/var/run/kerf.lock');
  const r = await inProcess(['status', '--probe', '--json'], sim.env);
  t.equal(r.code, 0, r.stderr);
  const doc = r.json<{ attention: { kind: string; subject: string }[]; instances: { name: string; liveness?: string }[] }>();
  t.match(doc.instances, [{ name: 'a', liveness: 'hung' }]);
  t.same(doc.attention.map((x) => x.kind).sort(), ['instance-hung', 'transaction-failed', 'transaction-failed'], 'a fresh kerf lock is not stale');
  t.match(doc.attention.filter((x) => x.kind === 'transaction-failed').map((x) => (x as unknown as { message: string }).message), [/^transaction \d+ \(by hand\) failed/, /^transaction \d+ \(unknown\) failed/], 'a transaction without a tag: the kernel shows unknown');
  const { hostReport } = await import('../../lib/report');
  const report = await hostReport(host, { kerfLockAgeMs: 0 });
  t.match(report.attention.find((x) => x.kind === 'kerf-lock'), { subject: '/var/run/kerf.lock', message: /rm \/var\/run\/kerf\.lock/ });
  const text = await inProcess(['status'], { ...sim.env });
  t.match(text.stdout, /^attention\n {2}! transaction \d+ \(by hand\) failed/m);
});
