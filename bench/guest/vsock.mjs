// Guest side of the vsock streams benchmark (bench/vsock.ts boots the guest and runs this over the
// 9p share): the library's Duplex (LinuxSystem.vsockConnect/vsockListen, loopback transport,
// CID 1) against bench/c/vsock-stream.c doing the same transfers, in alternating rounds.
//
// Both sides have the same shape: the server is a second process (here `node vsock.mjs serve`,
// started once; the C program forks its own), the client is this process. Two transfers:
// - throughput: the client writes MKBENCH_TPUT_BYTES in 64 KiB write()s, honouring back-pressure
//   ('drain'), and half-closes; the server counts bytes with 'data' events and answers with the
//   count; timed from connect to the end of the answer;
// - round trip: MKBENCH_RTT_COUNT times, write 1 byte and wait for its echo; timed after connect.
// Prints one `RESULT {"name":"vsock-bench",...}` line with every sample (nanoseconds).
import { once } from 'node:events';
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { emit, lib, run, spawnUntil, withTimeout } from '../../test/qemu/guest/lib.mjs';

const { LinuxSystem } = lib('system/linux/index');
const sys = new LinuxSystem();

const TPUT_PORT = 7000;
const ECHO_PORT = 7001;
/** the C program's ports: a fresh one per run, so no run meets the last one's socket */
let cPort = 6000;
const CHUNK = 64 * 1024;

const env = (name, fallback) => Number(process.env[name] ?? fallback);

if (process.argv[2] === 'serve') {
  // the server process: counts bytes on TPUT_PORT, echoes on ECHO_PORT, until killed
  const tput = await sys.vsockListen({ port: TPUT_PORT, multikernel: false });
  const echo = await sys.vsockListen({ port: ECHO_PORT, multikernel: false });
  (async () => {
    for await (const s of tput) {
      let n = 0;
      s.on('error', () => {});
      s.on('data', (d) => {
        n += d.length;
      });
      s.on('end', () => s.end(String(n)));
    }
  })();
  (async () => {
    for await (const s of echo) {
      s.on('error', () => {});
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
    }
  })();
  // a clean exit when the client is done: a `node --cpu-prof` run writes both profiles
  process.on('SIGTERM', () => process.exit(0));
  process.stdout.write('READY\n');
} else {
  const BYTES = env('MKBENCH_TPUT_BYTES', 8 * 1024 * 1024);
  const COUNT = env('MKBENCH_RTT_COUNT', 200);
  const ROUNDS = env('MKBENCH_ROUNDS', 5);
  const C = process.env.MKBENCH_C ?? '/usr/local/bin/vsock-stream';

  /** Our throughput transfer: nanoseconds from connect to the server's answer. */
  async function oursTput(bytes) {
    const chunk = Buffer.alloc(CHUNK, 7);
    const t0 = performance.now();
    const c = await sys.vsockConnect({ cid: 1, port: TPUT_PORT, multikernel: false });
    let answer = '';
    c.setEncoding('utf8');
    c.on('data', (d) => {
      answer += d;
    });
    const ended = once(c, 'end');
    for (let left = bytes; left > 0; left -= CHUNK) {
      if (!c.write(chunk)) await once(c, 'drain');
    }
    c.end();
    await ended;
    const ns = (performance.now() - t0) * 1e6;
    c.destroy();
    if (Number(answer) !== bytes) throw new Error(`our server counted ${answer} of ${bytes} bytes`);
    return ns;
  }

  /** Our 1-byte round trips: nanoseconds per round trip. */
  async function oursRtt(count) {
    const c = await sys.vsockConnect({ cid: 1, port: ECHO_PORT, multikernel: false });
    const one = Buffer.from([1]);
    const t0 = performance.now();
    await new Promise((resolve, reject) => {
      let got = 0;
      c.on('error', reject);
      c.on('data', (d) => {
        got += d.length;
        if (got >= count) resolve();
        else c.write(one);
      });
      c.write(one);
    });
    const ns = ((performance.now() - t0) * 1e6) / count;
    c.destroy();
    return ns;
  }

  /** The C program's transfer: nanoseconds (throughput) or nanoseconds per round trip. */
  async function c(mode, amount) {
    const r = await run(C, [mode, String(cPort++), String(amount)]);
    if (r.code !== 0) throw new Error(`vsock-stream ${mode} exited ${r.code}: ${r.stderr}${r.error ?? ''}`);
    const [n, ns] = r.stdout.trim().split(' ').map(Number);
    if (n !== amount) throw new Error(`vsock-stream ${mode}: ${r.stdout}`);
    return mode === 'rtt' ? ns / amount : ns;
  }

  const t0 = Date.now();
  // the server runs with this process's node flags (e.g. --cpu-prof)
  const server = spawnUntil(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), 'serve'], /READY/);
  try {
    await withTimeout(server.ready, 60_000, 'the server process');
    // warm-up: the JIT compiles both processes' paths; the C program's first run pages it in
    await oursTput(Math.min(BYTES, 16 * 1024 * 1024));
    await oursRtt(Math.min(COUNT, 1000));
    await c('tput', Math.min(BYTES, 16 * 1024 * 1024));
    await c('rtt', Math.min(COUNT, 1000));
    const samples = { oursTputNs: [], cTputNs: [], oursRttNs: [], cRttNs: [] };
    for (let i = 0; i < ROUNDS; i++) {
      samples.oursTputNs.push(await oursTput(BYTES));
      samples.cTputNs.push(await c('tput', BYTES));
      samples.oursRttNs.push(await oursRtt(COUNT));
      samples.cRttNs.push(await c('rtt', COUNT));
    }
    emit('vsock-bench', true, { bytes: BYTES, count: COUNT, rounds: ROUNDS, cpus: os.cpus().length, release: os.release(), node: process.version, ms: Date.now() - t0, ...samples });
  } catch (e) {
    emit('vsock-bench', false, { error: String(e?.stack ?? e), ms: Date.now() - t0 });
    process.exitCode = 1;
  } finally {
    server.child.kill();
  }
}
