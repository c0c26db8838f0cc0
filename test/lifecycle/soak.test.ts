/**
 * The lifecycle soak in short (issue 13; `npm run soak` runs 10,000 cycles and prints the series,
 * docs/reliability.md records one): 1,500 cycles of create, load, start, exec, stop, unload and
 * delete on one Host leave the fd count where it was and the heap flat after the warm-up.
 */
import t from 'tap';
import { soak } from '../../scripts/soak';
import { SimulatedSystem } from '../../lib/system/simulated';

t.test('1,500 lifecycle cycles: fds and heap flat', async (t) => {
  const points = await soak(1500, 500);
  t.comment(points.map((p) => `cycle ${p.cycle}: heap ${(p.heapBytes / 2 ** 20).toFixed(2)} MiB, ${p.fds} fds`).join('\n'));
  t.same(
    points.map((p) => p.fds),
    points.map(() => points[0]!.fds),
    'no fd left open by any cycle',
  );
  const growth = points.at(-1)!.heapBytes - points[1]!.heapBytes;
  t.ok(growth < 2 * 2 ** 20, `heap from cycle 500 to 1500: ${(growth / 2 ** 20).toFixed(2)} MiB (less than 2 MiB: compiled code, not data)`);
});

t.test('keepAppliedTransactions: the simulated kernel forgets the oldest applied transactions (a soak setting)', async (t) => {
  const { Host } = await import('../../lib/host');
  const system = new SimulatedSystem({ keepAppliedTransactions: 2 });
  t.teardown(() => system.dispose());
  const host = await Host.open({ system, lockPath: '/run/keep.lock' });
  await host.pool.init({ cpus: 2, memory: '1G' });
  for (const name of ['a', 'b', 'c']) await host.createInstance({ name, cpus: 1, memory: '128M' }).then((i) => i.delete());
  const txs = (await system.readdir('/sys/fs/multikernel/overlays')).filter((x) => x.startsWith('tx_'));
  t.same(txs, ['tx_6', 'tx_7'], 'the newest two of seven');
});
