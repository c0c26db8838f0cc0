// SIGKILL during the daemon's initial apply, at several points, then a daemon started again on
// the same host (as systemd's Restart=on-failure does): it converges, each instance exists once,
// every transaction is applied (none left failed or pending).
import t from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { spawnDaemon, workspace } from './receiver';

const M = '/sys/fs/multikernel';
const SPEC = `version: 1
pool:
  cpus: 4
  memory: 2G
instances:
${['a', 'b', 'c'].map((n) => `  ${n}:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n`).join('')}`;

t.test('killed during the initial apply, then started again: converges without duplicates or leftovers', async (t) => {
  const ws = workspace(SPEC);
  t.teardown(ws.cleanup);
  const env = { MULTIKERNEL_SIM_DIR: ws.simDir };
  // each run is killed right after the step named, while it begins the next
  for (const after of [/^<6>apply: create a /, /^<6>apply: load b /, /^<6>apply: create c /]) {
    const d = spawnDaemon(['-c', ws.specPath], env);
    await d.waitLine(after);
    d.child.kill('SIGKILL');
    t.same(await d.exited, { code: null, signal: 'SIGKILL' }, `killed after ${after}`);
  }
  const d = spawnDaemon(['-c', ws.specPath], env);
  t.teardown(() => d.child.kill('SIGKILL'));
  await d.waitLine(/^<5>ready: 3\/3 instances running$/);
  const sim = new SimulatedSystem({ stateDir: ws.simDir });
  t.teardown(() => sim.dispose());
  const names = await sim.readdir(`${M}/instances`);
  t.same([...names].sort(), ['a', 'b', 'c'], 'each instance once');
  for (const n of names) t.equal((await sim.readFile(`${M}/instances/${n}/status`)).toString().trim(), 'active', n);
  const ids = await Promise.all(names.map(async (n) => (await sim.readFile(`${M}/instances/${n}/id`)).toString().trim()));
  t.equal(new Set(ids).size, 3, 'distinct ids');
  for (const tx of (await sim.readdir(`${M}/overlays`)).filter((x) => x.startsWith('tx_'))) {
    t.equal((await sim.readFile(`${M}/overlays/${tx}/status`)).toString().trim(), 'applied', tx);
  }
  d.child.kill('SIGTERM');
  t.same(await d.exited, { code: 0, signal: null });
});
