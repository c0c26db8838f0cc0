/**
 * What every benchmark returns: cases with a target and a verdict, printed as one table by
 * bench/index.ts and written to bench-results.json. Ratios are measured side by side in one run
 * (this machine is shared and noisy); absolute figures are context.
 */
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
