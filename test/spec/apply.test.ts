// apply(): runs the plan step by step on the simulated kernel, re-plans after a failure, gives
// up on a step that fails twice, converges, is idempotent, and sees changes made by another
// process on a shared state directory.
import * as path from 'node:path';
import t from 'tap';
import { SimulatedSystem } from '../../lib/simulated';
import { apply, APPLY_ATTEMPTS, APPLY_STOP_GRACE_MS, plan, SPEC_TAG_PARAM } from '../../lib/spec/engine';
import type { PlanStep } from '../../lib/spec/types';
import { wrap } from '../lifecycle/helpers';
import { entry, kernels, simHost, spec } from './helpers';

const MiB = 1n << 20n;
const short = (done: { step: PlanStep; error?: Error }[]): string[] => done.map((d) => `${d.step.action} ${d.step.subject}${d.error ? ` FAILED ${(d.error as { code?: string }).code ?? d.error.message}` : ''}`);

t.test('converges, reports each step, and a second apply has nothing to do', async (t) => {
  const k = kernels(t.testdir());
  const { host } = await simHost();
  const s = spec([entry('web', { kernel: k.kernel }), entry('db', { kernel: k.kernel, initrd: k.initrd })]);
  const seen: string[] = [];
  const r = await apply(host, s, { onStep: (step, error) => seen.push(`${step.action} ${step.subject}${error ? ' failed' : ''}`) });
  t.same(seen, ['pool-init pool', 'create web', 'load web', 'start web', 'create db', 'load db', 'start db']);
  t.same(short(r.done), seen);
  t.equal(r.converged, true);
  t.same(r.plan.steps.length, 7, 'the plan it started from');
  const again = await apply(host, s);
  t.same(again.done, []);
  t.equal(again.converged, true);
  t.equal(again.plan.converged, true);

  // a kernel added to an instance that has none: loaded, and started or not
  const grown = spec([entry('web', { kernel: k.kernel }), entry('db', { kernel: k.kernel, initrd: k.initrd }), entry('c'), entry('d')]);
  await apply(host, grown);
  const more = spec([...grown.instances.slice(0, 2), entry('c', { kernel: k.kernel }), entry('d', { kernel: k.kernel, autostart: false })]);
  t.same((await plan(host, more)).steps.map((x) => `${x.action} ${x.subject}`), ['load c', 'start c', 'load d']);
  t.equal((await apply(host, more)).converged, true);
  t.same(await Promise.all((await host.instances()).map((i) => i.status())), ['active', 'active', 'active', 'loaded']);
  // more memory for a running instance, in a step of 128 MiB: live
  const bigger = spec([entry('web', { kernel: k.kernel, memoryBytes: 384n * MiB }), ...more.instances.slice(1)]);
  t.same((await plan(host, bigger)).steps.map((x) => `${x.action} ${x.subject}: ${x.reason}`), ['update web: memory 256 MiB -> 384 MiB']);
  t.equal((await apply(host, bigger)).converged, true);
  t.match(await (await host.instance('web')).info(), { status: 'active', memoryBytes: 384n * MiB });
});

t.test('the constants', async (t) => {
  t.equal(APPLY_ATTEMPTS, 2);
  t.equal(APPLY_STOP_GRACE_MS, 10_000);
  t.equal(SPEC_TAG_PARAM, 'multikernel.spec');
});

t.test('a failed step: re-plan, its instance put last, retried once, then given up', async (t) => {
  const k = kernels(t.testdir());
  const base = new SimulatedSystem();
  const { host } = await simHost({ system: base });
  const s = spec([entry('a', { kernel: k.kernel }), entry('b', { kernel: k.kernel })]);
  // a's load fails once: b goes first, then a is retried and converges
  base.faults.add({ op: 'kexec_file_load', id: 1, times: 1, action: { errno: 'EIO' } });
  const errors: string[] = [];
  let r = await apply(host, s, { onStep: (step, error) => error && errors.push(`${step.subject}: ${(error as { code?: string }).code}`) });
  t.same(short(r.done), ['pool-init pool', 'create a', 'load a FAILED EIO', 'create b', 'load b', 'start b', 'load a', 'start a']);
  t.same(errors, ['a: EIO']);
  t.equal(r.converged, true);

  // twice: apply gives up on that instance, finishes the others, and says it has not converged
  base.faults.add({ op: 'kexec_file_load', id: 3, action: { errno: 'EIO' } });
  const s2 = spec([...s.instances, entry('c', { kernel: k.kernel }), entry('d', { kernel: k.kernel })]);
  r = await apply(host, s2);
  t.same(short(r.done), ['create c', 'load c FAILED EIO', 'create d', 'load d', 'start d', 'load c FAILED EIO']);
  t.equal(r.converged, false);
  t.same((await plan(host, s2)).steps.map((x) => `${x.action} ${x.subject}`), ['load c', 'start c']);
  base.faults.clear();

  // a pool step is not put last (everything needs the pool): retried at once
  const other = new SimulatedSystem();
  other.faults.add({ op: 'write', path: '/sys/fs/multikernel/device_tree', times: 1, action: { errno: 'ENOMEM' } });
  const fresh = await simHost({ system: other });
  r = await apply(fresh.host, spec([entry('a')]));
  t.same(short(r.done), ['pool-init pool FAILED ENOMEM', 'pool-init pool', 'create a']);
  t.equal(r.converged, true);
});

t.test('an error that is no Error, a step that changes nothing, an abort', async (t) => {
  const k = kernels(t.testdir());
  const base = new SimulatedSystem();
  let odd: 'string' | 'abort' | undefined;
  const controller = new AbortController();
  let failed = false;
  const system = wrap(base, {
    kexecFileLoad: async (args) => {
      if (odd === 'string') throw 'the kernel said no';
      if (odd === 'abort') {
        controller.abort(new Error('interrupted'));
        throw new Error('EINTR');
      }
      return base.kexecFileLoad(args);
    },
    readFile: async (p: string) => (failed && p.endsWith('/instances/a/status') ? Buffer.from('failed\n') : base.readFile(p)),
  });
  const { host } = await simHost({ system });
  odd = 'string';
  let r = await apply(host, spec([entry('a', { kernel: k.kernel })]));
  t.match(r.done[2], { step: { action: 'load' }, error: { message: 'the kernel said no' } });
  t.equal(r.converged, false);
  odd = 'abort';
  await t.rejects(apply(host, spec([entry('a', { kernel: k.kernel })]), { signal: controller.signal }), { message: 'EINTR' }, 'the step interrupted: its error');
  odd = undefined;
  await t.rejects(apply(host, spec([entry('a', { kernel: k.kernel })]), { signal: controller.signal }), { message: 'interrupted' }, 'aborted before: nothing runs');
  const later = new AbortController();
  await t.rejects(
    apply(host, spec([entry('a', { kernel: k.kernel }), entry('b')]), { signal: later.signal, onStep: () => later.abort(new Error('enough')) }),
    { message: 'enough' },
    'aborted between steps',
  );
  t.equal((await (await host.instance('a')).status()), 'loaded', 'the step that ran is done');
  await t.rejects(host.instance('b'), { code: 'ERR_MK_INSTANCE_NOT_FOUND' });

  // the kernel keeps saying "failed" after the forced halt: apply stops after a bounded number of rounds
  failed = true;
  r = await apply(host, spec([entry('a', { kernel: k.kernel }), entry('b')]), { signal: new AbortController().signal });
  t.equal(r.converged, false);
  t.equal(r.done.filter((d) => d.step.action === 'stop').length, 8 + 3 * 2, 'stopped again in each round, 8 + 3 x (steps of the first plan) rounds');
  t.same(short(r.done.slice(0, 3)), ['stop a', 'create b', 'stop a']);
});

t.test('changes behind the spec by another process are planned and undone', async (t) => {
  const dir = t.testdir();
  const k = kernels(dir);
  const stateDir = path.join(dir, 'sim');
  const mine = await simHost({ stateDir });
  const s = spec([entry('web', { kernel: k.kernel, cpus: { count: 2 }, memoryBytes: 512n * MiB }), entry('db', { kernel: k.kernel })]);
  t.equal((await apply(mine.host, s)).converged, true);

  // another process on the same host: an update of web, db deleted
  const theirs = await simHost({ stateDir });
  await (await theirs.host.instance('web')).update({ cpus: 1, memory: 640n * MiB });
  await (await theirs.host.instance('db')).delete({ force: true });
  const p = await plan(mine.host, s);
  t.same(p.steps.map((x) => `${x.action} ${x.subject}: ${x.reason}`), [
    'update web: CPUs 1 -> 2, memory 640 MiB -> 512 MiB',
    'create db: 1 CPU, 256 MiB',
    `load db: kernel ${k.kernel}`,
    'start db: autostart',
  ]);
  t.equal((await apply(mine.host, s)).converged, true);
  t.match(await (await theirs.host.instance('web')).info(), { cpus: [Number, Number], memoryBytes: 512n * MiB, status: 'active' });
  t.same((await plan(theirs.host, s)).converged, true, 'the other process sees the same host');
});
