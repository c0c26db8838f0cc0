// mkctl pool init|grow|shrink|teardown and the instance lifecycle (create, load, start, stop,
// restart, update, unload, delete) on a simulated host: one journey as real processes and in this
// process, in text and --json; usage errors (2), kernel errors (1) and Ctrl-C (130).
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { inProcess, type Run, simulatedHost, spawnMkctl } from './helpers';

type Runner = (args: string[], env: Record<string, string>) => Promise<Run>;

interface Step {
  args: string[];
  text: RegExp;
  json: Record<string, unknown>;
}

const CPUS = '\\d+(?:[-,]\\d+)*';
const NO_POOL = /^pool torn down: no pool \(every CPU, all memory and every device are the host's\)\n$/;

/** The whole life of one instance, with the pool around it; each step's text line and --json document. */
const JOURNEY: Step[] = [
  {
    args: ['pool', 'init', '--cpu-count', '2', '--memory', '1G'],
    text: new RegExp(`^pool created: 2 CPUs \\(${CPUS}, 2 free\\) · 1 GiB \\(1 GiB free\\)\\n$`),
    json: { action: 'init', pool: { exists: true, memoryBytes: String(1 << 30), freeCpus: [Number, Number], devices: [] } },
  },
  {
    args: ['pool', 'grow', '--cpu-count', '1', '--memory', '512M', '--devices', '0000:00:04.0'],
    text: new RegExp(`^pool grown: 3 CPUs \\(${CPUS}, 3 free\\) · 1536 MiB \\(1536 MiB free\\) · 1 device free\\n$`),
    json: { action: 'grow', pool: { memoryBytes: String(1536 << 20), devices: [{ pciId: '0000:00:04.0' }] } },
  },
  {
    args: ['create', 'web', '--cpu-count', '2', '--memory', '256M', '--devices', '0000:00:04.0'],
    text: new RegExp(`^created web \\(id 1\\): 2 CPUs \\(${CPUS}\\), 256 MiB, 1 device\\n$`),
    json: { action: 'create', instance: { name: 'web', id: 1, status: 'ready', memoryBytes: String(256 << 20), devices: [{ pciId: '0000:00:04.0' }] } },
  },
  {
    args: ['load', 'web', 'placeholder'],
    text: /^loaded placeholder into web \(id 1\)\n$/,
    json: { action: 'load', kernel: 'placeholder', instance: { name: 'web', status: 'loaded', image: { id: 1, cmdline: 'console=mktty0' } } },
  },
  { args: ['start', 'web'], text: /^started web \(id 1\)\n$/, json: { action: 'start', instance: { name: 'web', status: 'active' } } },
  {
    args: ['update', 'web', '--cpu-count', '1', '--memory', '384M'],
    text: new RegExp(`^updated web \\(id 1\\): 1 CPU \\(\\d+\\), 384 MiB, 1 device\\n$`),
    json: { action: 'update', instance: { status: 'active', cpus: [Number], memoryBytes: String(384 << 20) } },
  },
  { args: ['stop', 'web'], text: /^stopped web \(id 1\)\n$/, json: { action: 'stop', how: 'graceful', instance: { status: 'loaded' } } },
  { args: ['restart', 'web'], text: /^restarted web \(id 1\)\n$/, json: { action: 'restart', how: null, instance: { status: 'active' } } },
  {
    args: ['restart', 'web', '--force', '--timeout', '0'],
    text: /^restarted web \(id 1\) \(stopped by force\)\n$/,
    json: { action: 'restart', how: 'forced', instance: { status: 'active' } },
  },
  { args: ['stop', 'web', '--force', '--timeout', '5'], text: /^stopped web \(id 1\)\n$/, json: { action: 'stop', how: 'graceful' } },
  { args: ['unload', 'web'], text: /^unloaded web \(id 1\)\n$/, json: { action: 'unload', instance: { status: 'ready' } } },
  { args: ['delete', 'web'], text: /^deleted web \(id 1\)\n$/, json: { action: 'delete', instance: { name: 'web', id: 1 } } },
  {
    args: ['pool', 'shrink', '--cpu-count', '1', '--memory', '512M', '--devices', '0000:00:04.0'],
    text: new RegExp(`^pool shrunk: 2 CPUs \\(${CPUS}, 2 free\\) · 1 GiB \\(1 GiB free\\)\\n$`),
    json: { action: 'shrink', pool: { memoryBytes: String(1 << 30), devices: [] } },
  },
  { args: ['pool', 'teardown'], text: NO_POOL, json: { action: 'teardown', pool: { exists: false, cpus: [], memoryBytes: '0' } } },
];

async function journey(t: Test, run: Runner, json: boolean): Promise<void> {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  for (const step of JOURNEY) {
    const r = await run([...step.args, ...(json ? ['--json'] : [])], sim.env);
    const what = `mkctl ${step.args.join(' ')}${json ? ' --json' : ''}`;
    t.equal(r.code, 0, `${what}: ${r.stderr}`);
    t.equal(r.stderr, '', `${what}: nothing on stderr`);
    if (json) t.match(r.json(), { version: 1, ...step.json }, what);
    else t.match(r.stdout, step.text, what);
  }
  const left = await run(['list', '--json'], sim.env);
  t.same(left.json(), { version: 1, instances: [] });
}

t.test('the journey as real processes, in text', (t) => journey(t, spawnMkctl, false));
t.test('the journey as real processes, --json', (t) => journey(t, spawnMkctl, true));
t.test('the journey in this process, in text', (t) => journey(t, inProcess, false));
t.test('the journey in this process, --json', (t) => journey(t, inProcess, true));

/** A simulated host with a pool and an instance "web", set up in this process. */
async function hostWithWeb(t: Test, steps: string[][] = []) {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  for (const args of [['pool', 'init', '--cpu-count', '3', '--memory', '1G', '--devices', '0000:00:04.0,0000:00:05.0'], ['create', 'web', '--cpu-count', '1', '--memory', '256M'], ...steps]) {
    const r = await inProcess(args, sim.env);
    t.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  }
  return sim;
}

/** The instance hangs: its kernel answers nothing, so a graceful halt waits the kernel's 30 s. */
async function hang(sim: { env: Record<string, string> }, id = 1): Promise<void> {
  const { SimulatedSystem } = await import('../../lib/simulated');
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR });
  await system.hang(id);
  await system.dispose();
}

t.test('errors as real processes: usage (2), kernel (1), Ctrl-C (130)', async (t) => {
  const sim = await hostWithWeb(t, [['load', 'web', 'placeholder'], ['start', 'web'], ['create', 'db', '--cpu-count', '1', '--memory', '128M']]);
  let r = await spawnMkctl(['create', 'x', '--cpu-count', '1'], sim.env);
  t.equal(r.code, 2);
  t.equal(r.stderr, 'mkctl create: create needs CPUs (--cpus IDS or --cpu-count N) and --memory\n(see mkctl create --help)\n');
  r = await spawnMkctl(['pool', 'grow', '--memory', '1X', '--json'], sim.env);
  t.equal(r.code, 2);
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_USAGE', exitCode: 2, message: /--memory must look like 4096, 512M or 2G/ } });
  r = await spawnMkctl(['start', 'db'], sim.env);
  t.equal(r.code, 1, 'a kernel error');
  t.match(r.stderr, /^mkctl start: cannot start instance "db" \(status ready\): .+\n$/);
  r = await spawnMkctl(['start', 'db', '--json'], sim.env);
  t.equal(r.code, 1);
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_INSTANCE_NOT_LOADED', exitCode: 1, details: { name: 'db', status: 'ready' } } });

  // Ctrl-C while a graceful halt of a hung instance waits (the kernel would wait 30 s)
  await hang(sim);
  const started = Date.now();
  r = await spawnMkctl(['stop', 'web', '--json'], sim.env, { killAfterMs: 2500 });
  t.equal(r.code, 130, 'interrupted');
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_INTERRUPTED', message: 'interrupted', exitCode: 130 } });
  t.equal(r.stderr, '');
  t.ok(Date.now() - started < 10_000, 'the process does not wait for the halt it gave up on');
  t.match((await inProcess(['list', '--json'], sim.env)).json(), { instances: [{ name: 'web', status: 'active' }, { name: 'db' }] }, 'still running, still hung');
  // a forced stop after a short graceful try ends it
  r = await spawnMkctl(['stop', 'web', '--force', '--timeout', '0.3'], sim.env);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'stopped web (id 1) by force\n');
});

t.test('--help of every command: usage, options, the --json shape', async (t) => {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  for (const cmd of [['pool', 'init'], ['pool', 'grow'], ['pool', 'shrink'], ['pool', 'teardown'], ['create'], ['update'], ['load'], ['start'], ['stop'], ['restart'], ['unload'], ['delete']]) {
    const r = await inProcess([...cmd, '--help'], sim.env);
    t.equal(r.code, 0);
    t.match(r.stdout, new RegExp(`^usage: mkctl ${cmd.join(' ')} `), cmd.join(' '));
    t.match(r.stdout, /\n--json: \{"version": 1, "action": "/);
    t.match(r.stdout, /--simulate /);
  }
  const stop = await inProcess(['stop', '--help'], sim.env);
  t.match(stop.stdout, /usage: mkctl stop NAME \[--force\] \[--timeout SEC\] \[options\]\n\nHalts.*\n\noptions:\n {2}--force/s);
  t.match(stop.stdout, /\n--json: \{"version": 1, "action": "stop", "how": "graceful" \| "forced", "instance": INSTANCE\}\nINSTANCE: \{"name", "id", "status",/);
  t.match((await inProcess(['delete', '--help'], sim.env)).stdout, /\n--json: \{"version": 1, "action": "delete", "instance": \{"name", "id"\}\}\n$/);
  t.match((await inProcess(['restart', '--help'], sim.env)).stdout, /"how": "graceful" \| "forced" \| null, "instance": INSTANCE\}\n[^]*strings\. "how" is null when it was not running\.\n$/);
  t.match((await inProcess(['--help'], sim.env)).stdout, /\n {2}list +.*\n {2}pool init +.*\n {2}pool grow .*\n {2}pool shrink .*\n {2}pool teardown .*\n {2}create .*\n {2}update .*\n {2}load .*\n {2}start .*\n {2}stop .*\n {2}restart .*\n {2}unload .*\n {2}delete /);
});

t.test('usage errors (exit 2) before the host is touched', async (t) => {
  const sim = await hostWithWeb(t);
  const cases: [string[], RegExp][] = [
    [['pool', 'init', '--cpu-count', '1'], /pool init needs CPUs \(--cpus IDS or --cpu-count N\) and --memory/],
    [['pool', 'init', '--cpus', 'x', '--memory', '1G'], /--cpus: "x" is not a CPU list/],
    [['pool', 'init', '--cpu-count', '1', '--memory', '1G@x'], /--memory: "1G@x" is not SIZE@NODE/],
    [['pool', 'init', '--cpu-count', '1', '--memory', '1G@0,1G'], /--memory: "1G" is not SIZE@NODE/],
    [['pool', 'init', '--cpu-count', '1', '--memory', '1G', 'extra'], /unexpected argument "extra"/],
    [['pool', 'grow'], /nothing to add: give --cpus, --cpu-count, --memory or --devices/],
    [['pool', 'shrink'], /nothing to give back/],
    [['pool', 'shrink', '--memory', '1G', '--chunks', '0x1000'], /--memory and --chunks exclude each other/],
    [['pool', 'shrink', '--chunks', '0x10,zz'], /--chunks: "zz" is not a chunk base/],
    [['pool', 'teardown', '--nope'], /Unknown option '--nope'/],
    [['pool', 'grow', '--cpu-count', '0'], /--cpu-count takes a whole number of at least 1, got "0"/],
    [['pool', 'grow', '--cpus', '5-2'], /--cpus: the range 5-2 runs backwards/],
    [['pool', 'grow', '--cpus', '2,1-3'], /--cpus: "2,1-3" names a CPU twice/],
    [['create'], /missing NAME/],
    [['create', 'a', '--memory', '128M'], /create needs CPUs \(--cpus IDS or --cpu-count N\) and --memory/],
    [['create', 'a', '--cpus', '2', '--cpu-count', '1', '--memory', '128M'], /--cpus and --cpu-count exclude each other/],
    [['create', 'a', '--cpu-count', 'two', '--memory', '128M'], /--cpu-count takes a whole number of at least 1, got "two"/],
    [['create', 'a', '--cpu-count', '1', '--memory', '128M', '--id', 'one'], /--id takes a whole number, got "one"/],
    [['create', 'a', '--cpu-count', '1', '--memory', 'lots'], /--memory must look like/],
    [['update', 'web'], /nothing to change: give --cpus, --cpu-count, --memory or --devices/],
    [['load', 'web'], /missing KERNEL/],
    [['load', 'web', 'k', 'extra'], /unexpected argument "extra"/],
    [['stop', 'web', '--timeout', 'soon'], /--timeout takes seconds, e.g. 10 or 0.5, got "soon"/],
    [['stop'], /missing NAME/],
    // the library's own checks of what it is given are usage errors too (ERR_MK_INVALID_SPEC)
    [['pool', 'grow', '--devices', 'eth0'], /"eth0" is not a PCI address/],
    [['create', 'a', '--cpu-count', '1', '--memory', '128M', '--id', '4000'], /id must be 1\.\.2047/],
  ];
  for (const [args, message] of cases) {
    const r = await inProcess(args, sim.env);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, message, args.join(' '));
    t.match(r.stderr, new RegExp(`\\(see mkctl ${args[0] === 'pool' ? `pool ${args[1]}` : args[0]} --help\\)\\n$`));
  }
  let r = await inProcess(['pool', 'teardown'], { ...sim.env, MULTIKERNEL_BACKEND: 'qemu' });
  t.equal(r.code, 2);
  t.match(r.stderr, /^mkctl pool teardown: MULTIKERNEL_BACKEND must be "simulated" or "linux", got "qemu"\n/);
  // "placeholder" is no kernel on a real host: refused before the host is opened
  r = await inProcess(['load', 'web', 'placeholder', '--json'], { ...sim.env, MULTIKERNEL_BACKEND: 'linux' });
  t.equal(r.code, 2);
  t.match(r.json(), { error: { code: 'ERR_MK_USAGE', message: /"placeholder" stands for a kernel on the simulated host only.*\.\/placeholder/ } });
});

t.test('kernel and runtime errors (exit 1)', async (t) => {
  const sim = await hostWithWeb(t);
  const cases: [string[], string][] = [
    [['pool', 'init', '--cpu-count', '1', '--memory', '128M'], 'ERR_MK_POOL_EXISTS'],
    [['pool', 'teardown'], 'ERR_MK_POOL_BUSY'],
    [['pool', 'shrink', '--devices', '0000:00:09.0'], 'ERR_MK_RESOURCES'],
    [['create', 'web', '--cpu-count', '1', '--memory', '128M'], 'ERR_MK_INSTANCE_EXISTS'],
    [['start', 'web'], 'ERR_MK_INSTANCE_NOT_LOADED'],
    [['stop', 'web'], 'ERR_MK_INSTANCE_NOT_ACTIVE'],
    [['unload', 'web'], 'ERR_MK_INSTANCE_NOT_LOADED'],
    [['update', 'nope', '--cpu-count', '1'], 'ERR_MK_INSTANCE_NOT_FOUND'],
    [['load', 'web', path.join(sim.dir, 'no-such-vmlinux')], 'ERR_MK_IMAGE'],
  ];
  for (const [args, code] of cases) {
    const r = await inProcess([...args, '--json'], sim.env);
    t.equal(r.code, 1, args.join(' '));
    t.match(r.json(), { version: 1, error: { code, exitCode: 1 } }, args.join(' '));
  }
  const r = await inProcess(['delete', 'nope'], sim.env);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'mkctl delete: instance "nope": no such instance\n');
});

t.test('options: NUMA memory, chunks by base, exact CPUs and devices, ids, initrd and command line', async (t) => {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const run = (...args: string[]) => inProcess(args, sim.env);
  let r = await run('pool', 'init', '--cpu-count', '1', '--memory', '512M@0,256M@1', '--json');
  t.equal(r.code, 0, r.stderr);
  const pool = r.json<{ pool: { memory: { base: string; size: string; node?: number }[]; freeCpus: number[] } }>().pool;
  t.match(pool.memory, [{ size: String(512 << 20), node: 0 }, { size: String(256 << 20), node: 1 }]);
  r = await run('pool', 'shrink', '--cpus', `${pool.freeCpus[0]}`, '--json');
  t.match(r.json(), { action: 'shrink', pool: { cpus: [], memoryBytes: String(768 << 20) } });
  r = await run('pool', 'shrink', '--cpu-count', '1');
  t.equal(r.code, 1, 'no CPU left to give back');
    r = await run('pool', 'shrink', '--chunks', `0x${BigInt(pool.memory[1]!.base).toString(16)}`);
  t.equal(r.stdout, 'pool shrunk: 0 CPUs (none, 0 free) · 512 MiB (512 MiB free)\n', 'a pool may hold memory alone');
  r = await run('pool', 'grow', '--cpu-count', '1', '--memory', '512M@1', '--devices', '0000:00:04.0,0000:00:05.0');
  t.match(r.stdout, /^pool grown: 1 CPU \(\d+, 1 free\) · 1 GiB \(1 GiB free\) · 2 devices free\n$/);

  r = await run('create', 'db', '--cpu-count', '1', '--memory', '256M', '--id', '7', '--numa-node', '1', '--devices', '0000:00:04.0,0000:00:05.0', '--json');
  t.equal(r.code, 0, r.stderr);
  const db = r.json<{ instance: { id: number; cpus: number[]; devices: unknown[] } }>().instance;
  t.equal(db.id, 7);
  t.equal(db.devices.length, 2);
  r = await run('update', 'db', '--devices', '', '--cpus', `${db.cpus[0]}-${db.cpus[0]}`);
  t.match(r.stdout, /^updated db \(id 7\): 1 CPU \(\d+\), 256 MiB\n$/, '--devices "" gives every device back');
  r = await run('update', 'db', '--devices', '0000:00:04.0,0000:00:05.0');
  t.match(r.stdout, /, 2 devices\n$/);

  // a kernel file, an initrd and a command line, relative to the working directory
  const { placeholderImage } = await import('../../lib/simulated');
  fs.writeFileSync(path.join(sim.dir, 'vmlinux'), placeholderImage());
  fs.writeFileSync(path.join(sim.dir, 'initrd.img'), Buffer.alloc(512));
  const rel = (f: string) => path.relative(process.cwd(), path.join(sim.dir, f));
  r = await run('load', 'db', rel('vmlinux'), '--initrd', rel('initrd.img'), '--cmdline', 'console=mktty0 quiet', '--trust-files', '--json');
  t.equal(r.code, 0, r.stderr);
  t.match(r.json(), { action: 'load', kernel: path.join(sim.dir, 'vmlinux'), instance: { status: 'loaded', image: { cmdline: 'console=mktty0 quiet', segments: Number } } });
  r = await run('unload', 'db');
  r = await run('load', 'db', path.join(sim.dir, 'vmlinux'), '--trust-files');
  t.equal(r.stdout, `loaded ${path.join(sim.dir, 'vmlinux')} into db (id 7)\n`);
  r = await run('start', 'db');
  r = await run('stop', 'db', '--force', '--timeout', '0');
  t.equal(r.stdout, 'stopped db (id 7) by force\n');
  r = await run('start', 'db');
  r = await run('delete', 'db', '--force');
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'deleted db (id 7)\n', 'stopped and unloaded first');
});

t.test('the simulated host chosen by option: --simulate (under $XDG_STATE_HOME), --state-dir, --lock', async (t) => {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const env = { NO_COLOR: '1', XDG_STATE_HOME: path.join(sim.dir, 'state') };
  let r = await inProcess(['pool', 'init', '--cpu-count', '1', '--memory', '128M', '--simulate', '--lock', '/run/mkctl-test.lock'], env);
  t.equal(r.code, 0, r.stderr);
  t.ok(fs.existsSync(path.join(sim.dir, 'state', 'multikernel', 'simulated')), 'the default state directory');
  r = await inProcess(['pool', 'init', '--cpu-count', '1', '--memory', '128M', '--state-dir', path.join(sim.dir, 'other'), '--json'], env);
  t.match(r.json(), { action: 'init', pool: { exists: true } }, 'another host');
  r = await inProcess(['pool', 'teardown', '--simulate'], env);
  t.match(r.stdout, NO_POOL);
});

t.test('progress on a terminal only, erased when the step ends', async (t) => {
  const sim = await hostWithWeb(t);
  let r = await inProcess(['load', 'web', 'placeholder'], sim.env, { tty: true });
  t.equal(r.stdout, 'loading a placeholder kernel into web…\r\u001b[Kloaded placeholder into web (id 1)\n');
  r = await inProcess(['start', 'web'], sim.env, { tty: true });
  t.equal(r.stdout, 'started web (id 1)\n', 'a start returns at once: no progress');
  r = await inProcess(['restart', 'web'], sim.env, { tty: true });
  t.equal(r.stdout, 'restarting web (id 1)…\r\u001b[Krestarted web (id 1)\n');
  r = await inProcess(['stop', 'web'], sim.env, { tty: true });
  t.equal(r.stdout, 'stopping web (id 1)…\r\u001b[Kstopped web (id 1)\n');
  r = await inProcess(['stop', 'web'], sim.env, { tty: true });
  t.equal(r.code, 1);
  t.equal(r.stdout, 'stopping web (id 1)…\r\u001b[K', 'erased when the step fails too');
  t.match(r.stderr, /^mkctl stop: cannot stop instance "web" \(status loaded\)/);
  await inProcess(['start', 'web'], sim.env);
  r = await inProcess(['delete', 'web', '--force'], sim.env, { tty: true });
  t.equal(r.stdout, 'deleting web (id 1)…\r\u001b[Kdeleted web (id 1)\n');
  r = await inProcess(['pool', 'teardown'], sim.env, { tty: true });
  t.match(r.stdout, NO_POOL);
});

t.test('Ctrl-C in this process: an aborted signal ends the command with 130', async (t) => {
  const sim = await hostWithWeb(t, [['load', 'web', 'placeholder']]);
  const controller = new AbortController();
  controller.abort(new Error('received SIGINT'));
  let r = await inProcess(['start', 'web'], sim.env, { signal: controller.signal });
  t.equal(r.code, 130);
  t.equal(r.stderr, 'mkctl start: interrupted\n');
  r = await inProcess(['pool', 'grow', '--cpu-count', '1', '--json'], sim.env, { signal: controller.signal });
  t.equal(r.code, 130);
  t.match(r.json(), { error: { code: 'ERR_MK_INTERRUPTED' } });
  r = await inProcess(['list', '--json'], sim.env);
  t.match(r.json(), { instances: [{ name: 'web', status: 'loaded' }] }, 'nothing changed');
});
