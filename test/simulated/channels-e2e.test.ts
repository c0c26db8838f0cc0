/**
 * The channels end to end through SimulatedSystem: /dev/mktty via openDevice, the boot log on
 * reboot(MULTIKERNEL), kerf exec over vsock, then panic and halt as the System user sees them.
 */
import t from 'tap';
import { once } from 'node:events';
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
  t.match(await readUntil(console, ']---\n'), 'Kernel panic');
  await console.write(Buffer.from('echo anyone?\n'));
  t.equal(await readFor(console, 100), '', 'silence after the panic');
  await t.rejects(sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1021, signal: timeoutSignal(100) }), { name: 'TimeoutError' }, 'connect hangs');
  t.notOk(held.destroyed, 'open connections stay open');
  held.destroy();
  await sim.reboot(0x4d4b4c46, 1); // HALT_FORCE recovers a panicked instance

  await sim.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 1);
  await readUntil(console, '/ # ');
  const victim = await sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1020 });
  const ended = once(victim, 'end');
  victim.resume();
  await sim.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, 1);
  await ended;
  t.pass('a graceful halt shuts the connections down: the host reads end of file');
  await console.close();
});
