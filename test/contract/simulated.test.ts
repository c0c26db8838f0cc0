import t from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { fakeElfVmlinux } from './fake-kernel';
import { runContract } from './suite';

const sims: SimulatedSystem[] = [];
t.teardown(async () => {
  for (const s of sims) await s.dispose();
});

void runContract(
  t,
  async () => {
    const sim = new SimulatedSystem();
    sims.push(sim);
    return sim;
  },
  { kernelImage: { bytes: fakeElfVmlinux() } },
);
