/**
 * vsock streams (issue 13): the library's Duplex on the AF_VSOCK loopback transport against a C
 * client and server doing the same transfers (bench/c/vsock-stream.c), both inside one QEMU guest
 * (the stock Debian kernel of the QEMU lane under TCG, the repo shared over 9p as in
 * test/qemu/stock-x86.test.ts). bench/guest/vsock.mjs alternates rounds (ours, C, ours, C, ...)
 * and reports every sample; here the medians become two cases: throughput with 64 KiB writes (at
 * least 0.9 of C) and the 1-byte round trip (at most 1.5 times C). The host never runs the C
 * program nor opens a vsock socket: it only builds the program (cc -static) into the initramfs.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { KernelCache } from '../lib/qemu';
import { addonFor, boot, type Boot, fetchKernel, missingPrerequisite, ROOT } from '../test/qemu/harness';
import { type BenchCase, buildC, median, notRun } from './results';

const TPUT = 'vsock streams: throughput, 64 KiB writes';
const RTT = 'vsock streams: 1-byte round trip';
const TPUT_TARGET = 0.9;
const RTT_TARGET = 1.5;

/**
 * Guest vCPUs: client and server can run at once, as on real hardware, without oversubscribing
 * this machine's 2 host cores (with -smp 1 both sides take turns on one vCPU: docs/benchmarks.md
 * has those figures too).
 */
const CPUS = 2;
/**
 * Per round: bytes of one throughput transfer, 1-byte round trips of one round-trip run. Sized for
 * TCG, where ours moves some 10 to 40 MiB/s and takes milliseconds a round trip, so that the case,
 * boot included, takes about a minute (CI's budget is nearly used).
 */
const BYTES = 8 * 1024 * 1024;
const COUNT = 200;
const ROUNDS = 5;

/** What the guest script reports (nanoseconds; round trips per round trip). */
interface GuestSamples {
  ok: boolean;
  error?: string;
  cpus: number;
  release: string;
  ms: number;
  oursTputNs: number[];
  cTputNs: number[];
  oursRttNs: number[];
  cRttNs: number[];
}

const notRunBoth = (why: string): BenchCase[] => [notRun(TPUT, 'x C', `>= ${TPUT_TARGET}`, why), notRun(RTT, 'x C', `<= ${RTT_TARGET}`, why)];

export async function run(): Promise<BenchCase[]> {
  const missing = await missingPrerequisite('x86_64');
  if (missing !== undefined) return notRunBoth(missing);
  if (process.arch !== 'x64') return notRunBoth(`the guest is x86_64 and runs this host's node; this host is ${process.arch}`);
  if (addonFor('x86_64') === undefined) return notRunBoth('the native addon is not built (npm run build:native)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-bench-vsock-'));
  try {
    const built = buildC(dir, 'vsock-stream.c', { args: ['-static', '-Wall'], hint: 'a static C library (libc6-dev)' });
    if ('why' in built) return notRunBoth(built.why);
    const exe = built.exe;
    let kernel: KernelCache;
    let b: Boot;
    try {
      kernel = await fetchKernel('amd64');
      b = await boot('bench-vsock', {
        arch: 'x86_64',
        kernel: kernel.kernel,
        busybox: kernel.busybox,
        modules: kernel.modules,
        cpus: CPUS,
        memory: '1G',
        share: ROOT,
        files: [{ source: exe, target: '/usr/local/bin/vsock-stream', mode: 0o755 }],
        env: { MKQEMU_ROOT: '/share', MKBENCH_TPUT_BYTES: String(BYTES), MKBENCH_RTT_COUNT: String(COUNT), MKBENCH_ROUNDS: String(ROUNDS) },
        command: ['node', 'bench/guest/vsock.mjs'],
        timeoutMs: 240_000,
      });
    } catch (error) {
      // no kernel, or QEMU failed or timed out: the other cases still report
      return notRunBoth(`the guest did not run: ${(error as Error).message}`);
    }
    const s = b.checks.get('vsock-bench') as GuestSamples | undefined;
    if (s === undefined || !s.ok) return notRunBoth(`the guest run failed (exit ${b.result.exitCode}; ${s?.error ?? 'no result'}; console: ${b.log})`);
    const mibps = (ns: number): string => (BYTES / 2 ** 20 / (ns / 1e9)).toFixed(0);
    const tputRatio = median(s.cTputNs) / median(s.oursTputNs); // throughput: ours / C
    const rttRatio = median(s.oursRttNs) / median(s.cRttNs);
    const how = `medians of ${ROUNDS} alternating rounds in one guest (Linux ${s.release}, ${kernel.info['KERNEL_PACKAGE'] ?? 'stock kernel'}, QEMU TCG -smp ${s.cpus}; server in a second process on both sides); boot + run ${(b.result.durationMs / 1000).toFixed(1)} s, guest script ${(s.ms / 1000).toFixed(1)} s`;
    return [
      {
        name: TPUT,
        value: tputRatio,
        unit: 'x C',
        target: `>= ${TPUT_TARGET}`,
        met: tputRatio >= TPUT_TARGET,
        context: `ours ${mibps(median(s.oursTputNs))} MiB/s, C ${mibps(median(s.cTputNs))} MiB/s, ${BYTES / 2 ** 20} MiB per transfer; ${how}`,
      },
      {
        name: RTT,
        value: rttRatio,
        unit: 'x C',
        target: `<= ${RTT_TARGET}`,
        met: rttRatio <= RTT_TARGET,
        context: `ours ${(median(s.oursRttNs) / 1000).toFixed(1)} µs, C ${(median(s.cRttNs) / 1000).toFixed(1)} µs per round trip, ${COUNT} per round; ${how}`,
      },
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
