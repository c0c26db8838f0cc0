/**
 * Daemon memory (issue 13): `mkctl daemon` supervising 64 running instances of a simulated host
 * (the host made beforehand with 66 CPUs; the spec names 64 instances with a kernel each, so the
 * daemon creates, loads and starts them all, then watches). Resident memory of the daemon process
 * (VmRSS, and VmHWM: its peak) sampled every 250 ms for 10 s of supervision after "ready";
 * target: at most 80 MB. The daemon runs as examples/multikernel.service runs it (its
 * NODE_OPTIONS, which size V8's heap); Node's defaults are measured too, for context. The
 * simulated kernel runs inside the daemon's process, so its memory counts against the budget.
 * Returns the case; not a test.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { placeholderImage } from '../lib/image';
import { SimulatedSystem } from '../lib/simulated';
import { type BenchCase, notRun } from './results';

const NAME = 'daemon memory: supervising 64 simulated instances';
const INSTANCES = 64;
const MKCTL = path.join(__dirname, '..', 'dist', 'cli', 'mkctl.js');

/** The NODE_OPTIONS the example unit sets. */
function unitNodeOptions(): string {
  const unit = fs.readFileSync(path.join(__dirname, '..', 'examples', 'multikernel.service'), 'utf8');
  const m = /^Environment="NODE_OPTIONS=([^"]*)"$/m.exec(unit);
  if (m === null) throw new Error('examples/multikernel.service sets no NODE_OPTIONS');
  return m[1]!;
}

function status(pid: number): { rss: number; hwm: number } {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

export async function run(): Promise<BenchCase[]> {
  if (!fs.existsSync(MKCTL)) return [notRun(NAME, 'MB', '<= 80', `${MKCTL} is not built (npm run build:ts)`)];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-bench-daemon-'));
  fs.chmodSync(dir, 0o700);
  const simDir = path.join(dir, 'sim');
  try {
    fs.writeFileSync(path.join(dir, 'vmlinux'), placeholderImage());
    const spec = ['version: 1', 'pool:', `  cpus: ${INSTANCES}`, `  memory: ${INSTANCES * 64}M`, 'instances:'];
    for (let i = 0; i < INSTANCES; i++) spec.push(`  i${i}:`, '    cpus: 1', '    memory: 64M', '    kernel: vmlinux');
    fs.writeFileSync(path.join(dir, 'host.yaml'), `${spec.join('\n')}\n`);
    const measure = async (nodeOptions: string): Promise<{ rss: number; hwm: number; readyMs: number }> => {
      // a fresh host each time: the spec's instances are created, loaded and started again
      fs.rmSync(simDir, { recursive: true, force: true });
      const sim = new SimulatedSystem({
        stateDir: simDir,
        topology: { cpus: Array.from({ length: INSTANCES + 2 }, (_, i) => ({ apicId: 2 * i, node: 0 })), memoryBytes: 32 * 2 ** 30, numaNodes: 1 },
      });
      await sim.mountMultikernel();
      await sim.dispose();
      const child = spawn(process.execPath, [MKCTL, 'daemon', '-c', path.join(dir, 'host.yaml'), '--lock', path.join(dir, 'lock')], {
        env: { ...process.env, MULTIKERNEL_BACKEND: 'simulated', MULTIKERNEL_SIM_DIR: simDir, NOTIFY_SOCKET: '', NODE_OPTIONS: nodeOptions },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let log = '';
      const ready = new Promise<void>((resolve, reject) => {
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (s: string) => {
          log += s;
          if (new RegExp(`ready: ${INSTANCES}/${INSTANCES} instances running`).test(log)) resolve();
        });
        child.on('exit', (code) => reject(new Error(`the daemon exited ${code} before it was ready:\n${log.slice(-2000)}`)));
      });
      const t0 = Date.now();
      try {
        await ready;
        const readyMs = Date.now() - t0;
        let rss = 0;
        for (let i = 0; i < 40; i++) {
          await new Promise((r) => setTimeout(r, 250));
          rss = Math.max(rss, status(child.pid!).rss);
        }
        return { rss, hwm: status(child.pid!).hwm, readyMs };
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    };
    const options = unitNodeOptions();
    const unit = await measure(options);
    const defaults = await measure('');
    const mb = unit.rss / 1e6;
    return [
      {
        name: NAME,
        value: mb,
        unit: 'MB',
        target: '<= 80',
        met: mb <= 80,
        context:
          `VmRSS at most ${mb.toFixed(1)} MB over 10 s of supervision after "ready" with the example unit's NODE_OPTIONS (${options}), peak ${(unit.hwm / 1e6).toFixed(1)} MB; ` +
          `with Node's defaults ${(defaults.rss / 1e6).toFixed(1)} MB; ${unit.readyMs} ms to create, load and start ${INSTANCES} instances; the simulated kernel runs in the daemon's process`,
      },
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
