/**
 * The exec client against the simulated kerf-init agent, over simulated vsock connections
 * (a fake core drives the instance), plus raw-frame checks of the agent's side of the protocol.
 */
import t from 'tap';
import { Duplex, Readable } from 'node:stream';
import { ABORT_SIGNAL, DEFAULT_PATH, ExecLostConnectionError, ExecRemoteError, execOverStream } from '../../lib/exec/client';
import type { ExecControl, ExecRequest } from '../../lib/exec/client';
import {
  FrameDecoder,
  FrameType,
  STDIN_WINDOW,
  decodeError,
  decodeExit,
  decodeStdinAck,
  encodeExit,
  encodeFrame,
  encodeOpen,
  encodeResize,
  encodeSignal,
  encodeStarted,
  encodeStdinAck,
} from '../../lib/exec/protocol';
import { isSystemError } from '../../lib/errors';
import type { VsockStream } from '../../lib/system/system';
import { FakeCore, rawSession, tick } from '../simulated/channels-fixture';

/** kerf's connect_agent: bind a reserved port from 1023 down, skipping ports in use. */
async function connectAgent(core: FakeCore, id = 1): Promise<VsockStream> {
  for (let port = 1023; port >= 512; port--) {
    try {
      return await core.channels.vsockConnect({ cid: id, port: 1023, localPort: port });
    } catch (e) {
      if (!isSystemError(e, 'EADDRINUSE')) throw e;
    }
  }
  throw new Error('no free reserved port');
}

function running(): FakeCore {
  const core = new FakeCore();
  core.create(1, 'web', 'loaded');
  core.start(1);
  return core;
}

async function run(core: FakeCore, request: ExecRequest) {
  return execOverStream(await connectAgent(core), request);
}

/** Counts stdin in flight between the client and the agent. */
function creditSpy(inner: Duplex) {
  const stats = { inFlight: 0, maxInFlight: 0, signals: [] as number[] };
  const fromClient = new FrameDecoder();
  const fromAgent = new FrameDecoder();
  const proxy = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      for (const f of fromClient.push(chunk)) {
        if (f.type === FrameType.STDIN) stats.maxInFlight = Math.max(stats.maxInFlight, (stats.inFlight += f.payload.length));
        if (f.type === FrameType.SIGNAL) stats.signals.push(f.payload.readUInt32LE(0));
      }
      inner.write(chunk, cb);
    },
    final(cb) {
      inner.end();
      cb();
    },
    read() {},
  });
  inner.on('data', (chunk: Buffer) => {
    for (const f of fromAgent.push(chunk)) if (f.type === FrameType.STDIN_ACK) stats.inFlight -= decodeStdinAck(f.payload);
    proxy.push(chunk);
  });
  inner.on('end', () => proxy.push(null));
  return { proxy, stats };
}

t.test('echo: STARTED, output, EXIT 0', async (t) => {
  const core = running();
  let started = -1;
  const result = await run(core, { argv: ['echo', 'hello', 'world'], onStarted: (pid) => (started = pid) });
  t.same(result, { exitCode: 0, signaled: false, stdout: Buffer.from('hello world\n'), stderr: Buffer.alloc(0), pid: 100 });
  t.equal(started, 100);
  t.equal((await run(core, { argv: ['echo', '-n', 'x'] })).pid, 101, 'pids count up per instance');
  core.start(1);
  t.equal((await run(core, { argv: ['true'] })).pid, 100, 'and start over after a reboot');
});

t.test('exit codes', async (t) => {
  const core = running();
  t.equal((await run(core, { argv: ['false'] })).exitCode, 1);
  t.equal((await run(core, { argv: ['sh', '-c', 'exit 3'] })).exitCode, 3);
  t.equal((await run(core, { argv: ['sh', '-c', 'exit 300'] })).exitCode, 44, 'an exit status is 8 bits');
  t.equal((await run(core, { argv: ['sh', '-c', 'false; exit'] })).exitCode, 1, 'exit alone keeps the last status');
  const r = await run(core, { argv: ['sh', '-c', 'nope'] });
  t.same([r.exitCode, r.stderr.toString()], [127, 'sh: nope: not found\n']);
  const d = await run(core, { argv: ['sh', '-c', '/bin'] });
  t.same([d.exitCode, d.stderr.toString()], [126, 'sh: /bin: Permission denied\n']);
  t.equal((await run(core, { argv: ['sh', '-c'] })).exitCode, 2);
});

t.test('ERROR frames become ExecRemoteError with kerf exit codes', async (t) => {
  const core = running();
  const notFound = await t.rejects(run(core, { argv: ['nope'] }), ExecRemoteError);
  t.match(notFound, { code: 'ERR_MK_EXEC_REMOTE', errno: 2, errnoCode: 'ENOENT', exitCode: 127, name: 'ExecRemoteError' });
  t.match(String(notFound), 'exec nope: No such file or directory');
  await t.rejects(run(core, { argv: ['/bin'] }), { errnoCode: 'EACCES', exitCode: 126, message: /exec \/bin: Permission denied/ });
  await t.rejects(run(core, { argv: ['true'], cwd: '/nowhere' }), { errnoCode: 'ENOENT', message: /chdir \/nowhere: No such file or directory/ });
  await t.rejects(run(core, { argv: ['echo'], env: { PATH: '/nonexistent' } }), { errnoCode: 'ENOENT', message: /exec echo/ }, 'execvp searches the PATH sent');
  t.equal((await run(core, { argv: ['/bin/echo', 'abs'] })).stdout.toString(), 'abs\n');
  t.equal((await run(core, { argv: ['./echo', 'rel'], cwd: '/usr/bin' })).stdout.toString(), 'rel\n');
  t.equal((await run(core, { argv: ['echo', 'dot'], cwd: '/bin', env: { PATH: ':' } })).stdout.toString(), 'dot\n', 'an empty PATH entry is the cwd');
});

t.test('cat of 1 MiB through the 64 KiB credit window', async (t) => {
  const core = running();
  const input = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < input.length; i++) input[i] = (i * 31 + 7) & 0xff;
  const { proxy, stats } = creditSpy(await connectAgent(core));
  const result = await execOverStream(proxy, { argv: ['cat'], stdin: input });
  t.equal(result.exitCode, 0);
  t.ok(result.stdout.equals(input), 'stdout equals stdin');
  t.ok(stats.maxInFlight <= STDIN_WINDOW, `never more than 64 KiB unacknowledged (max ${stats.maxInFlight})`);
  t.ok(stats.maxInFlight > 0);
  t.equal(stats.inFlight, 0, 'every byte acknowledged');
  const streamed = await run(core, { argv: ['cat', '-'], stdin: Readable.from([Buffer.from('ab'), 'cd', new Uint8Array([0x65])]) });
  t.equal(streamed.stdout.toString(), 'abcde', 'a Readable of buffers and strings');
});

t.test('stdin the command never reads: acknowledged or abandoned, never stuck', async (t) => {
  const core = running();
  const result = await run(core, { argv: ['true'], stdin: Buffer.alloc(200 * 1024) });
  t.equal(result.exitCode, 0, 'EXIT ends the session while stdin waits for credit');
  const endless = new Readable({
    read() {
      setTimeout(() => this.push(Buffer.from('x')), 5);
    },
  });
  t.equal((await run(core, { argv: ['true'], stdin: endless })).exitCode, 0, 'EXIT ends the session while stdin keeps coming');
  await tick(20);
  t.notOk(endless.destroyed, 'the caller keeps its stdin stream');
  t.ok(endless.isPaused() && endless.listenerCount('data') === 0, 'and it is let go: paused, no listener left');
  // the caller's to end: left alone, it would fill its 16 KiB buffer a byte per 5 ms (80 s)
  endless.destroy();
  const idle = new Readable({ read() {} });
  t.equal((await run(core, { argv: ['true'], stdin: idle })).exitCode, 0);
  t.ok(idle.isPaused() && idle.listenerCount('data') === 0 && idle.listenerCount('end') === 0, 'a stream with nothing to read holds no pending read');
  const text = Readable.from(['ab', 'c'], { objectMode: false });
  t.equal((await run(core, { argv: ['cat'], stdin: text })).stdout.toString(), 'abc', 'string chunks');
  const failing = new Readable({ read() { this.destroy(new Error('stdin broke')); } });
  await t.rejects(run(core, { argv: ['cat'], stdin: failing }), { message: 'stdin broke' }, "the stdin stream's error");
  idle.on('error', () => {}); // the caller's stream, the caller's errors
  idle.destroy(new Error('late failure'));
  await tick(); // the session is over: of no consequence to it
  const raw = await rawSession(core);
  raw.open(['sleep', '0.1']); // no STDIN flag: stdin is /dev/null
  await raw.until(() => raw.types().includes(FrameType.STARTED));
  raw.send(FrameType.STDIN, Buffer.from('0123456789'));
  await raw.until(() => raw.types().includes(FrameType.STDIN_ACK));
  t.equal(decodeStdinAck(raw.frames.find((f) => f.type === FrameType.STDIN_ACK)!.payload), 10, 'acknowledged at once');
  raw.send(FrameType.STDIN_EOF);
  await raw.until(() => raw.ended);
  t.same(decodeExit(raw.frames.at(-1)!.payload), { signaled: false, code: 0 });
});

t.test("the agent acknowledges what the command's pipe takes, and hangs up on a client that overruns the window", async (t) => {
  const core = running();
  const raw = await rawSession(core);
  const acks = () => raw.frames.filter((f) => f.type === FrameType.STDIN_ACK).map((f) => decodeStdinAck(f.payload));
  raw.open(['sleep', '5'], 2); // a stdin pipe that nobody reads
  await raw.until(() => raw.types().includes(FrameType.STARTED));
  raw.send(FrameType.STDIN, Buffer.alloc(100));
  await raw.until(() => acks().length === 1);
  raw.send(FrameType.STDIN, Buffer.alloc(STDIN_WINDOW));
  await raw.until(() => acks().length === 2);
  t.same(acks(), [100, STDIN_WINDOW - 100], 'acknowledged as written into the 64 KiB pipe, though the command never reads');
  raw.send(FrameType.STDIN, Buffer.alloc(STDIN_WINDOW - 100));
  await tick(20);
  t.same([acks().length, raw.ended], [2, false], 'the pipe is full: the rest waits in the agent, unacknowledged');
  raw.send(FrameType.STDIN, Buffer.alloc(1));
  await raw.until(() => raw.ended);
  t.notOk(raw.types().includes(FrameType.EXIT), 'one byte over the window: closed without EXIT');
});

/**
 * A stand-in kerf-init on loopback vsock that handles stdin as one version of kerf's
 * `src/init/session.c` does. '81f7f263' never sends STDIN_ACK (its proto.h has no such frame
 * type; it keeps one STDIN frame and stops reading the socket until the command took it);
 * 'f8698f9e' acknowledges each STDIN frame as written into the command's pipe (at once for the
 * first 64 KiB; `ackDelayMs` later for the rest, a command that reads slowly). At STDIN_EOF it
 * writes the stdin byte count on stdout and exits 0. `greeting` is output sent right after STARTED.
 */
async function fakeAgent(core: FakeCore, version: '81f7f263' | 'f8698f9e', options: { ackDelayMs?: number; greeting?: string } = {}) {
  const port = 5000 + fakeAgent.count++;
  const server = await core.channels.vsockListen({ port, multikernel: false });
  const client = await core.channels.vsockConnect({ cid: 1, port, multikernel: false });
  const agent = await server.accept();
  const decoder = new FrameDecoder();
  let received = 0;
  let acked = 0;
  agent.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) {
      if (frame.type === FrameType.OPEN) {
        agent.write(encodeFrame(FrameType.STARTED, encodeStarted(42)));
        if (options.greeting) agent.write(encodeFrame(FrameType.STDOUT, Buffer.from(options.greeting)));
      } else if (frame.type === FrameType.STDIN) {
        received += frame.payload.length;
        if (version === '81f7f263') continue;
        const ack = encodeFrame(FrameType.STDIN_ACK, encodeStdinAck(frame.payload.length));
        if (acked >= STDIN_WINDOW) setTimeout(() => agent.write(ack), options.ackDelayMs ?? 0);
        else agent.write(ack);
        acked += frame.payload.length;
      } else if (frame.type === FrameType.STDIN_EOF) {
        agent.write(encodeFrame(FrameType.STDOUT, Buffer.from(String(received))));
        agent.end(encodeFrame(FrameType.EXIT, encodeExit({ signaled: false, code: 0 })));
      }
    }
  });
  agent.on('error', () => {});
  return client;
}
fakeAgent.count = 0;

t.test('an agent without STDIN_ACK (session.c@81f7f263): 64 KiB of stdin work, more fails with ERR_MK_EXEC_OLD_AGENT', { timeout: 10000 }, async (t) => {
  const core = new FakeCore();
  const fits = await execOverStream(await fakeAgent(core, '81f7f263'), { argv: ['cat'], stdin: Buffer.alloc(STDIN_WINDOW) });
  t.same([fits.exitCode, fits.stdout.toString()], [0, String(STDIN_WINDOW)], 'no credit needed');
  const started = Date.now();
  const old = await t.rejects(execOverStream(await fakeAgent(core, '81f7f263'), { argv: ['cat'], stdin: Buffer.alloc(STDIN_WINDOW + 1), stdinAckTimeoutMs: 100 }), {
    name: 'MultikernelError',
    code: 'ERR_MK_EXEC_OLD_AGENT',
    message: /acknowledged none of the first 65536 bytes of stdin within 100 ms/,
    details: { stdinAckTimeoutMs: 100 },
  });
  t.ok(Date.now() - started >= 100, 'after stdinAckTimeoutMs');
  t.match((old as Error).message, /older kerf-init whose exec agent never sends STDIN_ACK .*newer kerf-init, or send at most 64 KiB/);

  // Reading paused by the caller: an acknowledgement may wait unread, so the time does not count.
  let control: ExecControl | undefined;
  const pausedAt = Date.now();
  setTimeout(() => control!.resumeOutput(), 300);
  await t.rejects(
    execOverStream(await fakeAgent(core, '81f7f263', { greeting: 'hi' }), {
      argv: ['cat'],
      stdin: Buffer.alloc(STDIN_WINDOW + 1),
      stdinAckTimeoutMs: 50,
      onStdout: () => false,
      onControl: (c) => (control = c),
    }),
    { code: 'ERR_MK_EXEC_OLD_AGENT' },
  );
  t.ok(Date.now() - pausedAt >= 300, 'not before the caller read again');

  const controller = new AbortController();
  const waiting = execOverStream(await fakeAgent(core, '81f7f263'), { argv: ['cat'], stdin: Buffer.alloc(STDIN_WINDOW + 1), signal: controller.signal });
  let settled = false;
  waiting.catch(() => (settled = true));
  await tick(300);
  t.notOk(settled, 'the default wait is longer');
  controller.abort(new Error('enough'));
  await t.rejects(waiting, { message: 'enough' });
});

t.test('an agent with STDIN_ACK (session.c@f8698f9e) is never taken for an old one', async (t) => {
  const core = new FakeCore();
  const input = Buffer.alloc(300 * 1024);
  const slow = await execOverStream(await fakeAgent(core, 'f8698f9e', { ackDelayMs: 150 }), { argv: ['cat'], stdin: input, stdinAckTimeoutMs: 50 });
  t.same([slow.exitCode, slow.stdout.toString()], [0, String(input.length)], 'after the first acknowledgement, a slow one is a slow command');
  const sim = running();
  const data = Buffer.alloc(200 * 1024, 'z');
  const late = await run(sim, { argv: ['sh', '-c', 'sleep 0.2; cat'], stdin: data, stdinAckTimeoutMs: 50 });
  t.ok(late.stdout.equals(data), 'the simulated agent acknowledges the first 64 KiB at once, while the command sleeps');
});

t.test('signals: SIGNAL frames, abort, ignored signals', async (t) => {
  const core = running();
  const raw = await rawSession(core);
  raw.open(['sleep', '5']);
  await raw.until(() => raw.types().includes(FrameType.STARTED));
  raw.send(FrameType.SIGNAL, encodeSignal(17)); // SIGCHLD: ignored by default
  raw.send(FrameType.SIGNAL, encodeSignal(9));
  await raw.until(() => raw.ended);
  t.same(decodeExit(raw.frames.at(-1)!.payload), { signaled: true, code: 9 });

  const { proxy, stats } = creditSpy(await connectAgent(core));
  const controller = new AbortController();
  const pending = execOverStream(proxy, { argv: ['sleep', '5'], signal: controller.signal, onStarted: () => controller.abort(new Error('user abort')) });
  await t.rejects(pending, { message: 'user abort' });
  await tick(20);
  t.same(stats.signals, [ABORT_SIGNAL], 'SIGTERM went to the command first');

  const stalled = running();
  stalled.faults.add({ op: 'agent.exec', action: { stallMs: 50 } });
  const spy2 = creditSpy(await connectAgent(stalled));
  const early = new AbortController();
  const before = execOverStream(spy2.proxy, { argv: ['sleep', '5'], signal: early.signal });
  await tick(10);
  early.abort(new Error('too slow'));
  await t.rejects(before, { message: 'too slow' });
  t.same(spy2.stats.signals, [], 'no SIGNAL before STARTED');
  await t.rejects(run(core, { argv: ['true'], signal: AbortSignal.abort(new Error('never')) }), { message: 'never' });

  const stdinKill = await rawSession(core, 999);
  stdinKill.open(['cat'], 2);
  await stdinKill.until(() => stdinKill.types().includes(FrameType.STARTED));
  stdinKill.send(FrameType.SIGNAL, encodeSignal(15));
  await stdinKill.until(() => stdinKill.ended);
  t.same(decodeExit(stdinKill.frames.at(-1)!.payload), { signaled: true, code: 15 }, 'a command waiting on stdin dies too');
  const result = await run(core, { argv: ['sh', '-c', 'sleep 0'] });
  t.same([result.exitCode, result.signaled, result.signal], [0, false, undefined]);
});

t.test('a stopped instance is silence; lost connection: agent dies, untrusted port', async (t) => {
  const core = running();
  const controller = new AbortController();
  const pending = run(core, { argv: ['sleep', '5'], signal: controller.signal, onStarted: () => core.stop(1) });
  await tick(50);
  controller.abort(new Error('no answer'));
  await t.rejects(pending, { message: 'no answer' }, 'a stopped spawn sends nothing: only the caller\'s timeout ends the wait');
  core.start(1);
  core.faults.add({ op: 'agent.exec', id: 1, times: 1, action: { halfway: true } });
  const lost = await t.rejects(run(core, { argv: ['true'] }), ExecLostConnectionError);
  t.match(lost, { code: 'ERR_MK_EXEC_LOST_CONNECTION', name: 'ExecLostConnectionError', message: /before the command exited/ });
  const untrusted = await core.channels.vsockConnect({ cid: 1, port: 1023 });
  t.ok(untrusted.localPort > 1023);
  await t.rejects(execOverStream(untrusted, { argv: ['true'] }), ExecLostConnectionError, 'closed without a frame');
  core.faults.add({ op: 'agent.exec', id: 1, times: 1, action: { errno: 'ENOMEM' } });
  await t.rejects(run(core, { argv: ['true'] }), { errnoCode: 'ENOMEM', exitCode: 126, message: /exec true: Not enough memory/ });
});

t.test('a client that meets a broken agent', async (t) => {
  const core = new FakeCore();
  const server = await core.channels.vsockListen({ port: 4000, multikernel: false });
  const fake = async (reply: Buffer) => {
    const client = await core.channels.vsockConnect({ cid: 1, port: 4000, multikernel: false });
    const agent = await server.accept();
    agent.on('data', () => {});
    agent.write(reply);
    return execOverStream(client, { argv: ['x'] });
  };
  const oversize = encodeFrame(FrameType.STDOUT);
  oversize.writeUInt32LE(70000, 0);
  const e = await t.rejects(fake(oversize), ExecLostConnectionError);
  t.match((e as Error).cause, { reason: 'oversize' });
  const reserved = encodeFrame(FrameType.STDOUT, Buffer.from('r'));
  reserved.writeUInt16LE(7, 6);
  const tolerated = await fake(Buffer.concat([reserved, encodeFrame(FrameType.EXIT, Buffer.from([0, 0]))]));
  t.equal(tolerated.stdout.toString(), 'r', "a reserved field that is not 0 is ignored, as kerf's client does (protocol.py read_frame)");
  await t.rejects(fake(encodeFrame(FrameType.STARTED, Buffer.alloc(2))), { message: /broke the protocol/ });
  await t.rejects(fake(encodeFrame(FrameType.ERROR, Buffer.alloc(1))), { message: /broke the protocol/ });
  const ok = await fake(Buffer.concat([encodeFrame(99), encodeFrame(FrameType.EXIT, Buffer.from([0, 5])), encodeFrame(FrameType.STDOUT, Buffer.from('late'))]));
  t.same([ok.exitCode, ok.pid, ok.stdout.length], [5, -1, 0], 'unknown frame types are ignored, nothing counts after EXIT');
  const killed = await fake(encodeFrame(FrameType.EXIT, Buffer.from([1, 9])));
  t.same([killed.exitCode, killed.signaled, killed.signal], [137, true, 9], 'signaled: 128 + signal');
  const silent = await core.channels.vsockConnect({ cid: 1, port: 4000, multikernel: false });
  const quitter = await server.accept();
  quitter.on('data', () => {});
  const early = execOverStream(silent, { argv: ['x'] });
  quitter.end();
  await t.rejects(early, { message: /lost before the command started/ });
  const lonely = await core.channels.vsockConnect({ cid: 1, port: 4000, multikernel: false });
  await t.rejects(execOverStream(lonely, { argv: [] }), RangeError, 'an OPEN that cannot be encoded');
  (await server.accept()).destroy();
  const client = await core.channels.vsockConnect({ cid: 1, port: 4000, multikernel: false });
  const agent = await server.accept();
  const pending = execOverStream(client, { argv: ['x'] });
  client.destroy(new Error('boom'));
  await t.rejects(pending, { message: /connection to the instance lost \(boom\)/ });
  agent.destroy();
  const failing = new Readable({
    read() {
      this.destroy(new Error('stdin broke'));
    },
  });
  const c2 = await core.channels.vsockConnect({ cid: 1, port: 4000, multikernel: false });
  const a2 = await server.accept();
  a2.on('data', () => {});
  a2.write(encodeFrame(FrameType.STARTED, Buffer.alloc(4)));
  await t.rejects(execOverStream(c2, { argv: ['x'], stdin: failing }), { message: 'stdin broke' });
  await core.channels.close();
});

t.test('commands and what they report', async (t) => {
  const core = running();
  const out = async (request: ExecRequest) => {
    const r = await run(core, request);
    return [r.exitCode, r.stdout.toString(), r.stderr.toString()];
  };
  t.same(await out({ argv: ['uname', '-a'] }), [0, `Linux web 7.0.0-mk2 #1 SMP PREEMPT_DYNAMIC ${{ arm64: 'aarch64', x64: 'x86_64' }[process.arch as 'x64']} GNU/Linux\n`, '']);
  t.same(await out({ argv: ['uname'] }), [0, 'Linux\n', '']);
  t.same(await out({ argv: ['uname', '-n', '-r'] }), [0, 'web 7.0.0-mk2\n', '']);
  t.same(await out({ argv: ['uname', '-x'] }), [1, '', "uname: invalid option '-x'\n"]);
  t.same(await out({ argv: ['cat', '/proc/cmdline', '/etc/hostname', 'version'], cwd: '/proc' }), [0, 'console=mktty0 rdinit=/init\nweb\nLinux version 7.0.0-mk2 (multikernel simulator) #1 SMP PREEMPT_DYNAMIC\n', '']);
  t.same(await out({ argv: ['cat', '/missing', '/tmp'] }), [1, '', 'cat: /missing: No such file or directory\ncat: /tmp: Is a directory\n']);
  t.same(await out({ argv: ['pwd'], cwd: 'tmp' }), [0, '/tmp\n', ''], 'a relative cwd is taken from /');
  t.same(await out({ argv: ['env'], env: { TERM: 'xterm' } }), [0, 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOME=/root\nTERM=xterm\n', '']);
  t.same(await out({ argv: ['id'] }), [0, 'uid=0(root) gid=0(root) groups=0(root)\n', '']);
  t.same(await out({ argv: ['id'], uid: 1000, gid: 100, groups: [100, 4] }), [0, 'uid=1000 gid=100 groups=100,4\n', '']);
  t.same(await out({ argv: ['id'], gid: 5 }), [0, 'uid=0(root) gid=5 groups=5\n', ''], 'gid alone: uid defaults to 0');
  t.same(await out({ argv: ['stty', 'size'], tty: { rows: 30, cols: 100 } }), [0, '30 100\r\n', ''], 'a pty translates newlines');
  t.same(await out({ argv: ['stty', 'size'] }), [1, '', "stty: 'standard input': Inappropriate ioctl for device\n"]);
  t.same(await out({ argv: ['stty', 'raw'] }), [1, '', "stty: invalid argument 'raw'\n"]);
  t.same(await out({ argv: ['cat', '/missing'], tty: { rows: 1, cols: 1 } }), [1, 'cat: /missing: No such file or directory\r\n', ''], 'a pty merges stderr into stdout');
  t.same(await out({ argv: ['sleep'] }), [1, '', 'sleep: missing operand\n']);
  t.same(await out({ argv: ['sleep', 'abc'] }), [1, '', "sleep: invalid time interval 'abc'\n"]);
  const [code, text] = await out({ argv: ['sh', '-c', "echo 'a  b' \"c $$\" x$?; false; echo $?"] });
  t.equal(code, 0);
  t.match(text, /^a {2}b c \d+ x0\n1\n$/, 'quotes, $$ and $?');
  t.same(await out({ argv: ['sh'], stdin: Buffer.from('echo a; echo b\n\nexit 4\necho never\n') }), [4, 'a\nb\n', '']);
  const chunks: string[] = [];
  const errs: string[] = [];
  const streamed = await run(core, { argv: ['sh', '-c', 'echo out; cat /missing'], onStdout: (c) => void chunks.push(c.toString()), onStderr: (c) => void errs.push(c.toString()) });
  t.same([streamed.stdout.length, streamed.stderr.length, chunks, errs], [0, 0, ['out\n'], ['cat: /missing: No such file or directory\n']]);
  // the environment, as kerf's build_env makes it
  const envOf = async (request: Omit<ExecRequest, 'argv'>) => String((await out({ argv: ['env'], ...request }))[1]).replaceAll('\r\n', '\n');
  t.equal(await envOf({ env: [['B', '1'], ['10', 'x'], ['A', '2']] }), `PATH=${DEFAULT_PATH}\nHOME=/root\nB=1\n10=x\nA=2\n`, 'pairs keep their order');
  t.equal(await envOf({ env: { B: '1', 10: 'x' } }), `PATH=${DEFAULT_PATH}\nHOME=/root\n10=x\nB=1\n`, 'an object lists integer-like keys first');
  t.equal(await envOf({ env: [['HOME', '/h'], ['PATH', '/bin:/usr/bin']] }), 'PATH=/bin:/usr/bin\nHOME=/h\n', 'a key given again keeps its place');
  t.equal(await envOf({ uid: 1000 }), `PATH=${DEFAULT_PATH}\nHOME=/\n`, 'HOME follows the user: / without its passwd entry');
  const term = process.env.TERM;
  delete process.env.TERM;
  t.match(await envOf({ tty: { rows: 1, cols: 80 } }), /^TERM=xterm$/m, 'a tty gets TERM: xterm by default');
  process.env.TERM = 'vt100';
  t.match(await envOf({ tty: { rows: 1, cols: 80 } }), /^TERM=vt100$/m, 'or the caller\'s own');
  if (term === undefined) delete process.env.TERM;
  else process.env.TERM = term;
  for (const bad of [[['', 'x']], [['A=B', 'x']], [['A\0', 'x']], [['A', 1]], { '': 'x' }]) {
    await t.rejects(run(core, { argv: ['env'], env: bad as never }), { code: 'ERR_MK_INVALID_SPEC' }, JSON.stringify(bad));
  }
  // a consumer that says "not now": reading pauses until resumeOutput
  let control: ExecControl | undefined;
  const paused: string[] = [];
  const slow = await run(core, {
    argv: ['sh', '-c', 'cat /missing; echo after'],
    onControl: (c) => (control = c),
    onStderr: (c) => {
      paused.push(c.toString());
      setTimeout(() => control!.resumeOutput(), 20);
      return false;
    },
    onStdout: (c) => {
      paused.push(c.toString());
      return true;
    },
  });
  t.same([slow.exitCode, paused], [0, ['cat: /missing: No such file or directory\n', 'after\n']]);
  control!.resumeOutput();
  control!.resize({ rows: 1, cols: 1 });
  control!.signal(9);
  t.pass('controls after the end do nothing');
});

t.test('agent protocol rules (session.c)', async (t) => {
  const core = running();
  const errorOf = (raw: Awaited<ReturnType<typeof rawSession>>) => decodeError(raw.frames.find((f) => f.type === FrameType.ERROR)!.payload);

  const v2 = await rawSession(core, 1000);
  const open = encodeOpen({ flags: 0, uid: 0, gid: 0, groups: [], rows: 0, cols: 0, cwd: '/', argv: ['true'], env: [] });
  open.writeUInt16LE(2, 0);
  v2.send(FrameType.OPEN, open);
  await v2.until(() => v2.ended);
  t.same(errorOf(v2), { errno: 71, message: 'unsupported protocol version' });

  const bad = await rawSession(core, 1001);
  bad.write(Buffer.concat([encodeFrame(FrameType.OPEN, Buffer.alloc(10)), encodeFrame(FrameType.STDIN_EOF)]));
  await bad.until(() => bad.ended);
  t.same(errorOf(bad), { errno: 22, message: 'malformed OPEN request' });

  const notOpen = await rawSession(core, 1002);
  notOpen.write(Buffer.concat([encodeFrame(FrameType.STDIN_EOF), encodeFrame(FrameType.OPEN)]));
  await notOpen.until(() => notOpen.ended);
  t.same(notOpen.frames, [], 'a first frame other than OPEN: closed without a word');

  const oversize = await rawSession(core, 1003);
  const header = Buffer.alloc(8);
  header.writeUInt32LE(70000, 0);
  oversize.write(header);
  await oversize.until(() => oversize.ended);
  t.same(oversize.frames, []);

  const noEnv = await rawSession(core, 1004);
  noEnv.open(['echo', 'default path'], 0, { env: [] });
  await noEnv.until(() => noEnv.ended);
  t.equal(noEnv.frames.find((f) => f.type === FrameType.STDOUT)!.payload.toString(), 'default path\n', 'execvp falls back to /bin:/usr/bin');

  const resize = await rawSession(core, 1005);
  resize.open(['sh', '-c', 'sleep 0.05; stty size'], 1, { rows: 24, cols: 80 });
  await resize.until(() => resize.types().includes(FrameType.STARTED));
  resize.send(FrameType.RESIZE, encodeResize({ rows: 50, cols: 132 }));
  await resize.until(() => resize.ended);
  t.equal(resize.frames.find((f) => f.type === FrameType.STDOUT)!.payload.toString(), '50 132\r\n');

  const noTty = await rawSession(core, 1006);
  noTty.open(['sleep', '0.02']);
  await noTty.until(() => noTty.types().includes(FrameType.STARTED));
  noTty.send(FrameType.RESIZE, encodeResize({ rows: 1, cols: 1 }));
  await noTty.until(() => noTty.ended);
  t.same(decodeExit(noTty.frames.at(-1)!.payload), { signaled: false, code: 0 }, 'RESIZE without a pty is ignored');

  let port = 600;
  for (const [label, type, payload] of [
    ['a RESIZE of the wrong size', FrameType.RESIZE, Buffer.alloc(3)],
    ['an unknown frame type', 42, undefined],
    ['a second OPEN', FrameType.OPEN, undefined],
  ] as const) {
    const s = await rawSession(core, port++);
    s.open(['sleep', '5']);
    await s.until(() => s.types().includes(FrameType.STARTED));
    s.send(type, payload);
    await s.until(() => s.ended);
    t.notOk(s.types().includes(FrameType.EXIT), `${label}: hang up`);
    await tick();
  }

  core.faults.add({ op: 'agent.exec', times: 1, action: { stallMs: 30 } });
  const early = await rawSession(core, 1009);
  early.open(['cat'], 2);
  early.send(FrameType.STDIN, Buffer.from('typed ahead'));
  early.send(FrameType.STDIN_EOF);
  await early.until(() => early.ended);
  t.equal(early.frames.find((f) => f.type === FrameType.STDOUT)!.payload.toString(), 'typed ahead', 'frames sent before STARTED are kept');

  core.faults.add({ op: 'agent.exec', times: 1, action: { stallMs: 30 } });
  const earlyBad = await rawSession(core, 1010);
  earlyBad.open(['sleep', '5']);
  earlyBad.send(FrameType.RESIZE, Buffer.alloc(1));
  await earlyBad.until(() => earlyBad.ended);
  t.notOk(earlyBad.types().includes(FrameType.EXIT), 'a bad frame sent before STARTED hangs up once started');

  core.faults.add({ op: 'agent.exec', times: 1, action: { stallMs: 30 } });
  const gone = await rawSession(core, 1011);
  gone.open(['true']);
  await tick(5);
  core.stop(1);
  await tick(50);
  t.same(gone.frames, [], 'the host went away while the agent was starting the command');
});
