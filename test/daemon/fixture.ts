// The daemon in this process: a simulated host in memory, the spec written to a temporary
// directory with a placeholder kernel beside it, sd_notify and the log captured, and a fake clock
// for the daemon's own timers (backoff, stability, watchdog) where a test wants one.
import type { Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Daemon, type Clock, type DaemonOptions } from '../../lib/daemon';
import { Host } from '../../lib/host';
import { placeholderImage } from '../../lib/image';
import { SimulatedSystem } from '../../lib/system/simulated';

/** Timers that fire only when the test advances the time. */
export class FakeClock implements Clock {
  t = 1_000_000;
  #next = 1;
  readonly timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  /** Runs the timers due within `ms`, in order, and moves the time on. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = end;
  }
}

/**
 * Polls `check` until it holds (every 5 ms, up to `ms`). The bound only names a hang: a passing
 * test returns as soon as the condition holds, so it is set for a loaded CI machine, where tap runs
 * two files at once under coverage and a daemon's start can take seconds.
 */
export async function until(check: () => boolean | Promise<boolean>, ms = 30_000, what = 'the condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export interface Harness {
  dir: string;
  specPath: string;
  sim: SimulatedSystem;
  host: Host;
  daemon: Daemon;
  /** the sd_notify states, in order */
  notes: string[];
  /** `<priority>message` */
  logs: string[];
  controller: AbortController;
  /** the exit code, once run() resolved */
  done: Promise<number>;
  /** a log line matching `re` appears */
  logged(re: RegExp, ms?: number): Promise<string>;
  /** a notify state matching `re` is sent (after the first `from` states) */
  notified(re: RegExp, from?: number, ms?: number): Promise<string>;
  writeSpec(text: string): void;
  status(name: string): Promise<string>;
  id(name: string): Promise<number>;
  stop(): Promise<number>;
  /** another Host on the same simulated kernel: what it does is not the daemon's request */
  other(): Promise<Host>;
}

export const KERNEL = 'vmlinux';

/** A spec text: `version: 1`, a pool of 4 CPUs and 2G, and the instances given as YAML. */
export function spec(instances: string, pool = 'pool:\n  cpus: 4\n  memory: 2G\n'): string {
  return `version: 1\n${pool}instances:\n${instances}`;
}

export async function harness(
  t: Test,
  specText: string,
  options: Partial<Omit<DaemonOptions, 'host' | 'specPath' | 'notify' | 'log'>> & { sim?: SimulatedSystem; notify?: DaemonOptions['notify']; ready?: boolean; noSpec?: boolean } = {},
): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-daemon-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, KERNEL), placeholderImage());
  const specPath = path.join(dir, 'host.yaml');
  if (options.noSpec !== true) fs.writeFileSync(specPath, specText);
  const sim = options.sim ?? new SimulatedSystem();
  if (options.sim === undefined) await sim.mountMultikernel();
  t.teardown(() => sim.dispose());
  const host = await Host.open({ system: sim });
  const notes: string[] = [];
  const logs: string[] = [];
  const controller = new AbortController();
  const { sim: _s, notify, ready, noSpec: _n, ...rest } = options;
  const daemon = new Daemon({
    host,
    specPath,
    notify: notify ?? (async (s) => (notes.push(s), true)),
    log: (p, m) => logs.push(`<${p}>${m}`),
    ...rest,
  });
  const done = daemon.run(controller.signal);
  const h: Harness = {
    dir,
    specPath,
    sim,
    host,
    daemon,
    notes,
    logs,
    controller,
    done,
    async logged(re, ms = 5000) {
      await until(() => logs.some((l) => re.test(l)), ms, `a log line ${re}; got:\n${logs.join('\n')}`);
      return logs.find((l) => re.test(l))!;
    },
    async notified(re, from = 0, ms = 5000) {
      await until(() => notes.slice(from).some((n) => re.test(n)), ms, `a notify state ${re}; got:\n${notes.join('\n')}`);
      return notes.slice(from).find((n) => re.test(n))!;
    },
    writeSpec: (text) => fs.writeFileSync(specPath, text),
    status: async (name) => (await host.instance(name)).status(),
    id: async (name) => (await host.instance(name)).id,
    other: () => Host.open({ system: sim }),
    async stop() {
      controller.abort(new Error('SIGTERM'));
      return done;
    },
  };
  t.teardown(async () => {
    controller.abort(new Error('teardown'));
    await done;
  });
  if (ready !== false) await h.notified(/^READY=1/);
  return h;
}
