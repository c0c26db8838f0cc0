/**
 * The channels end to end through SimulatedSystem: /dev/mktty via openDevice, the boot log on
 * reboot(MULTIKERNEL), kerf exec over vsock, then panic and halt as the System user sees them.
 */
import t from 'tap';
import { execOverStream } from '../../lib/exec/client';
import { AGENT_PORT } from '../../lib/exec/protocol';
import { LINUX_REBOOT_CMD_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL_HALT } from '../../lib/uapi';
import { setup } from './helpers';
import { readFor, readUntil, timeoutSignal } from './channels-fixture';

t.test('console, exec, panic and halt through SimulatedSystem', async (t) => {
  const sim = await setup({}, { load: true });
  const console = await sim.openDevice('/dev/mktty');
  t.equal(await console.write(Buffer.from('1\n')), 2);
  await sim.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 1);
  const boot = await readUntil(console, '/ # ');
  t.match(boot, 'Command line: console=mktty0');
  t.match(boot, 'instance 1 (web) booting');

  const stream = await sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1023 });
  const result = await execOverStream(stream, { argv: ['uname', '-n'] });
  t.same([result.exitCode, result.stdout.toString()], [0, 'web\n']);

  const held = await sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1022 });
  await sim.panic(1);
  t.match(await readUntil(console, 'shutting down\n'), 'Kernel panic - not syncing');
  await console.write(Buffer.from('echo anyone?\n'));
  t.equal(await readFor(console, 100), '', 'silence after the panic');
  await t.rejects(sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1021, signal: timeoutSignal(100) }), { name: 'TimeoutError' }, 'connect hangs');
  t.notOk(held.destroyed, 'open connections stay open');
  held.destroy();

  await sim.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 1); // a panic halted it back to the pool: it starts again
  await readUntil(console, '/ # ');
  const victim = await sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1020 });
  const seen: string[] = [];
  for (const e of ['data', 'end', 'error', 'close']) victim.on(e, () => seen.push(e));
  await sim.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, 1);
  await readFor(console, 50);
  t.same(seen, [], 'a graceful halt sends nothing to the host: no end of file, no reset');
  victim.destroy();
  await console.close();
});
