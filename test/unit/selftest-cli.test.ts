import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { NativeBinding } from '../../lib/binding';
import type { CliIo } from '../../lib/cli/command';
import { selftest } from '../../lib/cli/commands/selftest';
import { placeholderImage } from '../../lib/image';
import { runSelftest } from '../../lib/selftest';
import { LinuxSystem } from '../../lib/system/linux';

function io(signal = new AbortController().signal) {
  const out: string[] = [];
  const err: string[] = [];
  const value: CliIo = {
    stdout: { write: (s: string) => out.push(s) },
    stderr: { write: (s: string) => err.push(s) },
    env: {},
    cwd: process.cwd(),
    signal,
  };
  return { io: value, out: () => out.join(''), err: () => err.join('') };
}

t.test('--simulated prints each step, the console and the exec output', async (t) => {
  const c = io();
  t.equal(await selftest.run(['--simulated', '--lock', '/run/mk-test.lock'], c.io), 0);
  t.match(c.out(), /^probe {5}\/proc\/filesystems lists "multikernel".*\(\d+ ms\)$/m);
  t.match(c.out(), /^console of instance 1:\n {2}\| \[ +0\.0+\] Linux version/m);
  t.match(c.out(), /^exec uname -a: exit 0\n {2}\| Linux selftest/m);
  t.match(c.out(), /selftest passed: instance "selftest" \(id 1\) went through its whole life/);
});

t.test('--json, --no-exec and the sizing options', async (t) => {
  const c = io();
  t.equal(await selftest.run(['--simulated', '--json', '--no-exec', '--cpus', '2', '--memory', '1G', '--name', 'web', '--boot-timeout', '5'], c.io), 0);
  const r = JSON.parse(c.out()) as { instance: { name: string; cpus: number[]; memoryBytes: string }; exec?: unknown; steps: { step: string }[] };
  t.same({ name: r.instance.name, cpus: r.instance.cpus.length, memory: r.instance.memoryBytes }, { name: 'web', cpus: 2, memory: String(1 << 30) });
  t.equal(r.exec, undefined);
  t.notOk(r.steps.some((s) => s.step === 'exec'));
});

t.test('--state-dir shares the simulated host between runs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-selftest-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (let i = 0; i < 2; i++) {
    const c = io();
    t.equal(await selftest.run(['--simulated', '--state-dir', dir, '--exec'], c.io), 0, c.err());
    t.match(c.out(), i === 0 ? /^mount +mounted \/sys\/fs\/multikernel/m : /^mount +already mounted/m, 'the second run sees the first run\'s mount');
  }
});

t.test('wrong command lines are usage errors', async (t) => {
  for (const [args, message] of [
    [[], /give --simulated, or --kernel PATH/],
    [['--simulated', '--kernel', 'x'], /give --simulated, or --kernel PATH/],
    [['--kernel', 'x', '--state-dir', 'd'], /--state-dir goes with --simulated/],
    [['--simulated', '--exec', '--no-exec'], /exclude each other/],
    [['--simulated', '--memory', 'lots'], /--memory: memory must look like/],
    [['--simulated', '--cpus', 'two'], /--cpus takes a whole number/],
    [['--simulated', 'extra'], /unexpected argument "extra"/],
  ] as const) {
    await t.rejects(selftest.run([...args], io().io), { name: 'UsageError', message }, args.join(' '));
  }
});

t.test('on a kernel without multikernel support (this machine) nothing reaches the kernel', async (t) => {
  // Every native call throws: the run must stop at the probe, which only reads /proc and stats paths.
  const binding = new Proxy({} as NativeBinding, {
    get: (_t, key) => {
      throw new Error(`native ${String(key)} must not be reached`);
    },
  });
  const err = await runSelftest(new LinuxSystem({ binding }), { image: placeholderImage() }).catch((e: unknown) => e);
  t.match(err, { code: 'ERR_MK_NO_SUPPORT', message: /this kernel has no multikernel support; probed: \/proc\/filesystems has no "multikernel"/ });
  const c = io();
  await t.rejects(selftest.run(['--kernel', '/nonexistent/vmlinux', '--json'], c.io), { code: 'ERR_MK_NO_SUPPORT' });
});
