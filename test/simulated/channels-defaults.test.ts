/** createSimChannels without options: privilege follows the real uid, connect waits 2 s. */
import t from 'tap';
import { createSimChannels } from '../../lib/system/simulated/channels-impl';
import { FaultInjector } from '../../lib/system/simulated/faults';
import type { SimInstanceInfo } from '../../lib/system/simulated/channels';

t.test('defaults', async (t) => {
  const info: SimInstanceInfo = { id: 1, name: 'one', status: 'loaded', hung: false, cmdline: '' };
  const channels = createSimChannels({ faults: new FaultInjector(), instanceById: async (id) => (id === 1 ? info : undefined) });
  const reserved = channels.vsockListen({ port: 1000 });
  if (process.getuid!() === 0) t.equal((await reserved).port, 1000, 'root binds reserved ports');
  else await t.rejects(reserved, { code: 'EACCES' }, 'others cannot');
  const started = Date.now();
  await t.rejects(channels.vsockConnect({ cid: 1, port: 1023 }), { code: 'ETIMEDOUT' });
  t.ok(Date.now() - started >= 1990, 'af_vsock default connect timeout');
  await channels.close();
});
