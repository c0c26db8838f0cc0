// mkctl: routing, help, usage errors, exit codes, and `qemu run` end to end against a fake QEMU
// binary (a node script written at test time), including SIGINT/SIGTERM through runProcess.
import { EventEmitter } from 'node:events';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { EXIT, UsageError, type CliIo, type Command } from '../../lib/cli/command';
import { qemuOptionsFromArgs } from '../../lib/cli/commands/qemu-run';
import { COMMANDS, main, runProcess, usage } from '../../lib/cli/mkctl';
import { MARKER } from '../../lib/qemu';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cli-mkctl-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const fake = path.join(tmp, 'fake-qemu');
writeFileSync(
  fake,
  `#!${process.execPath}
const argv = process.argv.slice(2);
const mode = /fake=(\\S+)/.exec(argv[argv.indexOf('-append') + 1])[1];
const M = ${JSON.stringify(MARKER)};
const out = (s) => process.stdout.write(s);
switch (mode) {
  case 'ok': out('Booting from ROM...\\n' + M + ' init\\n' + M + ' run\\nguest says hi\\n' + M + ' exit 3\\n'); process.exit(7);
  case 'stderr': process.stderr.write('qemu: could not load kernel\\n'); process.exit(1);
  case 'hang': out('Booting from ROM...\\n'); setInterval(() => {}, 1000); break;
}
`,
);
chmodSync(fake, 0o755);
const cache = path.join(tmp, 'cache');
mkdirSync(path.join(cache, 'modules'), { recursive: true });
writeFileSync(path.join(cache, 'kernel.env'), 'KERNEL_PACKAGE=fake\n');
writeFileSync(path.join(cache, 'modules', 'order'), 'netfs\n');
writeFileSync(path.join(cache, 'modules', 'netfs.ko'), 'KO');
writeFileSync(path.join(cache, 'busybox'), 'BB');

class Sink {
  text = '';
  constructor(readonly isTTY = false) {}
  write(s: string): boolean {
    this.text += s;
    return true;
  }
}

function io(options: { tty?: boolean; signal?: AbortSignal } = {}): CliIo & { stdout: Sink; stderr: Sink } {
  return { stdout: new Sink(), stderr: new Sink(options.tty), env: {}, cwd: tmp, signal: options.signal ?? new AbortController().signal };
}

const run = (mode: string, ...extra: string[]): string[] => ['qemu', 'run', '--kernel-dir', cache, '--kernel', '/k', '--qemu', fake, '--no-node', '--append', `fake=${mode}`, ...extra];

t.test('top level: usage, help, unknown commands', async (t) => {
  let o = io();
  t.equal(await main([], o), EXIT.usage);
  t.match(o.stderr.text, /^usage: mkctl <command>[\s\S]*qemu run +boot a kernel/);
  for (const h of ['--help', '-h', 'help']) {
    o = io();
    t.equal(await main([h], o), EXIT.ok);
    t.equal(o.stdout.text, usage());
  }
  o = io();
  t.equal(await main(['frobnicate', '--x', 'now'], o), EXIT.usage);
  t.match(o.stderr.text, 'unknown command "frobnicate now"');
  o = io();
  t.equal(await main(['pool'], o), EXIT.usage);
  t.equal(o.stderr.text, 'mkctl pool needs a subcommand: pool init, pool grow, pool shrink, pool teardown\n');
  o = io();
  t.equal(await main(['qemu', 'boot'], o), EXIT.usage);
  t.equal(o.stderr.text, 'mkctl qemu has no subcommand "boot": qemu run\n');
  o = io();
  t.equal(await main(['pool', '--json'], o), EXIT.usage);
  t.match(o.stderr.text, /^mkctl pool needs a subcommand/);
  t.same(COMMANDS.map((c) => c.path.join(' ')), [
    'status', 'list',
    'pool init', 'pool grow', 'pool shrink', 'pool teardown',
    'create', 'update', 'load', 'start', 'stop', 'restart', 'unload', 'delete',
    'plan', 'apply',
    'show', 'dump', 'probe', 'watch', 'console', 'exec',
    'demo', 'selftest', 'completion', 'daemon', 'qemu run',
  ]);
});

t.test('the longest command path wins; errors map to exit codes', async (t) => {
  const calls: string[] = [];
  const mk = (p: string[], run: Command['run']): Command => ({ path: p, summary: p.join(' '), help: `help of ${p.join(' ')}\n`, run });
  const table = [
    mk(['a'], async (args) => (calls.push(`a ${args.join(' ')}`), 0)),
    mk(['a', 'b'], async (args) => (calls.push(`a b ${args.join(' ')}`), 4)),
    mk(['u'], async () => {
      throw new UsageError('bad flag');
    }),
    mk(['x'], async () => {
      throw new Error('boom');
    }),
  ];
  t.equal(await main(['a', 'b', 'c'], io(), table), 4);
  t.equal(await main(['a', 'c'], io(), table), 0);
  t.same(calls, ['a b c', 'a c']);
  let o = io();
  t.equal(await main(['a', 'b', '--help'], o, table), EXIT.ok);
  t.equal(o.stdout.text, 'help of a b\n');
  t.equal(await main(['a', '--', '--help'], io(), table), 0, '--help after -- belongs to the guest command');
  o = io();
  t.equal(await main(['u'], o, table), EXIT.usage);
  t.equal(o.stderr.text, 'mkctl u: bad flag\n(see mkctl u --help)\n');
  t.equal(new UsageError('x').name, 'UsageError');
  o = io();
  t.equal(await main(['x'], o, table), EXIT.failure);
  t.equal(o.stderr.text, 'mkctl x: boom\n');
});

t.test('qemu run: help and usage errors', async (t) => {
  let o = io();
  t.equal(await main(['qemu', 'run', '-h'], o), EXIT.ok);
  t.match(o.stdout.text, /^usage: mkctl qemu run \[options\] -- <command>/);
  t.match(o.stdout.text, /exit codes:/);
  for (const [args, message] of [
    [['--bogus'], /Unknown option '--bogus'/],
    [['--cpus'], /argument missing|--cpus/],
    [[], /missing the guest command/],
    [['--arch', 'riscv64', '--', 'x'], /--arch must be x86_64 or aarch64/],
    [['--node', '/n', '--no-node', '--', 'x'], /exclude each other/],
    [['--env', 'NOVALUE', '--', 'x'], /--env wants NAME=VALUE/],
    [['--env', '=x', '--', 'x'], /--env wants NAME=VALUE/],
    [['--file', 'a:relative', '--', 'x'], /--file wants SRC:\/guest\/path/],
    [['--file', 'nocolon', '--', 'x'], /--file wants/],
    [['--cpus', 'four', '--', 'x'], /--cpus must be a whole number/],
    [['--timeout', '1.5', '--', 'x'], /--timeout must be a whole number/],
  ] as const) {
    o = io();
    t.equal(await main(['qemu', 'run', '--kernel-dir', cache, ...args], o), EXIT.usage, args.join(' '));
    t.match(o.stderr.text, message);
  }
});

t.test('qemu run: options map onto runQemu options', async (t) => {
  const { options, json, quiet } = await qemuOptionsFromArgs(
    [
      '--kernel', 'k', '--busybox', 'bb', '--module', 'a.ko', '--module', '/abs/b.ko', '--node', 'node-bin', '--binary', '/usr/sbin/capsh',
      '--file', 'f.txt:/data/f.txt', '--arch', 'aarch64', '--machine', 'virt', '--cpus', '3', '--memory', '2G', '--append', 'x=1',
      '--qemu', 'qemu-system-aarch64', '--share', 'repo', '--share-mount', '/mnt', '--cwd', '/mnt/sub', '--env', 'A=1=2', '--timeout', '7',
      '--json', '--quiet', '--', 'node', '--version',
    ],
    { cwd: '/w' },
  );
  t.same(options, {
    kernel: '/w/k', busybox: '/w/bb', command: ['node', '--version'], arch: 'aarch64', env: { A: '1=2' },
    files: [{ source: '/w/f.txt', target: '/data/f.txt' }], modules: ['/w/a.ko', '/abs/b.ko'], binaries: ['/usr/sbin/capsh'],
    node: '/w/node-bin', machine: 'virt', cpus: 3, memory: '2G', append: 'x=1', qemuBinary: 'qemu-system-aarch64',
    share: '/w/repo', shareMount: '/mnt', cwd: '/mnt/sub', timeoutMs: 7000,
  });
  t.same([json, quiet], [true, true]);
  const relQemu = await qemuOptionsFromArgs(['--kernel', 'k', '--busybox', 'b', '--qemu', './q', '--', 'x'], { cwd: '/w' });
  t.equal(relQemu.options.qemuBinary, '/w/q');
  t.notOk('modules' in relQemu.options, 'no modules without a share or --module');
  const fromCache = await qemuOptionsFromArgs(['--kernel-dir', cache, '--share', '.', '--', 'x'], { cwd: tmp });
  t.same([fromCache.options.kernel, fromCache.options.busybox, fromCache.options.modules], [path.join(cache, 'vmlinuz'), path.join(cache, 'busybox'), [path.join(cache, 'modules', 'netfs.ko')]]);
  // without --kernel-dir: the package's .cache/qemu/<debian arch>
  for (const [arch, dir] of [['x86_64', 'amd64'], ['aarch64', 'arm64']]) {
    const expected = path.resolve(__dirname, '..', '..', '.cache', 'qemu', dir);
    try {
      const r = await qemuOptionsFromArgs(['--arch', arch, '--', 'x'], { cwd: tmp });
      t.equal(r.options.kernel, path.join(expected, 'vmlinuz'), `${arch}: fetched kernel found`);
    } catch (e) {
      t.match(e, { code: 'ERR_MK_QEMU', message: `${expected} holds no fetched kernel` }, `${arch}: the default folder is named`);
    }
  }
  const hostDefault = await qemuOptionsFromArgs(['--kernel-dir', cache, '--', 'x'], { cwd: tmp });
  t.ok(hostDefault.options.arch === 'x86_64' || hostDefault.options.arch === 'aarch64');
});

t.test('qemu run: console on stdout, guest exit code, progress on a TTY', async (t) => {
  let o = io();
  t.equal(await main(run('ok', '--', 'true'), o), 3);
  t.match(o.stdout.text, 'guest says hi');
  t.equal(o.stderr.text, '', 'no progress when stderr is not a terminal');
  o = io({ tty: true });
  t.equal(await main(run('ok', '--', 'true'), o), 3);
  t.match(o.stderr.text, /mkctl: \[ +\d+\.\ds\] starting qemu[\s\S]*kernel booting[\s\S]*init reached[\s\S]*command running[\s\S]*done/);
  o = io();
  t.equal(await main(run('ok', '--quiet', '--', 'true'), o), 3);
  t.equal(o.stdout.text, '');
  o = io();
  t.equal(await main(run('ok', '--json', '--', 'true'), o), 3);
  const data = JSON.parse(o.stdout.text) as { exitCode: number; qemuStatus: number; phases: unknown[]; durationMs: number };
  t.match(data, { exitCode: 3, qemuStatus: 7 });
  t.equal(data.phases.length, 5);
  t.match(o.stderr.text, 'guest says hi', 'with --json the console goes to stderr');
});

t.test('qemu run: failures map to exit codes', async (t) => {
  let o = io();
  t.equal(await main(run('stderr', '--', 'true'), o), EXIT.harness);
  t.match(o.stderr.text, /mkctl qemu run: the guest ended without reporting an exit code.*QEMU said: qemu: could not load kernel/);
  o = io();
  t.equal(await main(run('stderr', '--json', '--', 'true'), o), EXIT.harness);
  t.match(JSON.parse(o.stdout.text), { error: { code: 'ERR_MK_QEMU', reason: 'no-exit-code' } });
  o = io();
  t.equal(await main(run('hang', '--timeout', '2', '--', 'true'), o), EXIT.timeout);
  t.match(o.stderr.text, 'QEMU timed out after 2000 ms');
  const ac = new AbortController();
  o = io({ signal: ac.signal });
  setTimeout(() => ac.abort(new Error('SIGINT')), 300);
  t.equal(await main(run('hang', '--', 'true'), o), EXIT.interrupted);
  o = io();
  t.equal(await main(run('ok', '--memory', 'lots', '--', 'true'), o), EXIT.failure, 'a RangeError from runQemu');
  t.match(o.stderr.text, 'memory must look like 512');
  o = io();
  t.equal(await main(['qemu', 'run', '--kernel-dir', path.join(tmp, 'nothing'), '--', 'x'], o), EXIT.failure);
  t.match(o.stderr.text, 'holds no fetched kernel; run scripts/qemu/fetch-kernel.sh first');
});

class FakeProcess extends EventEmitter {
  stdout = new Sink();
  stderr = new Sink();
  env = {};
  constructor(readonly argv: string[]) {
    super();
  }
  cwd(): string {
    return tmp;
  }
}

t.test('runProcess: wires argv and streams; SIGINT and SIGTERM abort and clean up', async (t) => {
  let p = new FakeProcess(['node', 'mkctl', '--help']);
  t.equal(await runProcess(p as unknown as NodeJS.Process), EXIT.ok);
  t.equal(p.stdout.text, usage());
  t.equal(p.listenerCount('SIGINT') + p.listenerCount('SIGTERM'), 0, 'handlers removed');
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    p = new FakeProcess(['node', 'mkctl', ...run('hang', '--', 'true')]);
    const done = runProcess(p as unknown as NodeJS.Process);
    setTimeout(() => {
      p.emit(sig, sig);
      p.emit(sig, sig); // a second signal changes nothing
    }, 300);
    t.equal(await done, code, sig);
    t.match(p.stderr.text, 'QEMU run aborted');
    t.equal(p.listenerCount(sig), 0);
  }
});
