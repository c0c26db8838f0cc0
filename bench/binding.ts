/**
 * Binding overhead (issue 13): lock and unlock pairs on a temporary file through the addon
 * (flockTry + flockUnlock: two N-API calls, two flock(2) calls) against a C loop making the same
 * two system calls (bench/c/flock-pairs.c, built here with cc -O2). Alternating rounds, medians of
 * nanoseconds per pair; target: at most 1.2 times C.
 *
 * Where the time goes is context (bench/c/napi-syscall.c, a bare Node-API module): what an empty
 * JS -> C -> JS call costs, and what a system call made from JS costs against the same call in a
 * C loop of this process; and whether this host isolates page tables without PCID (then every
 * system call flushes the TLB, and what runs between two calls pays to refill it).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadBinding } from '../lib/binding';
import { type BenchCase, buildC, median, notRun } from './results';

const NAME = 'binding overhead: flock lock+unlock pairs';
const PAIRS = 200_000;
const ROUNDS = 7;

export function run(): BenchCase[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-bench-binding-'));
  try {
    const built = buildC(dir, 'flock-pairs.c');
    if ('why' in built) return [notRun(NAME, 'x C', '<= 1.2', built.why)];
    const exe = built.exe;
    const file = path.join(dir, 'lock');
    const binding = loadBinding();
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      const ours = (): number => {
        const t0 = performance.now();
        for (let i = 0; i < PAIRS; i++) {
          if (!binding.flockTry(fd, true)) throw new Error('flockTry: lock not taken');
          binding.flockUnlock(fd);
        }
        return ((performance.now() - t0) * 1e6) / PAIRS;
      };
      const c = (): number => {
        const r = spawnSync(exe, [file, String(PAIRS)], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`flock-pairs: ${r.stderr}`);
        return Number(r.stdout.trim());
      };
      ours(); // warm-up: the JIT compiles the loop
      const js: number[] = [];
      const native: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        js.push(ours());
        native.push(c());
      }
      const ratio = median(js) / median(native);
      const where = anatomy(dir);
      return [
        {
          name: NAME,
          value: ratio,
          unit: 'x C',
          target: '<= 1.2',
          met: ratio <= 1.2,
          context: `binding ${median(js).toFixed(0)} ns/pair, C ${median(native).toFixed(0)} ns/pair (medians of ${ROUNDS} alternating rounds of ${PAIRS} pairs); ${where}`,
        },
      ];
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const CALLS = 200_000;

/** Nanoseconds per call of `f` over `n` calls. */
function perCall(n: number, f: () => void): number {
  const t0 = performance.now();
  f();
  return ((performance.now() - t0) * 1e6) / n;
}

/** The host's page-table isolation and PCID, from sysfs and /proc/cpuinfo (this machine's own files, read-only). */
function pageTables(): string {
  let meltdown = 'unknown';
  try {
    meltdown = fs.readFileSync('/sys/devices/system/cpu/vulnerabilities/meltdown', 'utf8').trim();
  } catch {
    // not Linux on x86, or no sysfs: say unknown
  }
  let pcid = 'unknown';
  try {
    const flags = /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    pcid = flags.length === 0 ? 'unknown' : flags.includes('pcid') ? 'yes' : 'no';
  } catch {
    // no /proc/cpuinfo
  }
  return `page tables: ${meltdown}, PCID ${pcid}`;
}

/**
 * Where a binding call's time goes, in words: an empty Node-API call, and getppid(2) from JS one
 * call at a time against a C loop in this process (medians of alternating rounds).
 */
function anatomy(dir: string): string {
  const include = path.join(path.dirname(process.execPath), '..', 'include', 'node');
  const built = buildC(dir, 'napi-syscall.c', { args: ['-shared', '-fPIC', `-I${include}`], out: 'napi-syscall.node', hint: `Node's headers in ${include}` });
  if ('why' in built) return `no breakdown (${built.why}); ${pageTables()}`;
  const lib = built.exe;
  const m = { exports: {} as { noop(): void; sys(): void; loop(n: number): void } };
  process.dlopen(m, lib);
  const napi = m.exports;
  const noop = (): number => perCall(CALLS, () => {
    for (let i = 0; i < CALLS; i++) napi.noop();
  });
  const sys = (): number => perCall(CALLS, () => {
    for (let i = 0; i < CALLS; i++) napi.sys();
  });
  const loop = (): number => perCall(CALLS, () => napi.loop(CALLS));
  noop();
  sys();
  const samples: [number[], number[], number[]] = [[], [], []];
  for (let i = 0; i < ROUNDS; i++) {
    samples[0].push(noop());
    samples[1].push(sys());
    samples[2].push(loop());
  }
  const [n, s, l] = samples.map(median) as [number, number, number];
  return `an empty Node-API call ${n.toFixed(0)} ns; getppid(2) from JS ${s.toFixed(0)} ns a call, in a C loop of this process ${l.toFixed(0)} ns (+${(s - l).toFixed(0)} ns: running JS again after each system call, ${((s - l) / Math.max(n, 1)).toFixed(0)} times the call itself); ${pageTables()}`;
}
