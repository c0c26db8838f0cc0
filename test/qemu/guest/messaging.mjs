// The library's channel and exec code over real AF_VSOCK sockets on the loopback transport
// (CID 1) inside the guest: connectChannel, listenChannel and probeLiveness (lib/channels.ts), and
// the exec client (lib/exec/client.ts, lib/exec-process.ts) against the simulated kerf-init agent
// (lib/system/simulated/agent.ts) served on a real listener on vsock port 1023. The guest runs
// as root, so the client binds a reserved local port (1023 down to 512) as instance.exec() does.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { assert, check, collect, emit, finish, lib, rejects, sleep, withTimeout } from './lib.mjs';

const { LinuxSystem } = lib('system/linux/index');
const { connectChannel, listenChannel, probeLiveness } = lib('channels');
const { ExecProcess, connectAgent, execFileOverStream } = lib('exec-process');
const { AGENT_PORT } = lib('exec/protocol');
const { serveExecSession } = lib('system/simulated/agent');
const { FaultInjector } = lib('system/simulated/faults');
const { relevantRecord } = lib('watch');

// A stock guest kernel has no multikernel vsock transport: the library addresses instance `id` as
// CID `id` on it (multikernel: true). This System sends every connect to the loopback transport's
// CID 1 and puts every listener on it; everything else goes to LinuxSystem unchanged.
const linux = new LinuxSystem();
const loopback = new Proxy(linux, {
  get(target, key) {
    if (key === 'vsockConnect') return (options) => target.vsockConnect({ ...options, cid: 1, multikernel: false });
    if (key === 'vsockListen') return (options) => target.vsockListen({ ...options, cid: 1, multikernel: false });
    const value = Reflect.get(target, key);
    return typeof value === 'function' ? value.bind(target) : value;
  },
});
/** the "instance" the library thinks it talks to (any id reaches CID 1 through `loopback`) */
const ID = 7;
const NAME = 'loopback';

// --- the simulated kerf-init agent on a real listener ---------------------------------------
let nextPid = 100;
/** agent-side streams by the client's port, so a check can cut a session from the agent's side */
const agentSide = new Map();
const agent = await listenChannel(loopback, AGENT_PORT);
const agentInstance = { id: ID, name: NAME, status: 'active', hung: false, cmdline: '' };
const faults = new FaultInjector();
(async () => {
  for await (const s of agent) {
    agentSide.set(s.remotePort, s);
    s.on('close', () => agentSide.delete(s.remotePort));
    serveExecSession(s, { instance: agentInstance, faults, nextPid: () => ++nextPid });
  }
})().catch(() => {});

/** instance.exec() of lib/instance.ts without the status check: the agent connection, then an ExecProcess on it */
async function exec(argv, options = {}) {
  return new ExecProcess(await connectAgent(loopback, ID, NAME, options.signal), argv, options);
}
/** instance.execFile() the same way */
async function execFile(argv, options = {}) {
  return execFileOverStream(await connectAgent(loopback, ID, NAME, options.signal), argv, options);
}

// --- channels -------------------------------------------------------------------------------
await check('channel-refused', async () => {
  const t0 = Date.now();
  const e = await rejects(connectChannel(loopback, ID, NAME, 5999), 'a connect to a port nobody listens on');
  const ms = Date.now() - t0;
  assert(e.code === 'ERR_MK_CHANNEL_REFUSED', `code ${e.code}: ${e.message}`);
  assert(e.cause?.code === 'ECONNRESET' || e.cause?.code === 'ECONNREFUSED', `cause ${e.cause?.code}`);
  assert(e.details?.port === 5999 && e.details?.id === ID, `details ${JSON.stringify(e.details)}`);
  assert(ms < 1000, `the reset took ${ms} ms, not "at once"`);
  return { cause: e.cause.code, answeredMs: ms };
});

await check('channel-probe-alive', async () => {
  const t0 = Date.now();
  const liveness = await probeLiveness(loopback, ID);
  const ms = Date.now() - t0;
  assert(liveness === 'alive', `probe says ${liveness}`);
  return { liveness, answeredMs: ms };
});

// an echo server on a listenChannel listener, for the next two checks
const echo = await listenChannel(loopback, 6000);
(async () => {
  for await (const s of echo) {
    s.on('error', () => {});
    s.pipe(s);
  }
})().catch(() => {});

await check('channel-round-trip', async () => {
  const data = randomBytes(4 * 1024 * 1024);
  const t0 = Date.now();
  const c = await connectChannel(loopback, ID, NAME, 6000, { timeoutMs: 5000 });
  assert(c.remoteCid === 1 && c.remotePort === 6000, `remote ${c.remoteCid}:${c.remotePort}`);
  const back = withTimeout(collect(c), 60000, 'echo of 4 MiB');
  for (let i = 0; i < data.length; i += 256 * 1024) {
    if (!c.write(data.subarray(i, i + 256 * 1024))) await once(c, 'drain');
  }
  c.end();
  const got = await back;
  const sha = (b) => createHash('sha256').update(b).digest('hex');
  assert(got.length === data.length && sha(got) === sha(data), `echoed ${got.length} bytes, sha256 ${sha(got) === sha(data) ? 'equal' : 'differs'}`);
  return { bytes: data.length, ms: Date.now() - t0, local: `${c.localCid}:${c.localPort}` };
});

await check('channel-100-concurrent', async () => {
  const N = 100;
  const t0 = Date.now();
  const ports = await withTimeout(
    Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const s = await connectChannel(loopback, ID, NAME, 6000);
        s.end(`channel ${i}`);
        const got = (await collect(s)).toString();
        return got === `channel ${i}` ? s.localPort : -1;
      }),
    ),
    120000,
    '100 channels',
  );
  assert(ports.every((p) => p >= 0), `${ports.filter((p) => p < 0).length} channels echoed wrong data`);
  assert(new Set(ports).size === N, 'every channel has its own local port');
  return { channels: N, ms: Date.now() - t0 };
});
await echo.close();

// --- exec -----------------------------------------------------------------------------------
await check('exec-64MiB-stdin-stdout', async () => {
  const TOTAL = 64 * 1024 * 1024;
  const CHUNK = 1024 * 1024;
  const block = randomBytes(CHUNK);
  const sent = createHash('sha256');
  const received = createHash('sha256');
  const t0 = Date.now();
  const proc = await exec(['cat']);
  let receivedBytes = 0;
  let writtenBytes = 0;
  let pause;
  const done = new Promise((resolve, reject) => {
    proc.stdout.on('data', (chunk) => {
      received.update(chunk);
      receivedBytes += chunk.length;
      if (pause === undefined && receivedBytes >= 8 * 1024 * 1024) {
        // a reader that stops for 1.5 s: the output has to wait in the transport and the
        // agent, and the writer of stdin has to stop (no credit comes back while cat is stuck)
        proc.stdout.pause();
        pause = { at: writtenBytes };
        setTimeout(() => (pause.settled = writtenBytes), 500);
        setTimeout(() => {
          pause.end = writtenBytes;
          pause.buffered = proc.stdout.readableLength;
          proc.stdout.resume();
        }, 1500);
      }
    });
    proc.stdout.on('end', resolve);
    proc.exited.catch(reject);
  });
  for (let off = 0; off < TOTAL; off += CHUNK) {
    const chunk = Buffer.from(block);
    chunk.writeUInt32LE(off / CHUNK, 0); // no two chunks alike
    sent.update(chunk);
    writtenBytes += chunk.length;
    if (!proc.stdin.write(chunk)) await once(proc.stdin, 'drain');
  }
  proc.stdin.end();
  await withTimeout(done, 300000, '64 MiB through cat');
  const exit = await proc.exited;
  const ms = Date.now() - t0;
  assert(exit.code === 0 && exit.signal === undefined, `exit ${JSON.stringify(exit)}`);
  assert(receivedBytes === TOTAL, `received ${receivedBytes} of ${TOTAL}`);
  assert(received.digest('hex') === sent.digest('hex'), 'sha256 of stdout differs from stdin');
  assert(pause !== undefined, 'the reader never paused');
  // during the last second of the pause nothing more went in: the whole chain is blocked
  const movedWhileBlocked = pause.end - pause.settled;
  assert(movedWhileBlocked === 0, `the writer got ${movedWhileBlocked} more bytes accepted while the reader had stopped for a second`);
  assert(pause.buffered <= 2 * 65536 + proc.stdout.readableHighWaterMark, `stdout held ${pause.buffered} bytes during the pause`);
  return {
    bytes: TOTAL,
    ms,
    MiBps: +(64 / (ms / 1000)).toFixed(1),
    acceptedDuringPause: pause.end - pause.at,
    acceptedInLastSecondOfPause: movedWhileBlocked,
    stdoutBufferedDuringPause: pause.buffered,
  };
});

await check('exec-kill', async () => {
  const out = {};
  for (const [signal, code, name] of [
    ['SIGKILL', 137, 'SIGKILL'],
    [15, 143, 'SIGTERM'],
  ]) {
    const proc = await exec(['sleep', '30'], { stdin: 'ignore' });
    assert(proc.kill() === false, 'kill before the command started');
    await withTimeout(once(proc, 'spawn'), 20000, 'spawn');
    assert(proc.pid > 100, `pid ${proc.pid}`);
    const t0 = Date.now();
    assert(proc.kill(signal) === true, `kill(${signal})`);
    const exit = await withTimeout(proc.exited, 20000, `exit after ${name}`);
    assert(exit.code === code && proc.signalCode === name, `after kill(${signal}): ${JSON.stringify(exit)} ${proc.signalCode}`);
    out[name] = { code: exit.code, ms: Date.now() - t0 };
  }
  return out;
});

await check('exec-tty-resize', async () => {
  const before = await withTimeout(execFile(['stty', 'size'], { tty: { rows: 24, cols: 80 } }), 20000, 'stty size');
  assert(before.code === 0 && before.stdout.toString() === '24 80\r\n', `before: ${JSON.stringify(before.stdout.toString())} ${before.code}`);
  const shell = await exec(['sh'], { tty: { rows: 24, cols: 80 } });
  await withTimeout(once(shell, 'spawn'), 20000, 'spawn');
  shell.resize(100, 30);
  shell.stdin.end('stty size\nexit 3\n');
  const text = (await withTimeout(collect(shell.stdout), 20000, 'shell output')).toString();
  const exit = await shell.exited;
  assert(text.includes('30 100\r\n'), `after resize(100, 30): ${JSON.stringify(text)}`);
  assert(exit.code === 3, `exit ${exit.code}`);
  return { before: '24 80', after: '30 100', exit: exit.code };
});

await check('exec-exit-127-126', async () => {
  const missing = await execFile(['no-such-command']);
  assert(missing.code === 127 && missing.pid === 0 && /No such file/.test(missing.stderr.toString()), `not found: ${missing.code} ${missing.stderr}`);
  const directory = await execFile(['/tmp']);
  assert(directory.code === 126 && /Permission denied/.test(directory.stderr.toString()), `a directory: ${directory.code} ${directory.stderr}`);
  const proc = await exec(['no-such-command'], { stdin: 'ignore' });
  const e = await rejects(proc.exited, 'exec() of a missing command');
  assert(e.code === 'ERR_MK_EXEC_REMOTE' && e.exitCode === 127 && e.errnoCode === 'ENOENT' && proc.exitCode === 127, `exec(): ${e.code} ${e.exitCode} ${e.errnoCode}`);
  const shell = await execFile(['sh', '-c', 'no-such-command; exit $?']);
  assert(shell.code === 127, `through a shell: ${shell.code}`);
  const status = await execFile(['sh', '-c', 'exit 42']);
  assert(status.code === 42, `sh -c "exit 42": ${status.code}`);
  return { notFound: missing.code, directory: directory.code, viaShell: shell.code };
});

await check('exec-lost-connection', async () => {
  // as exec() does, keeping the client's stream to find the agent's side of the session
  const stream = await connectAgent(loopback, ID, NAME);
  const proc = new ExecProcess(stream, ['cat']);
  await withTimeout(once(proc, 'spawn'), 20000, 'spawn');
  const errors = [];
  proc.on('error', (e) => errors.push(e));
  proc.stdout.on('data', () => {});
  // a writer that keeps going until the session is over
  let writing = true;
  const writer = (async () => {
    const chunk = Buffer.alloc(64 * 1024, 1);
    while (writing && !proc.stdin.destroyed) {
      if (!proc.stdin.write(chunk)) await Promise.race([once(proc.stdin, 'drain'), once(proc.stdin, 'close'), sleep(200)]).catch(() => {});
    }
  })();
  await once(proc.stdout, 'data');
  const side = agentSide.get(stream.localPort);
  assert(side !== undefined, `the agent side of the session from port ${stream.localPort}`);
  const t0 = Date.now();
  side.destroy(); // the instance goes away under the session
  const e = await withTimeout(rejects(proc.exited, 'exited after the agent vanished'), 20000, 'the client notices');
  writing = false;
  await writer;
  assert(e.code === 'ERR_MK_EXEC_LOST_CONNECTION', `${e.code}: ${e.message}`);
  assert(errors.length === 1 && errors[0] === e, `error events: ${errors.length}`);
  assert(proc.stdin.destroyed, 'stdin is closed');
  return { message: e.message, noticedMs: Date.now() - t0 };
});

await check('exec-unreserved-port-refused', async () => {
  // kerf-init serves only clients on reserved ports; one without (an ephemeral port) is hung up on
  const c = await connectChannel(loopback, ID, NAME, AGENT_PORT);
  assert(c.localPort > 1023, `local port ${c.localPort}`);
  const e = await withTimeout(rejects(execFileOverStream(c, ['true']), 'a session from an ephemeral port'), 20000, 'hang-up');
  // how it shows depends on timing: end of file before STARTED, or EPIPE on the OPEN write
  assert(e.code === 'ERR_MK_EXEC_LOST_CONNECTION', `${e.code}: ${e.message}`);
  return { localPort: c.localPort, message: e.message };
});

await check('exec-100-concurrent', async () => {
  const N = 100;
  const t0 = Date.now();
  const results = await withTimeout(
    Promise.all(Array.from({ length: N }, (_, i) => execFile(['echo', `n${i}`]))),
    120000,
    '100 commands',
  );
  const wrong = results.filter((r, i) => r.code !== 0 || r.stdout.toString() !== `n${i}\n`);
  assert(wrong.length === 0, `${wrong.length} commands answered wrong`);
  return { commands: N, ms: Date.now() - t0 };
});

await check('kmsg-follow', async () => {
  // host.watch() wakes on /dev/kmsg: the reader starts past the boot messages (lseek SEEK_END),
  // one record per read; a record written from user space has facility user, which wakes nothing
  const log = await linux.openKernelLog();
  try {
    const text = `multikernel-qemu-lane ${process.pid}`;
    writeFileSync('/dev/kmsg', `<6>${text}\n`);
    const record = (await withTimeout(log.read(), 10000, 'the record')).toString();
    const m = /^(\d+),(\d+),(\d+),[^;]*;(.*)\n/.exec(record);
    assert(m !== null && m[4] === text, `first record after the open: ${JSON.stringify(record)}`);
    assert(Number(m[1]) === (1 << 3) + 6, `prio ${m[1]}: the kernel gives user-space records facility user`);
    assert(!relevantRecord(record), 'a user-space record wakes no watcher');
    const writeErr = await rejects(log.write(Buffer.from('x')), 'a write on the read-only log');
    assert(writeErr.code === 'EBADF', `write: ${writeErr.code}`);
    return { record: record.trim(), seq: Number(m[2]) };
  } finally {
    await log.close();
  }
});

await agent.close();
emit('messaging-script-complete', true);
finish();
