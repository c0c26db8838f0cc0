// mkctl plan and mkctl apply on a simulated host: text and --json, as real processes and in this
// process; drift after changes made by other mkctl processes; spec problems (exit 2, one line
// each on stderr) and kernel errors (exit 1).
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { placeholderImage } from '../../lib/simulated';
import { inProcess, type Run, simulatedHost, spawnMkctl } from './helpers';

type Runner = (args: string[], env: Record<string, string>) => Promise<Run>;

const SPEC = `version: 1
pool:
  cpus: 4
  memory: 2G
  devices: ["0000:00:04.0"]
instances:
  web:
    cpus: 2
    memory: 512M
    devices: ["0000:00:04.0"]
    kernel: vmlinux
    initrd: initrd.img
  db:
    cpus: 1
    memory: 256M
    kernel: vmlinux
    autostart: false
`;

function setup(t: Test, text = SPEC): { env: Record<string, string>; dir: string; file: string } {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  fs.writeFileSync(path.join(sim.dir, 'vmlinux'), placeholderImage());
  fs.writeFileSync(path.join(sim.dir, 'initrd.img'), Buffer.alloc(512));
  const file = path.join(sim.dir, 'host.yaml');
  fs.writeFileSync(file, text);
  return { ...sim, file };
}

const FRESH_PLAN = [
  '+ pool-init pool: no pool: 4 CPUs, 2 GiB, devices 0000:00:04.0',
  '+ create web: 2 CPUs, 512 MiB, devices 0000:00:04.0',
  /^> load web: kernel \/.*\/vmlinux, initrd \/.*\/initrd\.img$/,
  '> start web',
  '+ create db: 1 CPU, 256 MiB',
  /^> load db: kernel \/.*\/vmlinux$/,
];

function matchLines(t: Test, text: string, expected: (string | RegExp)[], what: string): void {
  const lines = text.split('\n');
  t.equal(lines.length, expected.length + 1, `${what}: ${text}`);
  expected.forEach((e, i) => (typeof e === 'string' ? t.equal(lines[i], e, what) : t.match(lines[i], e, what)));
}

async function journey(t: Test, run: Runner): Promise<void> {
  const { env, file } = setup(t);
  let r = await run(['plan', '-f', file], env);
  t.equal(r.code, 0, r.stderr);
  matchLines(t, r.stdout, [...FRESH_PLAN, `6 steps: mkctl apply -f ${file} makes them`], 'plan');
  r = await run(['apply', '--dry-run', '-f', file], env);
  matchLines(t, r.stdout, [...FRESH_PLAN, `6 steps: mkctl apply -f ${file} makes them`], 'apply --dry-run');
  r = await run(['apply', '-f', file], env);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  matchLines(
    t,
    r.stdout,
    [...FRESH_PLAN.map((l) => (typeof l === 'string' ? `${l}  done` : new RegExp(`${l.source.slice(0, -1)}  done$`))), `converged: the host matches ${file}`],
    'apply',
  );
  r = await run(['apply', '-f', file], env);
  t.equal(r.code, 0);
  t.equal(r.stdout, `converged: the host matches ${file}\n`, 'a second apply has nothing to do');
  r = await run(['plan', '-f', file], env);
  t.equal(r.stdout, `nothing to do: the host matches ${file}\n`);

  // changes behind the spec's back, by other mkctl processes
  for (const args of [['update', 'web', '--cpu-count', '1'], ['delete', 'db', '--force'], ['create', 'old', '--cpu-count', '1', '--memory', '128M']]) {
    const other = await spawnMkctl(args, env);
    t.equal(other.code, 0, other.stderr);
  }
  r = await run(['plan', '-f', file], env);
  matchLines(
    t,
    r.stdout,
    [
      '~ update web: CPUs 1 -> 2',
      '+ create db: 1 CPU, 256 MiB',
      /^> load db: kernel /,
      'drift (apply does not change these by itself):',
      '  old: instance "old" is not in the spec: left alone (apply --prune deletes it)',
      `3 steps: mkctl apply -f ${file} makes them`,
    ],
    'plan after changes',
  );
  r = await run(['plan', '-f', file, '--prune'], env);
  t.match(r.stdout, /\n- delete old \(--prune\)\n4 steps: /);
  r = await run(['apply', '-f', file, '--prune'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /- delete old \(--prune\) {2}done\nconverged: /);
  // running although autostart is false: drift, converged all the same
  t.equal((await spawnMkctl(['start', 'db'], env)).code, 0);
  r = await run(['plan', '-f', file], env);
  t.equal(r.stdout, `drift (apply does not change these by itself):\n  db: instance "db" runs although its autostart is false: apply does not stop it\nnothing to do: the host matches ${file}\n`);
}

t.test('plan and apply as real processes, in text', (t) => journey(t, spawnMkctl));
t.test('plan and apply in this process, in text', (t) => journey(t, inProcess));

t.test('--json: plan, apply with each step, and apply again', async (t) => {
  const { env, file } = setup(t);
  let r = await inProcess(['plan', '-f', file, '--json'], env);
  t.equal(r.code, 0);
  const p = r.json<{ version: number; steps: { action: string; subject: string; reason: string }[]; drift: unknown[]; unmanaged: unknown[]; converged: boolean }>();
  t.same(Object.keys(p), ['version', 'steps', 'drift', 'unmanaged', 'converged']);
  t.same(p.steps.map((s) => `${s.action} ${s.subject}`), ['pool-init pool', 'create web', 'load web', 'start web', 'create db', 'load db']);
  t.equal(p.converged, false);
  r = await spawnMkctl(['apply', '-f', file, '--json'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.json(), { version: 1, steps: p.steps, remaining: [], drift: [], unmanaged: [], converged: true });
  t.notMatch(r.stdout, /"error"/);
  r = await inProcess(['apply', '-f', file, '--json', '--dry-run'], env);
  t.same(r.json(), { version: 1, steps: [], drift: [], unmanaged: [], converged: true });
  // one step
  t.equal((await inProcess(['update', 'web', '--cpu-count', '1'], env)).code, 0);
  r = await inProcess(['plan', '-f', file], env);
  t.equal(r.stdout, `~ update web: CPUs 1 -> 2\n1 step: mkctl apply -f ${file} makes them\n`);
  r = await inProcess(['apply', '-f', file, '--json'], env);
  t.same(r.json(), { version: 1, steps: [{ action: 'update', subject: 'web', reason: 'CPUs 1 -> 2' }], remaining: [], drift: [], unmanaged: [], converged: true });
});

t.test('a kernel error: the step fails twice, apply exits 1 with what is left', async (t) => {
  const { env, dir, file } = setup(t);
  fs.writeFileSync(path.join(dir, 'vmlinux'), 'not a kernel');
  let r = await inProcess(['apply', '-f', file], env);
  t.equal(r.code, 1);
  const lines = r.stdout.split('\n');
  t.match(lines, [
    '+ pool-init pool: no pool: 4 CPUs, 2 GiB, devices 0000:00:04.0  done',
    '+ create web: 2 CPUs, 512 MiB, devices 0000:00:04.0  done',
    /^> load web: kernel .*  failed: .+/,
    '+ create db: 1 CPU, 256 MiB  done',
    /^> load db: kernel .*  failed: .+/,
    /^> load web: kernel .*  failed: .+/,
    /^> load db: kernel .*  failed: .+/,
    'not converged: 3 steps left:',
    /^ {2}> load web: /,
    '  > start web',
    /^ {2}> load db: /,
    '',
  ]);
  r = await inProcess(['apply', '-f', file, '--json'], env);
  t.equal(r.code, 1);
  const doc = r.json<{ steps: { action: string; error?: { code: string; message: string } }[]; remaining: unknown[]; converged: boolean }>();
  t.match(doc.steps, [{ action: 'load', error: { code: 'ERR_MK_IMAGE', message: String } }, { action: 'load', error: { code: 'ERR_MK_IMAGE' } }, { action: 'load' }, { action: 'load' }]);
  t.equal(doc.remaining.length, 3);
  t.equal(doc.converged, false);
  // one step left
  const one = path.join(dir, 'one.yaml');
  fs.writeFileSync(one, 'version: 1\ninstances:\n  db:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n    autostart: false\n');
  r = await inProcess(['apply', '-f', one, '--prune'], env);
  t.equal(r.code, 1);
  t.match(r.stdout, /\nnot converged: 1 step left:\n {2}> load db: kernel .*\n$/);
});

t.test('a spec that cannot be used: exit 2, each problem on its own line', async (t) => {
  const { env, dir, file } = setup(t, SPEC.replace('memory: 512M', 'memory: 512X').replace('autostart: false', 'autostart: nope'));
  let r = await inProcess(['plan', '-f', file], env);
  t.equal(r.code, 2);
  t.equal(r.stdout, '');
  t.match(r.stderr.split('\n'), [new RegExp(`^${file}:9:13: .*512X`), new RegExp(`^${file}:17:16: `), '']);
  r = await inProcess(['apply', '-f', file, '--json'], env);
  t.equal(r.code, 2);
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_INVALID_SPEC', exitCode: 2, issues: [{ pointer: '/instances/web/memory', at: { line: 9, column: 13 } }, { pointer: '/instances/db/autostart' }] } });

  // valid, but more than the host can give: refused before anything changes
  const big = path.join(dir, 'big.yaml');
  fs.writeFileSync(big, SPEC.replace('memory: 256M', 'memory: 2G'));
  r = await spawnMkctl(['apply', '-f', big], env);
  t.equal(r.code, 2);
  t.equal(r.stderr, `${big}:13:3: instance "db": memory: the instances up to this one want 2560 MiB; the pool has 2 GiB\n`);
  r = await inProcess(['list', '--json'], env);
  t.match(r.json(), { instances: [] }, 'nothing was created');

  // usage errors and a file that is not there
  r = await inProcess(['plan'], env);
  t.equal(r.code, 2);
  t.match(r.stderr, /^mkctl plan: missing -f SPEC: the spec file\n\(see mkctl plan --help\)\n$/);
  r = await inProcess(['apply', '-f', file, 'extra'], env);
  t.equal(r.code, 2);
  t.match(r.stderr, /unexpected argument "extra"/);
  r = await inProcess(['plan', '-f', path.join(dir, 'nope.yaml')], env);
  t.equal(r.code, 1);
  t.match(r.stderr, /^mkctl plan: ENOENT/);
});

t.test('--help: the step lines, exit codes and the --json shape', async (t) => {
  const { env } = setup(t);
  for (const cmd of ['plan', 'apply']) {
    const r = await inProcess([cmd, '--help'], env);
    t.equal(r.code, 0);
    t.match(r.stdout, new RegExp(`^usage: mkctl ${cmd} -f SPEC \\[--prune\\]`));
    t.match(r.stdout, /\n--json: \{"version": 1, "steps": \[STEP/);
    t.match(r.stdout, /FILE:LINE:COLUMN: message/);
  }
  t.match((await inProcess(['--help'], env)).stdout, /\n {2}plan +what apply would change.*\n {2}apply +make the host match a spec file/);
});
