// mkctl daemon in this process: its help and usage errors, and a whole run through runProcess
// with a fake process object (SIGHUP reloads, SIGTERM stops with exit 0 as the command owns
// its signals), with and without --metrics, against a simulated host in a state directory.
import t, { type Test } from 'tap';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { EXIT } from '../../lib/cli/command';
import { runProcess } from '../../lib/cli/mkctl';
import { placeholderImage } from '../../lib/image';
import { inProcess, simulatedHost } from '../cli/helpers';
import { until } from './fixture';

class Sink {
  text = '';
  write(s: string): boolean {
    this.text += s;
    return true;
  }
}

class FakeProcess extends EventEmitter {
  stdout = new Sink();
  stderr = new Sink();
  constructor(
    readonly argv: string[],
    readonly env: Record<string, string>,
    readonly dir: string,
  ) {
    super();
  }
  cwd(): string {
    return this.dir;
  }
}

const SPEC = `version: 1
pool:
  cpus: 2
  memory: 1G
instances:
  web:
    cpus: 1
    memory: 256M
    kernel: vmlinux
    onDaemonStop: stop
`;

function host(t: Test) {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  fs.writeFileSync(path.join(sim.dir, 'vmlinux'), placeholderImage());
  fs.writeFileSync(path.join(sim.dir, 'host.yaml'), SPEC);
  return sim;
}

t.test('help and usage errors', async (t) => {
  const sim = host(t);
  const help = await inProcess(['daemon', '--help'], sim.env);
  t.equal(help.code, 0);
  t.match(help.stdout, /^usage: mkctl daemon -c SPEC/);
  t.match(help.stdout, 'RELOADING=1, MONOTONIC_USEC=');
  t.match(help.stdout, 'SIGHUP');
  for (const [args, message] of [
    [[], /missing -c SPEC/],
    [['-c', 'x', 'extra'], /unexpected argument "extra"/],
    [['-c', 'x', '--stop-timeout', 'soon'], /--stop-timeout takes seconds/],
    [['-c', 'x', '--metrics-public'], /--metrics-public goes with --metrics/],
    [['-c', 'x', '--metrics', '0.0.0.0:9464'], /not a loopback address/],
    [['-c', 'x', '--metrics', 'nowhere'], /takes HOST:PORT/],
    [['-c', 'x', '--json'], /Unknown option '--json'/],
    [['-c', 'x', '-f', 'y'], /-c and -f both name the spec/],
  ] as const) {
    const r = await inProcess(['daemon', ...args], sim.env);
    t.equal(r.code, EXIT.usage, args.join(' '));
    t.match(r.stdout + r.stderr, message);
  }
  // a state directory that cannot be one: one line at error priority, exit 1
  const file = path.join(sim.dir, 'not-a-dir');
  fs.writeFileSync(file, '');
  const broken = await inProcess(['daemon', '-c', 'host.yaml', '--state-dir', file], sim.env);
  t.equal(broken.code, EXIT.failure);
  t.match(broken.stderr, /^<3>cannot run: .*\n$/);
  t.equal(broken.stderr.split('\n').length, 2, 'one line');
  // interrupted while the host is opened: the interruption, not an error
  const interrupted = await inProcess(['daemon', '-c', 'host.yaml'], sim.env, { signal: AbortSignal.abort(new Error('SIGTERM')) });
  t.equal(interrupted.code, EXIT.interrupted);
  const bad = await inProcess(['daemon', '-f', path.join(sim.dir, 'missing.yaml')], sim.env);
  t.equal(bad.code, EXIT.usage, 'a spec that cannot be loaded: exit 2');
  t.match(bad.stderr, /^<6>starting: spec .*missing\.yaml\n<3>spec .*missing\.yaml: ENOENT/);
});

async function run(t: Test, extra: string[]): Promise<{ proc: FakeProcess; code: number }> {
  const sim = host(t);
  const proc = new FakeProcess(['node', 'mkctl', 'daemon', '-c', 'host.yaml', '--stop-timeout', '1', ...extra], { ...sim.env, HOME: sim.dir }, sim.dir);
  const done = runProcess(proc as unknown as NodeJS.Process);
  await until(() => proc.stderr.text.includes('<5>ready: 1/1 instances running'), 30_000, `ready; got ${proc.stderr.text}`);
  if (extra.includes('--metrics')) {
    const url = `http://${/<6>metrics: (\S+) \(GET \/metrics\)/.exec(proc.stderr.text)![1]!}/metrics`;
    const body = await new Promise<string>((resolve, reject) =>
      http.get(url, (res) => {
        let s = '';
        res.on('data', (d: Buffer) => (s += d.toString()));
        res.on('end', () => resolve(s));
      }).on('error', reject),
    );
    t.match(body, 'multikernel_instance_status{instance="web",status="active"} 1');
  }
  proc.emit('SIGHUP');
  await until(() => proc.stderr.text.includes('<5>reloaded: 1/1 instances running'), 30_000, 'the reload');
  proc.emit('SIGTERM', 'SIGTERM');
  const code = await done;
  t.equal(proc.listenerCount('SIGHUP') + proc.listenerCount('SIGTERM'), 0, 'handlers removed');
  return { proc, code };
}

t.test('a run: SIGHUP reloads, SIGTERM stops the onDaemonStop: stop instances and exits 0', async (t) => {
  const { proc, code } = await run(t, []);
  t.equal(code, 0, 'SIGTERM is the daemon\'s ordinary stop');
  t.match(proc.stderr.text, '<6>stopping web (onDaemonStop: stop)\n<6>web stopped\n<5>stopped\n');
  for (const line of proc.stderr.text.trimEnd().split('\n')) t.match(line, /^<[3-7]>\S/, 'every line has its priority');
});

t.test('a run with --metrics on a loopback port', async (t) => {
  const { proc, code } = await run(t, ['--metrics', '127.0.0.1:0']);
  t.equal(code, 0);
  t.match(proc.stderr.text, /^<6>metrics: 127\.0\.0\.1:\d+ \(GET \/metrics\)$/m);
});
