/**
 * What every benchmark returns: cases with a target and a verdict, printed as one table by
 * bench/index.ts and written to bench-results.json. Ratios are measured side by side in one run
 * (this machine is shared and noisy); absolute figures are context.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export interface BenchCase {
  /** the case, e.g. "binding overhead: flock pairs" */
  name: string;
  /** the figure the target is about, e.g. 1.13 */
  value: number;
  /** "x C", "ms", "% of a core", "MB" */
  unit: string;
  /** the target in words, e.g. "<= 1.2" */
  target: string;
  /** whether the target is met; null when the case could not run (then `context` says why) */
  met: boolean | null;
  /** absolute figures and how they were taken */
  context: string;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/** A case that could not run here, with the reason. */
export function notRun(name: string, unit: string, target: string, why: string): BenchCase {
  return { name, value: Number.NaN, unit, target, met: null, context: `not run: ${why}` };
}

/**
 * Builds `bench/c/<source>` with `cc -O2` and `args` (libraries, -shared, -static, ...) into `dir`;
 * the output is named after the source without `.c`, or `out`. On failure, the reason (cc's first
 * line of complaint, then `hint`), for a case that is not run.
 */
export function buildC(dir: string, source: string, options: { args?: readonly string[]; out?: string; hint?: string } = {}): { exe: string } | { why: string } {
  const exe = join(dir, options.out ?? source.replace(/\.c$/, ''));
  const r = spawnSync('cc', ['-O2', '-o', exe, join(__dirname, 'c', source), ...(options.args ?? [])], { encoding: 'utf8' });
  if (r.error === undefined && r.status === 0) return { exe };
  const complaint = (r.error?.message ?? r.stderr).trim().split('\n')[0];
  return { why: `cc ${source} failed (${complaint})${options.hint === undefined ? '' : `; ${options.hint}`}` };
}
