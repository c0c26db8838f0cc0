/**
 * mkctl start-up (issue 11: `mkctl status --json` on a simulated host in at most 1.2 times
 * `node -e 0`, measured in the same run). Spawns each command 15 times, alternating, and compares
 * medians of wall time; also `mkctl --help` (context). Returns the case; not a test.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type BenchCase, median, notRun } from './results';

const RUNS = 15;
const MKCTL = path.join(__dirname, '..', 'dist', 'cli', 'mkctl.js');

const NAME = 'CLI start: mkctl status --json, simulated host';

export function run(): BenchCase[] {
  if (!fs.existsSync(MKCTL)) return [notRun(NAME, 'x node -e 0', '<= 1.2', `${MKCTL} is not built (npm run build:ts)`)];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-bench-startup-'));
  const env = { ...process.env, MULTIKERNEL_BACKEND: 'simulated', MULTIKERNEL_SIM_DIR: path.join(dir, 'sim') };
  try {
    const time = (args: string[]): number => {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr.toString()}`);
      return performance.now() - t0;
    };
    // a host with a pool and two instances, made by mkctl itself
    for (const args of [['pool', 'init', '--cpu-count', '2', '--memory', '1G'], ['create', 'a', '--cpu-count', '1', '--memory', '128M'], ['create', 'b', '--cpu-count', '1', '--memory', '128M']]) time([MKCTL, ...args]);
    const cases: [string, string[]][] = [
      ['node -e 0', ['-e', '0']],
      ['mkctl --help', [MKCTL, '--help']],
      ['mkctl status --json', [MKCTL, 'status', '--json']],
    ];
    const samples = new Map<string, number[]>(cases.map(([name]) => [name, []]));
    for (let i = 0; i < RUNS; i++) for (const [name, args] of cases) samples.get(name)!.push(time(args));
    const m = (name: string): number => median(samples.get(name)!);
    const base = m('node -e 0');
    const ratio = m('mkctl status --json') / base;
    return [
      {
        name: NAME,
        value: ratio,
        unit: 'x node -e 0',
        target: '<= 1.2',
        met: ratio <= 1.2,
        context: `medians of ${RUNS} alternating spawns: node -e 0 ${base.toFixed(1)} ms, mkctl status --json ${m('mkctl status --json').toFixed(1)} ms, mkctl --help ${m('mkctl --help').toFixed(1)} ms (${(m('mkctl --help') / base).toFixed(2)}x)`,
      },
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
