// plan(): what apply would change, read from the simulated kernel: the steps and their order,
// image identity through the command-line tag, drift, unmanaged instances, and the checks of
// the spec against the host before anything is touched.
import * as fs from 'node:fs';
import t from 'tap';
import { SimulatedSystem } from '../../lib/simulated';
import { apply, plan, splitTag, taggedCmdline, imageTag } from '../../lib/spec/engine';
import { computePlan } from '../../lib/spec/plan';
import type { HostSpec, PlanStep } from '../../lib/spec/types';
import { wrap } from '../lifecycle/helpers';
import { entry, kernels, simHost, spec } from './helpers';

const MiB = 1n << 20n;
const lines = (steps: PlanStep[]): string[] => steps.map((s) => `${s.action} ${s.subject}: ${s.reason}`);

async function converge(host: Parameters<typeof apply>[0], s: HostSpec, prune = false): Promise<void> {
  const r = await apply(host, s, { prune });
  if (!r.converged) throw new Error(`not converged: ${JSON.stringify(r.done.map((d) => [d.step, d.error?.message]))}`);
}

t.test('the tag: a hash of kernel, initrd and command line, at the end of the command line', async (t) => {
  const k = kernels(t.testdir());
  const a = await imageTag(k.kernel, undefined, 'console=mktty0');
  t.match(a, /^[0-9a-f]{16}$/);
  t.not(await imageTag(k.kernel, k.initrd, 'console=mktty0'), a, 'an initrd changes it');
  t.not(await imageTag(k.kernel, undefined, 'console=mktty0 quiet'), a, 'the command line changes it');
  t.not(await imageTag(k.kernel2, undefined, 'console=mktty0'), a, 'the kernel bytes change it');
  t.equal(await imageTag(k.kernel, undefined, 'console=mktty0'), a, 'the same files and text: the same tag');
  t.equal(taggedCmdline('quiet', a), `quiet multikernel.spec=${a}`);
  t.equal(taggedCmdline('', a), `multikernel.spec=${a}`);
  t.same(splitTag(`quiet multikernel.spec=${a}`), { text: 'quiet', tag: a });
  t.same(splitTag(`multikernel.spec=${a}`), { text: '', tag: a });
  t.same(splitTag(`multikernel.spec=${a} quiet`), { text: `multikernel.spec=${a} quiet` }, 'only at the end');
  t.same(splitTag('quiet'), { text: 'quiet' });
});

t.test('a fresh host: the pool, then each instance created, loaded and started, in order', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  const s = spec(
    [
      entry('web', { kernel: k.kernel, initrd: k.initrd, cpus: { count: 2 }, memoryBytes: 512n * MiB, devices: ['0000:00:04.0'], id: 5, numaNode: 0 }),
      entry('db', { kernel: k.kernel, cpus: { physical: [14] }, autostart: false }),
      entry('spare', { cpus: { count: 1 } }),
    ],
    { cpus: { physical: [8, 10, 12, 14] }, memoryBytes: 2n << 30n, devices: ['0000:00:04.0'] },
  );
  const p = await plan(host, s);
  t.same(lines(p.steps), [
    'pool-init pool: no pool: CPUs 8,10,12,14, 2 GiB, devices 0000:00:04.0',
    'create web: 2 CPUs, 512 MiB, devices 0000:00:04.0, id 5',
    `load web: kernel ${k.kernel}, initrd ${k.initrd}`,
    'start web: autostart',
    'create db: CPU 14, 256 MiB',
    `load db: kernel ${k.kernel}`,
    'create spare: 1 CPU, 256 MiB',
  ]);
  t.same(p.drift, []);
  t.same(p.unmanaged, []);
  t.equal(p.converged, false);
  await converge(host, s);
  const web = await (await host.instance('web')).info();
  t.equal(web.id, 5);
  t.equal(web.status, 'active');
  t.match(web.image, { cmdline: `console=mktty0 multikernel.spec=${await imageTag(k.kernel, k.initrd, 'console=mktty0')}` });
  t.same(web.devices.map((d) => (d.type === 'pci' ? d.pciId : '')), ['0000:00:04.0']);
  const db = await (await host.instance('db')).info();
  t.same([db.status, db.cpus], ['loaded', [14]], 'autostart false: loaded, not started');
  t.equal((await (await host.instance('spare')).status()), 'ready', 'no kernel: created only');
  t.same(await plan(host, s), { steps: [], drift: [], unmanaged: [], converged: true });
});

t.test('the loaded image: command line, changed files, not made by apply, no /proc/kimage', async (t) => {
  const dir = t.testdir();
  const k = kernels(dir);
  const { host } = await simHost();
  const s = spec([entry('web', { kernel: k.kernel }), entry('db', { kernel: k.kernel, cmdline: '', autostart: false })]);
  await converge(host, s);

  // another command line
  let p = await plan(host, spec([entry('web', { kernel: k.kernel, cmdline: 'console=mktty0 quiet' }), s.instances[1]!]));
  t.same(lines(p.steps), ['reload web: command line "console=mktty0" -> "console=mktty0 quiet"']);
  // the same text, other bytes in the file
  fs.copyFileSync(k.kernel2, k.kernel);
  p = await plan(host, s);
  t.match(lines(p.steps), [/^reload web: the kernel or initrd file changed since it was loaded \(tag [0-9a-f]{16} -> [0-9a-f]{16}\)$/, /^reload db: the kernel or initrd/]);
  await converge(host, s);
  t.equal((await (await host.instance('db')).status()), 'loaded', 'autostart false: reloaded, not started');
  t.equal((await (await host.instance('web')).status()), 'active', 'started again');

  // loaded by hand (or by kerf): no tag; adopting it reloads it once
  const web = await host.instance('web');
  await web.stop();
  await web.unload();
  await web.load(k.kernel, { cmdline: 'console=mktty0' });
  p = await plan(host, s);
  t.same(lines(p.steps), ['reload web: the loaded image was not made by apply (no tag)']);
  t.match(p.drift, [{ subject: 'web', actual: 'console=mktty0', message: /was not loaded by apply \(no multikernel\.spec tag\): apply reloads it once/ }]);
  await converge(host, s);

  // a kernel without /proc/kimage: identity unknown, nothing reloaded
  const base = new SimulatedSystem();
  const noKimage = wrap(base, {
    stat: (p: string) => (p === '/proc/kimage' ? Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' })) : base.stat(p)),
    readFile: (p: string) => (p === '/proc/kimage' ? Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' })) : base.readFile(p)),
  });
  const old = await simHost({ system: noKimage });
  t.equal(old.host.features.kimage, false);
  await converge(old.host, spec([entry('web', { kernel: k.kernel })]));
  p = await plan(old.host, spec([entry('web', { kernel: k.kernel2 })]));
  t.same(p.steps, []);
  t.match(p.drift, [{ subject: 'web', actual: 'unknown', message: /this kernel has no \/proc\/kimage, so whether the image loaded in "web" is the spec's cannot be told/ }]);
  t.equal(p.converged, true, 'converged: apply can do nothing about it');

  // /proc/kimage without a row for it
  const rowless = wrap(base, { readFile: (p: string) => (p === '/proc/kimage' ? Promise.resolve(Buffer.from('header\n')) : base.readFile(p)) });
  const other = await simHost({ system: rowless });
  p = await plan(other.host, spec([entry('web', { kernel: k.kernel })]));
  t.match(p.drift, [{ subject: 'web', message: /\/proc\/kimage has no row for it/ }]);
});

t.test('resources changed behind the spec: updates, and what a live update cannot do', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  const s = spec(
    [entry('web', { kernel: k.kernel, cpus: { count: 2 }, memoryBytes: 512n * MiB }), entry('db', { cpus: { physical: [8] }, devices: ['0000:00:04.0'] })],
    { cpus: { count: 4 }, memoryBytes: 2n << 30n, devices: ['0000:00:04.0', '0000:00:05.0'] },
  );
  await converge(host, s);
  const web = await host.instance('web');
  const db = await host.instance('db');
  await web.stop();
  await web.update({ cpus: 1, memory: 576n * MiB });
  await web.start();
  await db.update({ cpus: { physical: [10] }, devices: ['0000:00:05.0'], memory: 384n * MiB });
  let p = await plan(host, s);
  t.same(lines(p.steps), ['update web: CPUs 1 -> 2', 'update db: CPUs 10 -> 8, memory 384 MiB -> 256 MiB, devices [0000:00:05.0] -> [0000:00:04.0]']);
  t.match(p.drift, [{ subject: 'web', expected: '512 MiB', actual: '576 MiB', message: /runs, and a running instance's memory changes in steps of 128 MiB only/ }]);
  await apply(host, s);
  t.match(await (await host.instance('db')).info(), { cpus: [8], memoryBytes: 256n * MiB });
  // stopped, the 64 MiB it was given is one region: it can go back
  await web.stop();
  await converge(host, s);
  t.match(await web.info(), { status: 'active', memoryBytes: 512n * MiB, cpus: [Number, Number] });

  // less than one whole region
  p = await plan(host, spec([entry('web', { kernel: k.kernel, cpus: { count: 2 }, memoryBytes: 256n * MiB }), s.instances[1]!], s.pool));
  t.same(p.steps, [], 'a running instance: 256 MiB is a step of 128 MiB, but its only region is its first');
  t.match(p.drift, [{ subject: 'web', message: /can give back whole memory regions only, never its first \(regions: 512 MiB\)/ }]);
});

t.test('the pool: grown before creates, shrunk after deletes', async (t) => {
  const { host } = await simHost();
  await converge(host, spec([entry('a')], { cpus: { count: 3 }, memoryBytes: 1n << 30n, devices: ['0000:00:04.0'] }));
  let p = await plan(host, spec([entry('a'), entry('b')], { cpus: { count: 4 }, memoryBytes: 1536n * MiB, devices: ['0000:00:04.0', '0000:00:05.0'] }));
  t.same(lines(p.steps), ['pool-grow pool: CPUs 3 -> 4, memory 1 GiB -> 1536 MiB, devices + 0000:00:05.0', 'create b: 1 CPU, 256 MiB']);
  p = await plan(host, spec([], { cpus: { count: 2 }, memoryBytes: 512n * MiB, devices: [] }), { prune: true });
  t.same(lines(p.steps), ['delete a: not in the spec (--prune)', 'pool-shrink pool: CPUs 3 -> 2, memory 1 GiB -> 512 MiB, devices - 0000:00:04.0']);
  const pool = await host.pool.snapshot();
  const ids = pool.cpus.map((c) => c.physicalId);
  p = await plan(host, spec([entry('a')], { cpus: { physical: [...ids.slice(1), 6] }, memoryBytes: 1n << 30n, devices: ['0000:00:04.0'] }));
  t.same(lines(p.steps), [`pool-grow pool: CPUs + 6`, `pool-shrink pool: CPUs - ${ids[0]}`]);
  // a pool grown in one chunk shrinks by that chunk
  await converge(host, spec([entry('a')], { cpus: { count: 3 }, memoryBytes: 1536n * MiB, devices: [] }));
  await converge(host, spec([entry('a')], { cpus: { count: 3 }, memoryBytes: 1n << 30n, devices: [] }));
  t.equal((await host.pool.snapshot()).memoryBytes, 1n << 30n);
  // the spec does not manage the pool: nothing about it
  p = await plan(host, spec([entry('a')], null));
  t.same(p.steps, []);
});

t.test('instances the spec does not name: unmanaged, or deleted with prune', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  await converge(host, spec([entry('run', { kernel: k.kernel }), entry('held', { kernel: k.kernel, autostart: false }), entry('bare'), entry('keep')]));
  const s = spec([entry('keep')]);
  let p = await plan(host, s);
  t.same(p.steps, []);
  t.same(p.unmanaged, ['run', 'held', 'bare']);
  t.match(p.drift, [{ subject: 'run', actual: 'active', message: /not in the spec: left alone \(apply --prune deletes it\)/ }, { subject: 'held' }, { subject: 'bare' }]);
  t.equal(p.converged, true);
  p = await plan(host, s, { prune: true });
  t.same(lines(p.steps), [
    'stop run: not in the spec (--prune)',
    'unload run: not in the spec (--prune)',
    'unload held: not in the spec (--prune)',
    'delete run: not in the spec (--prune)',
    'delete held: not in the spec (--prune)',
    'delete bare: not in the spec (--prune)',
  ]);
  t.same(p.unmanaged, []);
  await converge(host, s, true);
  t.same((await host.instances()).map((i) => i.name), ['keep']);
});

t.test('no kernel in the spec but one loaded; autostart false but running; an id that differs', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  await converge(host, spec([entry('a', { kernel: k.kernel }), entry('b', { kernel: k.kernel, autostart: false }), entry('c', { kernel: k.kernel, autostart: false })]));
  await (await host.instance('c')).start();
  const p = await plan(host, spec([entry('a'), entry('b'), entry('c', { kernel: k.kernel, autostart: false, id: 9 })]));
  t.same(lines(p.steps), ['unload a: the spec names no kernel: it runs, so it is stopped first', 'unload b: the spec names no kernel']);
  t.match(p.drift, [
    { subject: 'c', expected: 'id 9', actual: 'id 3', message: /has id 3, not 9: an id cannot change/ },
    { subject: 'c', expected: 'not started by apply (autostart: false)', actual: 'active', message: /runs although its autostart is false: apply does not stop it/ },
  ]);
  await apply(host, spec([entry('a'), entry('b'), entry('c', { kernel: k.kernel, autostart: false })]));
  t.same(await Promise.all((await host.instances()).map((i) => i.status())), ['ready', 'ready', 'active']);
  // loaded, not running, autostart: a start
  await (await host.instance('c')).stop();
  t.same(lines((await plan(host, spec([entry('a'), entry('b'), entry('c', { kernel: k.kernel })]))).steps), ['start c: autostart: it is loaded, not running']);
});

t.test('the failed state, failed transactions and kerf\'s lock left behind', async (t) => {
  const k = kernels(t.testdir());
  const base = new SimulatedSystem();
  let failed = false;
  const system = wrap(base, {
    readFile: async (p: string) => (failed && p === '/sys/fs/multikernel/instances/web/status' ? Buffer.from('failed\n') : base.readFile(p)),
    stat: async (p: string) => {
      const st = await base.stat(p);
      return p === '/var/run/kerf.lock' ? { ...st, mtimeMs: Date.now() - 120_000 } : st;
    },
    reboot: async (cmd: number, id: number) => {
      failed = false;
      return base.reboot(cmd, id);
    },
  });
  const { host } = await simHost({ system });
  const s = spec([entry('web', { kernel: k.kernel }), entry('db')]);
  await converge(host, s);
  failed = true;
  let p = await plan(host, s);
  t.same(lines(p.steps), ["stop web: it is in the kernel's failed state (its CPUs could not be settled after a halt): halted by force"]);
  const r = await apply(host, s);
  t.same(r.done.map((d) => d.step.action), ['stop', 'start'], 'halted by force, then started again');
  t.equal(r.converged, true);
  // an unmanaged one in the failed state, with prune
  failed = true;
  p = await plan(host, spec([entry('db')]), { prune: true });
  t.same(p.steps.map((x) => `${x.action} ${x.subject}`), ['stop web', 'unload web', 'delete web']);
  await converge(host, spec([entry('db')]), true);

  // a transaction whose rollback failed too stays "failed"
  base.faults.add({ op: 'overlay.apply', times: 1, action: { errno: 'EIO' } });
  base.faults.add({ op: 'overlay.rollback', times: 1, action: { errno: 'EBUSY' } });
  await t.rejects(host.createInstance({ name: 'x', cpus: 1, memory: '128M' }), { code: 'ERR_MK_TX_FAILED' });
  await base.createExclusive('/var/run/kerf.lock');
  p = await plan(host, spec([entry('db')]));
  t.same(p.steps, []);
  t.match(p.drift, [
    { subject: /^tx_\d+$/, expected: 'no failed transaction', actual: 'failed', message: /^transaction \d+ \(resources "multikernel-js pid=\d+ tx=[0-9a-f]+: create x"\) is left "failed": its writer stopped before rolling it back/ },
    { subject: '/var/run/kerf.lock', actual: 'present', message: /kerf's lock/ },
  ]);
  t.equal(p.converged, true, 'drift only');
});

t.test('the spec against the host: refused whole, before anything changes', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  const check = async (s: HostSpec, messages: RegExp[], options: { prune?: boolean } = {}) => {
    const err = await plan(host, s, options).then(
      () => undefined,
      (e: unknown) => e as { code: string; message: string; details: { issues: { pointer: string; message: string }[] } },
    );
    t.equal(err?.code, 'ERR_MK_INVALID_SPEC');
    t.match(err?.details.issues.map((i) => i.message), messages);
    return err!;
  };
  const none = await check(spec([entry('a')], null), [/^the spec does not manage the pool and the host has none/]);
  t.match(none.details.issues, [{ pointer: '/pool' }]);
  t.equal((await host.pool.snapshot()).exists, false, 'nothing changed');
  const e = await check(
    spec(
      [
        entry('a', { cpus: { physical: [8, 3, 12] }, memoryBytes: 1n << 30n, devices: ['0000:00:09.0'] }),
        entry('b', { cpus: { physical: [8, 10] }, memoryBytes: 1n << 30n, devices: ['0000:00:04.0', '0000:00:04.0'] }),
      ],
      { cpus: { physical: [0, 8, 10, 99] }, memoryBytes: 1n << 30n, devices: ['0000:00:04.0'] },
    ),
    [
      /^pool: cpus: the host has no CPU with physical id 99 \(it has 0,2,4,6,8,10,12,14\)$/,
      /^pool: cpus: physical CPU 0 is the host's boot CPU, which never joins a pool$/,
      /^instance "a": cpus: physical CPU 3,12 is not in the pool \(pool CPUs: 0,8,10,99\)$/,
      /^instance "a": devices: 0000:00:09\.0 is not in the pool \(pool devices: 0000:00:04\.0\)$/,
      /^instance "b": cpus: physical CPU 8 is given to instance "a" too$/,
      /^instance "b": cpus: the instances up to this one want 5 CPUs; the pool has 4$/,
      /^instance "b": memory: the instances up to this one want 2 GiB; the pool has 1 GiB$/,
      /^instance "b": devices: 0000:00:04\.0 is given to instance "b" too$/,
    ],
  );
  t.match(e.details.issues[2], { pointer: '/instances/a/cpus', at: { file: 'host.yaml', line: 3 } });
  t.match(e.message, /^host\.yaml: the host cannot give what the spec asks:\n {2}pool: cpus/);
  await check(spec([entry('a', { devices: ['0000:00:04.0'] })], { cpus: { count: 2 }, memoryBytes: 1n << 30n, devices: [] }), [/pool devices: none/]);

  // against the live pool, when the spec does not manage it
  await converge(host, spec([entry('a', { id: 4 })], { cpus: { count: 2 }, memoryBytes: 1n << 30n, devices: [] }));
  const ids = (await host.pool.snapshot()).cpus.map((c) => c.physicalId);
  await check(spec([entry('b', { cpus: { physical: [2] }, id: 4 }), entry('c', { cpus: { count: 2 } })], null), [
    /^instance "b": id: id 4 is taken by instance "a"$/,
    new RegExp(`^instance "b": cpus: physical CPU 2 is not in the pool \\(pool CPUs: ${ids.slice().sort((x, y) => x - y).join(',')}\\)$`),
    /^instance "c": cpus: the instances up to this one want 3 CPUs; the pool has 2$/,
  ]);
  await check(spec([entry('a', { id: 4 }), entry('b', { id: 4 })], null), [/^instance "b": id: id 4 is taken by instance "a"$/], { prune: true });
  // an id held by an instance prune deletes is given up first
  t.same(lines((await plan(host, spec([entry('b', { id: 4 })], null), { prune: true })).steps), ['create b: 1 CPU, 256 MiB, id 4', 'delete a: not in the spec (--prune)']);

  // a kernel file that cannot be read
  const missing = await check(spec([entry('a', { id: 4, kernel: `${k.kernel}.gone` })], null), [/^instance "a": kernel: cannot read .*vmlinux\.gone: ENOENT/]);
  t.match(missing.details.issues, [{ pointer: '/instances/a/kernel' }]);
  await check(spec([entry('z', { kernel: k.kernel, initrd: `${k.initrd}.gone` })], null), [/cannot read .*vmlinux or .*initrd\.img\.gone: ENOENT/]);
});

t.test('a step runs against what the kernel shows when it runs', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  await converge(host, spec([entry('web', { kernel: k.kernel, autostart: false })]));
  const computed = await computePlan(host, spec([entry('web', { kernel: k.kernel2, autostart: false })]));
  t.same(computed.plan.steps.map((s) => s.action), ['reload']);
  // unloaded meanwhile: the reload loads only
  await (await host.instance('web')).unload();
  await computed.planned[0]!.run();
  t.same(await plan(host, spec([entry('web', { kernel: k.kernel2, autostart: false })])), { steps: [], drift: [], unmanaged: [], converged: true });
  await t.rejects(plan(host, spec([]), { signal: AbortSignal.abort(new Error('stop')) }), { message: 'stop' });
});

t.test('an instance deleted while the host is read: read again', async (t) => {
  const base = new SimulatedSystem();
  let vanish = 0;
  const system = wrap(base, {
    readFile: async (p: string) => {
      // instances() lists b by its id; info() then reads its status: gone by then
      if (p === '/sys/fs/multikernel/instances/b/status' && vanish > 0) {
        vanish -= 1;
        throw Object.assign(new Error(`ENOENT: no such file or directory, open '${p}'`), { code: 'ENOENT', errno: -2, syscall: 'open', path: p });
      }
      return base.readFile(p);
    },
  });
  const { host } = await simHost({ system });
  await converge(host, spec([entry('a'), entry('b')]));
  vanish = 2;
  t.same((await plan(host, spec([entry('a'), entry('b')]))).steps, [], 'read again, twice');
  vanish = 3;
  await t.rejects(plan(host, spec([entry('a'), entry('b')])), { code: 'ERR_MK_INSTANCE_NOT_FOUND' }, 'not a third time');
  base.faults.add({ op: 'read', path: '/proc/iomem', times: 1, action: { errno: 'EIO' } });
  base.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', times: 1, action: { errno: 'EIO' } });
  await t.rejects(plan(host, spec([entry('a'), entry('b')])), { code: 'EIO' }, 'other errors at once');
});
