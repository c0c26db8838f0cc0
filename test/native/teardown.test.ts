// Terminating a worker while native work is in flight (issues 16 and 8): an FdDuplex in flowing
// mode, a device read, a write under back-pressure, a vsock connect, a vsock accept, a lock wait,
// a graceful halt (under a seccomp fake), and a worker busy calling the addon (calls that throw
// included). Each case runs 50 rounds in a child process
// (fixtures/teardown.cjs, which a sanitizer lane can run on its own), so that a crash shows as a
// failed case here instead of ending the test runner.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { loadTestHelper } from './helper';

const ROUNDS = 50;
const fixture = path.join(__dirname, 'fixtures', 'teardown.cjs');
const capsh = ['/usr/sbin/capsh', '/sbin/capsh', '/usr/bin/capsh'].find((p) => existsSync(p));
const root = process.getuid?.() === 0;

// 8 cases of 50 worker start-ups and terminations, two cases at a time: about a minute on an
// idle 2-core machine, several on a loaded one (a worker start-up alone costs 80 ms of CPU)
t.setTimeout(900_000);
loadTestHelper(); // build it once here rather than in the first child

// The children run plain node: no tap loaders, no coverage of the library compiled apart.
const env: NodeJS.ProcessEnv = { ...process.env };
delete env.NODE_OPTIONS;
delete env.NODE_V8_COVERAGE;

interface Report {
  case: string;
  rounds: number;
  phases: { name: string; rounds: number; fdsBefore: number; fdsAfter: number; maxTerminateMs: number; meanTerminateMs: number }[];
  failures: string[];
  mainStreams?: boolean;
}

/** Runs a fixture to its end; one that hangs is killed after 4 minutes and reported as such. */
function run(command: string, args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      stderr += '\n[killed by teardown.test.ts after 4 minutes]';
      child.kill('SIGKILL');
    }, 240_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    // A grandchild that kept stderr open must not keep this waiting once the child is gone.
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      setTimeout(() => resolve({ code, signal, stdout, stderr }), 5000).unref();
    });
  });
}

const cases = ['flowing', 'device-read', 'write-backpressure', 'vsock-connect', 'vsock-accept', 'lock-wait', 'halt', 'busy'];
type Result = Awaited<ReturnType<typeof run>> & { seconds: number };

/** Runs the tasks `size` at a time (both cores of a 2-core machine), in order. */
function inPool<T>(tasks: (() => Promise<T>)[], size: number): Promise<T>[] {
  const settle = tasks.map(() => {
    let resolve!: (value: T) => void;
    let reject!: (error: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  });
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      await (tasks[i] as () => Promise<T>)().then(settle[i]?.resolve, settle[i]?.reject);
    }
  };
  for (let i = 0; i < size; i++) void lane();
  return settle.map((s) => s.promise);
}

// The halt case fakes reboot(2) with seccomp and refuses to run with CAP_SYS_BOOT.
const skipHalt = root && capsh === undefined ? 'capsh is not installed: the halt case only runs without CAP_SYS_BOOT' : false;
const runnable = cases.filter((name) => name !== 'halt' || skipHalt === false);
const results = inPool(
  runnable.map((name) => async (): Promise<Result> => {
    const started = Date.now();
    const args = [fixture, name, String(ROUNDS)];
    const result =
      name === 'halt' && root
        ? await run(capsh as string, ['--drop=cap_sys_boot', '--', '-c', 'exec "$0" "$@"', process.execPath, ...args])
        : await run(process.execPath, args);
    return { ...result, seconds: (Date.now() - started) / 1000 };
  }),
  2,
);

for (const name of cases) {
  const index = runnable.indexOf(name);
  t.test(`terminate() with ${name} in progress, ${ROUNDS} rounds`, { skip: index < 0 ? skipHalt : false }, async (t) => {
    const result = await (results[index] as Promise<Result>);
    t.equal(result.signal, null, `the process survived (stderr: ${result.stderr.slice(-2000)})`);
    t.equal(result.code, 0, `the fixture reported success (stderr: ${result.stderr.slice(-2000)})`);
    const report = JSON.parse(result.stdout.trim().split('\n').pop() || 'null') as Report | null;
    t.ok(report !== null, 'the fixture printed its report');
    if (report === null) return;
    t.same(report.failures, [], 'no failed check');
    t.equal(report.phases.reduce((n, p) => n + p.rounds, 0), ROUNDS, 'every round ran');
    for (const p of report.phases) {
      t.equal(p.fdsAfter, p.fdsBefore, `${p.name}: the workers' fds are all closed`);
      t.comment(`${p.name}: ${p.rounds} rounds, terminate() took ${p.meanTerminateMs} ms on average, ${p.maxTerminateMs} ms at most`);
    }
    t.equal(report.mainStreams, true, "the main thread's own streams kept working");
    t.comment(`${name}: ${result.seconds.toFixed(1)} s`);
  });
}
