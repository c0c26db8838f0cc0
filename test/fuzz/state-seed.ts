/**
 * The seed of the simulated-state fuzz target: state.json of a simulated host that went through
 * the lifecycle (a pool, instances ready, loaded, active and hung, a transaction, kerf's lock
 * file), so mutations reach every part of the state.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Host } from '../../lib/host';
import { SimulatedSystem, placeholderImage } from '../../lib/simulated';

export async function makeStateSeed(): Promise<unknown> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-fuzz-seed-'));
  fs.chmodSync(dir, 0o700);
  const system = new SimulatedSystem({ stateDir: path.join(dir, 'sim') });
  try {
    const host = await Host.open({ system, lockPath: path.join(dir, 'lock') });
    await host.pool.init({ cpus: 4, memory: '2G', devices: ['0000:00:04.0'] });
    const a = await host.createInstance({ name: 'a', cpus: 1, memory: '256M', devices: ['0000:00:04.0'] });
    const b = await host.createInstance({ name: 'b', cpus: 1, memory: '256M' });
    const c = await host.createInstance({ name: 'c', cpus: 1, memory: '128M' });
    await host.createInstance({ name: 'd', cpus: 1, memory: '128M' });
    for (const i of [a, b, c]) await i.load(placeholderImage(), { cmdline: 'console=mktty0 quiet' });
    await a.start();
    await c.start();
    await system.hang(c.id);
    await system.createExclusive('/tmp/kerf.lock');
    return JSON.parse(fs.readFileSync(path.join(dir, 'sim', 'state.json'), 'utf8'));
  } finally {
    await system.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
