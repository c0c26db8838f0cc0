/**
 * Binding overhead (issue 13): lock and unlock pairs on a temporary file through the addon
 * (flockTry + flockUnlock: two N-API calls, two flock(2) calls) against a C loop making the same
 * two system calls (bench/c/flock-pairs.c, built here with cc -O2). Alternating rounds, medians of
 * nanoseconds per pair; target: at most 1.2 times C.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadBinding } from '../lib/binding';
import { type BenchCase, median, notRun } from './results';

const NAME = 'binding overhead: flock lock+unlock pairs';
const PAIRS = 200_000;
const ROUNDS = 7;

export function run(): BenchCase[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-bench-binding-'));
  try {
    const exe = path.join(dir, 'flock-pairs');
    const cc = spawnSync('cc', ['-O2', '-o', exe, path.join(__dirname, 'c', 'flock-pairs.c')], { encoding: 'utf8' });
    if (cc.error !== undefined || cc.status !== 0) return [notRun(NAME, 'x C', '<= 1.2', `cc failed: ${cc.error?.message ?? cc.stderr}`)];
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
      return [
        {
          name: NAME,
          value: ratio,
          unit: 'x C',
          target: '<= 1.2',
          met: ratio <= 1.2,
          context: `binding ${median(js).toFixed(0)} ns/pair, C ${median(native).toFixed(0)} ns/pair (medians of ${ROUNDS} alternating rounds of ${PAIRS} pairs)`,
        },
      ];
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
