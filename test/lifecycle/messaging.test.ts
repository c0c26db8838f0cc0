// Talking to an instance through the lifecycle API on the simulated kernel: its console (boot
// log kept, the newest console takes the output), liveness, vsock channels, and exec through the
// kerf-init agent.
import t, { type Test } from 'tap';
import * as os from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { Host, type Instance } from '../../lib';
import { ConsoleStream } from '../../lib/console';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';
import { wrap } from './helpers';
import type { VsockStream } from '../../lib/system/system';


const lockPath = path.join(os.tmpdir(), `mk-messaging-test-${process.pid}.lock`);

async function running(t: Test, options: ConstructorParameters<typeof SimulatedSystem>[0] = {}) {
  const system = new SimulatedSystem(options);
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M' });
  await a.load(placeholderImage());
  return { system, host, a };
}

/** Reads `stream` until `pattern` shows up in what was read (or 5 s pass), then pauses it. */
async function readUntil(stream: ConsoleStream, pattern: RegExp): Promise<string> {
  let text = '';
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, 5000);
    function done() {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.pause();
      resolve();
    }
    function onData(c: Buffer) {
      text += c.toString('utf8');
      if (pattern.test(text)) done();
    }
    stream.on('data', onData);
    stream.resume();
  });
  return text;
}

/** What arrives on `stream` within `ms`. */
async function gather(stream: ConsoleStream, ms: number): Promise<string> {
  let text = '';
  const onData = (c: Buffer) => (text += c.toString('utf8'));
  stream.on('data', onData);
  stream.resume();
  await new Promise((r) => setTimeout(r, ms));
  stream.off('data', onData);
  stream.pause();
  return text;
}

t.test('start({ console: true }) keeps the boot log; the newest console takes the output', async (t) => {
  const { a } = await running(t);
  const tty = await a.start({ console: true });
  t.type(tty, ConsoleStream);
  const boot = await readUntil(tty, /\$ $|# $/);
  t.match(boot, /Linux version/, 'the boot log from its first line');
  tty.write('echo one\n');
  t.match(await readUntil(tty, /one\r?\n.*# $/s), /one/, 'input runs in the console shell (read up to the next prompt)');
  const second = await a.console();
  second.write('echo two\n');
  t.match(await readUntil(second, /two\r?\n/), /two/, 'the second console gets the output');
  t.equal(await gather(tty, 100), '', 'the first one reads nothing meanwhile');
  second.destroy();
  await once(second, 'close');
  tty.write('echo three\n');
  t.match(await readUntil(tty, /three\r?\n/), /three/, 'with the second closed, the first has it again');
  tty.end();
  await once(tty, 'close');
  t.equal(await a.status(), 'active');
});

t.test('a failed start closes the console it opened', async (t) => {
  const { system, a } = await running(t);
  system.faults.add({ op: 'reboot', times: 1, action: { errno: 'EBUSY' } });
  await t.rejects(a.start({ console: true }), { code: 'EBUSY' });
  system.faults.add({ op: 'mktty.write', times: 1, action: { errno: 'EIO' } });
  await t.rejects(a.console(), { code: 'EIO' }, 'a selection that fails closes the device');
  await t.rejects(a.start({ console: false, signal: AbortSignal.abort(new Error('no')) }), { message: 'no' });
  await a.start();
  const tty = await a.console();
  system.faults.add({ op: 'mktty.read', times: 1, action: { errno: 'EIO' } });
  tty.resume();
  const [err] = (await once(tty, 'error')) as [Error & { code?: string }];
  t.equal(err.code, 'EIO', 'a read error destroys the stream');
});

t.test('probe: alive, hung, stopped', async (t) => {
  const { system, a } = await running(t);
  t.equal(await a.probe(), 'stopped', 'loaded, not running');
  await a.start();
  t.equal(await a.probe(), 'alive', 'a reset at once');
  await system.hang(a.id);
  const started = Date.now();
  t.equal(await a.probe({ attempts: 2, attemptMs: 30 }), 'hung');
  t.ok(Date.now() - started < 2000, 'within the attempts');
  await t.rejects(a.probe({ attempts: 0 }), { code: 'ERR_MK_INVALID_SPEC' });
  await t.rejects(a.probe({ signal: AbortSignal.abort(new Error('enough')) }), { message: 'enough' });
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('later')), 20);
  await t.rejects(a.probe({ attemptMs: 1000, signal: controller.signal }), { message: 'later' });
  await a.stop({ force: true, timeoutMs: 0 });
  await a.start();
  system.faults.add({ op: 'vsock.connect', times: 1, action: { errno: 'EIO' } });
  await t.rejects(a.probe(), { code: 'EIO' }, 'other errors are not guessed at');
  system.faults.add({ op: 'vsock.connect', times: 1, action: { errno: 'ETIMEDOUT' } });
  t.equal(await a.probe({ attempts: 2 }), 'alive', 'one timed-out attempt, then the reset');
});

t.test('channels: connect, refusals, timeouts, listen', async (t) => {
  const { system, host, a } = await running(t);
  await t.rejects(a.connect(1023), { code: 'ERR_MK_INSTANCE_NOT_ACTIVE', message: /start\(\) it first/ });
  await a.start();
  await t.rejects(a.connect(-1), { code: 'ERR_MK_INVALID_SPEC' });
  await t.rejects(a.connect(5000), { code: 'ERR_MK_CHANNEL_REFUSED', message: /nothing listens on vsock port 5000 in instance "a"/ });
  const agent = await a.connect(1023, { localPort: 1000 });
  t.equal(agent.remotePort, 1023);
  t.equal(agent.localPort, 1000);
  agent.destroy();
  await system.hang(a.id);
  await t.rejects(a.connect(1023, { timeoutMs: 50 }), { code: 'ERR_MK_CHANNEL_TIMEOUT', message: /may hang/ });
  await t.rejects(a.connect(1023, { signal: AbortSignal.abort(new Error('stop')) }), { message: 'stop' });
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('stopped waiting')), 20);
  await t.rejects(a.connect(1023, { signal: controller.signal }), { message: 'stopped waiting' });
  await a.stop({ force: true, timeoutMs: 0 });
  await a.start();
  system.faults.add({ op: 'vsock.connect', times: 1, action: { errno: 'ETIMEDOUT' } });
  await t.rejects(a.connect(1023), { code: 'ERR_MK_CHANNEL_TIMEOUT' }, 'the kernel\'s own connect timeout');
  system.faults.add({ op: 'vsock.connect', times: 1, action: { errno: 'EIO' } });
  await t.rejects(a.connect(1023), { code: 'EIO' });
  const server = await host.listen(7000);
  t.equal(server.port, 7000);
  await server.close();
  const backlog = await host.listen(7001, { backlog: 4 });
  await backlog.close();
});

t.test('execFile through the kerf-init agent', async (t) => {
  const { system, a } = await running(t);
  await t.rejects(a.execFile(['uname']), { code: 'ERR_MK_INSTANCE_NOT_ACTIVE' });
  await a.start();
  const r = await a.execFile(['uname', '-a']);
  t.equal(r.code, 0);
  t.match(r.stdout.toString(), /^Linux a /);
  t.ok(r.pid > 0);
  const missing = await a.execFile(['no-such-command']);
  t.same([missing.code, missing.pid], [127, 0], 'not found: 127, as a shell says');
  t.match(missing.stderr.toString(), /No such file or directory\n$/);
  const piped = await a.execFile(['cat'], { stdin: Readable.from([Buffer.from('through stdin')]), env: { X: '1' }, cwd: '/tmp', uid: 0, gid: 0 });
  t.equal(piped.stdout.toString(), 'through stdin');
  const tty = await a.execFile(['echo', 'on a tty'], { tty: { rows: 24, cols: 80 } });
  t.match(tty.stdout.toString(), /on a tty/);
  await t.rejects(a.execFile([]), { code: 'ERR_MK_INVALID_SPEC' });
  await t.rejects(a.execFile(['x'], { signal: AbortSignal.abort(new Error('no')) }), { message: 'no' });
  // the first reserved port is taken: the next one down is used
  const holder = await a.connect(1023, { localPort: 1023 });
  t.equal((await a.execFile(['true'])).code, 0, 'from port 1022');
  holder.destroy();
  system.faults.add({ op: 'vsock.connect', times: 1, action: { errno: 'ECONNRESET' } });
  await t.rejects(a.execFile(['true']), { code: 'ERR_MK_EXEC_NO_AGENT', message: /kerf 0.1's kerf-init has none/ });
  system.faults.add({ op: 'vsock.connect', times: 512, action: { errno: 'EADDRINUSE' } });
  await t.rejects(a.execFile(['true']), { code: 'ERR_MK_RESOURCES', message: /no free local vsock port in 512..1023/ });
  system.faults.add({ op: 'vsock.connect', times: 1, action: { errno: 'EIO' } });
  await t.rejects(a.execFile(['true']), { code: 'EIO' });
  const controller = new AbortController();
  const slow = a.execFile(['sleep', '10'], { signal: controller.signal });
  setTimeout(() => controller.abort(new Error('enough')), 50);
  await t.rejects(slow, { message: 'enough' }, 'an abort ends the command');
});

t.test('exec needs root: without it the reserved ports cannot be bound', async (t) => {
  const getuid = process.getuid;
  process.getuid = () => 1000;
  let inst: Instance;
  try {
    ({ a: inst } = await running(t));
  } finally {
    process.getuid = getuid;
  }
  await inst.start();
  await t.rejects(inst.execFile(['true']), { code: 'ERR_MK_PERMISSION', message: /exec needs root/ });
});

t.test('a probe that someone answers even on the probe port counts as alive; a console at end of file ends', async (t) => {
  const { system, a } = await running(t);
  await a.start();
  const accepted = new PassThrough() as unknown as VsockStream;
  const listening = wrap(system, { vsockConnect: async () => accepted });
  const b = await (await Host.open({ system: listening, lockPath })).instance('a');
  t.equal(await b.probe(), 'alive');
  t.ok(accepted.destroyed, 'the connection was closed');
  const eof = wrap(system, {
    openDevice: async (p: string) => {
      const h = await system.openDevice(p);
      return { write: (d: Uint8Array) => h.write(d), read: async () => Buffer.alloc(0), close: () => h.close() };
    },
  });
  const c = await (await Host.open({ system: eof, lockPath })).instance('a');
  const tty = await c.console();
  tty.resume();
  await once(tty, 'end');
  t.pass('end of file ends the console stream');
  const r = await a.execFile(['true']);
  t.equal(r.signal, undefined, 'not killed by a signal');
});
