/**
 * Runs every benchmark (`npm run bench`), prints one table (each case with its target and whether
 * it is met) and writes bench-results.json. Figures are ratios measured side by side in this run;
 * absolute times are context. docs/benchmarks.md records a run and how to reproduce it.
 */
import { writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { run as binding } from './binding';
import { run as daemon } from './daemon';
import { run as fdt } from './fdt';
import type { BenchCase } from './results';
import { run as startup } from './startup';
import { run as vsock } from './vsock';
import { run as watch } from './watch';

const benches: [string, () => BenchCase[] | Promise<BenchCase[]>][] = [
  ['binding', binding],
  ['fdt', fdt],
  ['watch', watch],
  ['startup', startup],
  ['daemon', daemon],
  ['vsock', vsock],
];

function verdict(c: BenchCase): string {
  return c.met === null ? 'not run' : c.met ? 'met' : 'NOT met';
}

function table(cases: BenchCase[]): string {
  const rows = [['case', 'measured', 'target', 'verdict'], ...cases.map((c) => [c.name, Number.isNaN(c.value) ? '-' : `${c.value.toFixed(2)} ${c.unit}`, `${c.target} ${c.unit}`, verdict(c)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

void (async () => {
  const only = process.argv.slice(2);
  const cases: BenchCase[] = [];
  for (const [name, run] of benches) {
    if (only.length > 0 && !only.includes(name)) continue;
    process.stderr.write(`bench: ${name}...\n`);
    cases.push(...(await run()));
  }
  console.log(table(cases));
  console.log('');
  for (const c of cases) console.log(`- ${c.name}: ${c.context}`);
  writeFileSync(
    'bench-results.json',
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg: os.loadavg(), cases }, (_k, v: unknown) => (typeof v === 'number' && Number.isNaN(v) ? null : v), 2)}\n`,
  );
})();
