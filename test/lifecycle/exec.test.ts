// instance.exec(): a ChildProcess-like command in an instance, through the kerf-init agent of
// the simulated kernel: streams both ways with back-pressure, signals, a tty resize, failures.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { Host, ExecProcess, MultikernelError } from '../../lib';
import { guardSession } from '../../lib/exec-process';
import { LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE } from '../../lib/uapi';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';

const lockPath = path.join(os.tmpdir(), `mk-exec-test-${process.pid}.lock`);
t.setTimeout(300_000);

async function running(t: Test) {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await a.load(placeholderImage());
  await a.start();
  return { system, a };
}

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  let out = '';
  for await (const chunk of stream) out += (chunk as Buffer).toString('utf8');
  return out;
}

t.test('a command: spawn, output, exit and close, like a ChildProcess', async (t) => {
  const { a } = await running(t);
  const proc = await a.exec(['uname', '-a'], { stdin: 'ignore' });
  t.type(proc, ExecProcess);
  t.equal(proc.stdin, null, 'no stdin with ignore');
  const events: string[] = [];
  proc.on('spawn', () => events.push(`spawn ${proc.pid! > 0}`));
  proc.on('exit', (code, signal) => events.push(`exit ${code} ${signal}`));
  const closed = once(proc, 'close');
  const [out, err] = await Promise.all([text(proc.stdout), text(proc.stderr)]);
  t.match(out, /^Linux a /);
  t.equal(err, '');
  t.same(await proc.exited, { code: 0, signal: undefined });
  await closed;
  t.same(events, ['spawn true', 'exit 0 null']);
  t.same([proc.exitCode, proc.signalCode], [0, null]);
  t.equal(proc.kill(), false, 'nothing to kill after the end');
});

t.test('64 MiB through stdin and back through stdout, with a slow reader', async (t) => {
  const { a } = await running(t);
  const proc = await a.exec(['cat']);
  const data = randomBytes(64 * 1024 * 1024);
  const sent = createHash('sha256').update(data).digest('hex');
  const hash = createHash('sha256');
  let bytes = 0;
  let paused = false;
  const reading = (async () => {
    for await (const chunk of proc.stdout) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
      if (!paused && bytes > 1024 * 1024) {
        // a reader that stops for a while: output waits in the transport, not in this process
        paused = true;
        await new Promise((r) => setTimeout(r, 200));
        t.ok(proc.stdout.readableLength <= 2 * 65536 + proc.stdout.readableHighWaterMark, `buffered: ${proc.stdout.readableLength} bytes`);
      }
    }
  })();
  for (let i = 0; i < data.length; i += 1024 * 1024) {
    if (!proc.stdin!.write(data.subarray(i, i + 1024 * 1024))) await once(proc.stdin!, 'drain');
  }
  proc.stdin!.end();
  await reading;
  t.same(await proc.exited, { code: 0, signal: undefined });
  t.equal(bytes, data.length);
  t.equal(hash.digest('hex'), sent, 'the same bytes came back');
});

t.test('stdin as bytes or a stream; kill and resize', async (t) => {
  const { a } = await running(t);
  const bytes = await a.exec(['cat'], { stdin: Buffer.from('given bytes') });
  t.equal(await text(bytes.stdout), 'given bytes');
  const errs = await a.exec(['cat', '/missing'], { stdin: 'ignore' });
  t.equal(await text(errs.stderr), 'cat: /missing: No such file or directory\n', 'stderr');
  t.same(await errs.exited, { code: 1, signal: undefined });
  const sleeper = await a.exec(['sleep', '10'], { stdin: 'ignore' });
  t.equal(sleeper.kill(), false, 'not started yet');
  await once(sleeper, 'spawn');
  t.throws(() => sleeper.kill('SIGNOPE' as NodeJS.Signals), { code: 'ERR_MK_INVALID_SPEC' });
  t.throws(() => sleeper.kill(0), { code: 'ERR_MK_INVALID_SPEC' });
  t.equal(sleeper.kill('SIGKILL'), true);
  t.same(await sleeper.exited, { code: 137, signal: 9 }, '128 + 9');
  t.same([sleeper.exitCode, sleeper.signalCode], [137, 'SIGKILL']);
  const term = await a.exec(['sleep', '10'], { stdin: 'ignore' });
  await once(term, 'spawn');
  term.kill(15);
  t.same(await term.exited, { code: 143, signal: 15 });
  const realtime = await a.exec(['sleep', '10'], { stdin: 'ignore' });
  await once(realtime, 'spawn');
  realtime.kill(40);
  t.same(await realtime.exited, { code: 168, signal: 40 });
  t.equal(realtime.signalCode, null, 'a real-time signal has no name in os.constants.signals');

  const shell = await a.exec(['sh'], { tty: { rows: 24, cols: 80 }, env: { X: '1' }, cwd: '/', uid: 0, gid: 0 });
  await once(shell, 'spawn');
  shell.resize(100, 30);
  t.throws(() => shell.resize(0, 30), { code: 'ERR_MK_INVALID_SPEC' });
  t.throws(() => shell.resize(100, 70000), { code: 'ERR_MK_INVALID_SPEC' });
  shell.stdin!.end('stty size\nexit 3\n');
  t.match(await text(shell.stdout), /30 100/, 'the new size');
  t.same(await shell.exited, { code: 3, signal: undefined });
});

t.test('failures: not found, an abort, refusals before anything is sent', async (t) => {
  const { a } = await running(t);
  const missing = await a.exec(['no-such-command'], { stdin: 'ignore' });
  const errors: unknown[] = [];
  missing.on('error', (e) => errors.push(e));
  await t.rejects(missing.exited, { code: 'ERR_MK_EXEC_REMOTE', exitCode: 127 });
  t.equal(missing.exitCode, 127);
  t.equal(errors.length, 1, 'an error event for a listener');
  const quiet = await a.exec(['no-such-command'], { stdin: 'ignore' });
  // (events.once would listen for 'error' itself)
  await new Promise((resolve) => quiet.on('close', resolve));
  t.equal(quiet.exitCode, 127, 'no listener: no unhandled error, the status is there');

  const controller = new AbortController();
  const slow = await a.exec(['sleep', '10'], { stdin: 'ignore', signal: controller.signal });
  await once(slow, 'spawn');
  controller.abort(new Error('enough'));
  await t.rejects(slow.exited, { message: 'enough' });

  await t.rejects(a.exec([]), { code: 'ERR_MK_INVALID_SPEC' });
  await t.rejects(a.exec(['true'], { signal: AbortSignal.abort(new Error('no')) }), { message: 'no' });
  await a.stop({ force: true, timeoutMs: 0 });
  await t.rejects(a.exec(['true']), { code: 'ERR_MK_INSTANCE_NOT_ACTIVE' });
});

t.test('a lost connection: the instance panics or is halted by another tool while a command runs', async (t) => {
  const { system, a } = await running(t);
  // a panic halts the spawn back to the pool and says nothing to its vsock peers (core.c)
  const proc = await a.exec(['sleep', '1000'], { stdin: 'pipe' });
  await once(proc, 'spawn');
  const errors: Error[] = [];
  proc.on('error', (e: Error) => errors.push(e));
  const t0 = Date.now();
  await system.panic(a.id);
  await t.rejects(proc.exited, { code: 'ERR_MK_EXEC_LOST_CONNECTION', message: /instance "a" is loaded now: it was halted, or its kernel crashed/ });
  t.ok(Date.now() - t0 < 5000, 'noticed within the status check interval');
  t.equal(errors.length, 1, 'one error event');
  t.ok(proc.stdin!.destroyed, 'stdin is closed');

  // execFile rejects the same way (it resolves only for a command that ran or could not start)
  await a.start();
  const file = a.execFile(['sleep', '1000']);
  await new Promise((r) => setTimeout(r, 100));
  await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, a.id); // another tool's forced halt
  await t.rejects(file, { code: 'ERR_MK_EXEC_LOST_CONNECTION' });

  // a status that cannot be read for a moment is no reason to end a session
  await a.start();
  const running2 = a.execFile(['sleep', '2']);
  await new Promise((r) => setTimeout(r, 200)); // the session is open: its own checks come next
  system.faults.add({ op: 'read', path: '/sys/fs/multikernel/instances/a/status', times: 2, action: { errno: 'EIO' } });
  const short = await running2;
  t.equal(short.code, 0, 'the session outlived two unreadable status reads');
});

t.test('guardSession: an instance that is gone ends the session', async (t) => {
  const stream = new PassThrough();
  let calls = 0;
  guardSession(stream, 'instance "g"', async () => {
    calls++;
    throw new MultikernelError('ERR_MK_INSTANCE_NOT_FOUND', 'instance "g": it no longer exists');
  }, 5);
  const closed = new Promise((resolve) => stream.on('close', resolve)); // (events.once would reject on 'error')
  const [err] = (await once(stream, 'error')) as [Error];
  t.match(err.message, /instance "g" is gone \(instance "g": it no longer exists\)/);
  await closed;
  const after = calls;
  await new Promise((r) => setTimeout(r, 30));
  t.equal(calls, after, 'no more checks once the stream closed');
});

t.test('100 commands at once, each from its own reserved port', async (t) => {
  const { a } = await running(t);
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => a.execFile(['echo', `n${i}`])));
  t.same(
    results.map((r) => r.stdout.toString()),
    Array.from({ length: 100 }, (_, i) => `n${i}\n`),
    'every command ran and answered on its own connection',
  );
  t.ok(results.every((r) => r.code === 0));
  const channels = await Promise.all(Array.from({ length: 100 }, () => a.connect(1023)));
  t.equal(new Set(channels.map((c) => c.localPort)).size, 100, '100 channels, 100 local ports');
  for (const c of channels) c.destroy();
});
