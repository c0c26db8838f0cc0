import t from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { fakeElfVmlinux } from './fake-kernel';
import { runLifecycleContract } from './lifecycle';
import { runContract } from './suite';

const sims: SimulatedSystem[] = [];
t.teardown(async () => {
  for (const s of sims) await s.dispose();
});

t.test('the System contract', async (t) => {
  await runContract(
    t,
    async () => {
      const sim = new SimulatedSystem();
      sims.push(sim);
      return sim;
    },
    { kernelImage: { bytes: fakeElfVmlinux() } },
  );
});

t.test('the lifecycle contract', async (t) => {
  const sim = new SimulatedSystem();
  sims.push(sim);
  await runLifecycleContract(t, sim, { kernelImage: { bytes: fakeElfVmlinux() } });
});
