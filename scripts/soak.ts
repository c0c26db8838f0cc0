/**
 * Lifecycle soak (issue 13): `npm run soak -- [--cycles N] [--every K]` takes one instance of a
 * simulated host through create, load, start, a command run inside it, stop, unload and delete N
 * times (default 10,000) with one Host, and prints every K cycles (default 500) the heap in use
 * after a full garbage collection and the open fd count, as a series. The simulated kernel runs in
 * this process and keeps the newest 64 applied transactions only (keepAppliedTransactions): a
 * multikernel kernel keeps every one (overlays/tx_N goes only when rolled back), two per cycle
 * here, and that growth would be the kernel's, not the library's. Fails (exit 1) when the fds
 * grow, or the heap at the end is more than 5 MiB above the heap after the first K cycles.
 * docs/reliability.md records a run; test/lifecycle/soak.test.ts runs a short one in CI.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Host } from '../lib/host';
import { SimulatedSystem, placeholderImage } from '../lib/simulated';

export interface SoakPoint {
  cycle: number;
  heapBytes: number;
  fds: number;
}

/** A full collection, also without --expose-gc. */
function collect(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

export async function soak(cycles: number, every: number, onPoint?: (p: SoakPoint) => void): Promise<SoakPoint[]> {
  const system = new SimulatedSystem({ keepAppliedTransactions: 64 });
  const host = await Host.open({ system, lockPath: `/run/mk-soak-${process.pid}.lock` });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const image = placeholderImage();
  const points: SoakPoint[] = [];
  const point = async (cycle: number): Promise<void> => {
    collect();
    const p = { cycle, heapBytes: process.memoryUsage().heapUsed, fds: fs.readdirSync('/proc/self/fd').length };
    points.push(p);
    onPoint?.(p);
  };
  await point(0);
  try {
    for (let i = 1; i <= cycles; i++) {
      const inst = await host.createInstance({ name: 'soak', cpus: 1, memory: '128M' });
      await inst.load(image);
      await inst.start();
      const r = await inst.execFile(['true']);
      if (r.code !== 0) throw new Error(`cycle ${i}: true exited ${r.code}`);
      await inst.stop();
      await inst.unload();
      await inst.delete();
      if (i % every === 0) await point(i);
    }
  } finally {
    await system.dispose();
  }
  return points;
}

if (require.main === module) {
  const { values } = parseArgs({ options: { cycles: { type: 'string', default: '10000' }, every: { type: 'string', default: '500' } } });
  const cycles = Number(values.cycles);
  const every = Number(values.every);
  const t0 = Date.now();
  console.log(' cycle   heap MiB   fds');
  const row = (p: SoakPoint): string => `${String(p.cycle).padStart(6)}   ${(p.heapBytes / 2 ** 20).toFixed(2).padStart(8)}   ${String(p.fds).padStart(3)}`;
  void soak(cycles, every, (p) => console.log(row(p))).then((points) => {
    const first = points[1] ?? points[0]!;
    const last = points.at(-1)!;
    const grewFds = last.fds > points[0]!.fds;
    const grewHeap = last.heapBytes - first.heapBytes > 5 * 2 ** 20;
    console.log(
      `${cycles} cycles in ${((Date.now() - t0) / 1000).toFixed(0)} s: fds ${points[0]!.fds} -> ${last.fds}, heap ${(first.heapBytes / 2 ** 20).toFixed(2)} MiB after ${first.cycle} cycles -> ${(last.heapBytes / 2 ** 20).toFixed(2)} MiB: ${grewFds || grewHeap ? 'GROWS' : 'flat'}`,
    );
    process.exit(grewFds || grewHeap ? 1 : 0);
  });
}
