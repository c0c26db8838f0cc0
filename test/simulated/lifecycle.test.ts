/**
 * How an instance stops, as the host sees it: panic (halt back to the pool), hang (stays active,
 * silent), graceful and forced halt, poweroff from inside; what vsock peers and the console see
 * then; and the kernel log lines of each transition (docs/kernel-interface.md, "reboot").
 */
import t, { type Test } from 'tap';
import { AGENT_PORT } from '../../lib/exec/protocol';
import type { SimulatedSystem } from '../../lib/system/simulated';
import type { DeviceHandle, VsockStream } from '../../lib/system/system';
import {
  LINUX_REBOOT_CMD_MULTIKERNEL as START,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT as HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE as FORCE,
} from '../../lib/uapi';
import { watch } from '../contract/suite';
import { readFor, readUntil, tick, timeoutSignal } from './channels-fixture';
import { setup, status } from './helpers';

const PROMPT = '/ # ';

/** A started instance "web" (id 1, APIC id 2) with a console selected before the start. */
async function running(t: Test, opts: Parameters<typeof setup>[0] = {}): Promise<{ sim: SimulatedSystem; tty: DeviceHandle }> {
  const sim = await setup(opts, { load: true });
  t.teardown(() => sim.dispose());
  const tty = await sim.openDevice('/dev/mktty');
  await tty.write(Buffer.from('1\n'));
  await sim.reboot(START, 1);
  await readUntil(tty, PROMPT);
  return { sim, tty };
}

/** A connection that is still open and on which nothing arrives (the agent waits for OPEN). */
async function agentConnection(sim: SimulatedSystem, localPort: number): Promise<{ stream: VsockStream; seen: string[] }> {
  const stream = await sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort });
  return { stream, seen: watch(stream) };
}

const log = async (sim: SimulatedSystem): Promise<string> => (await sim.dmesg()).join('\n');

t.test('start, graceful halt and forced halt log the kernel lines', async (t) => {
  const { sim } = await running(t);
  const lines = await sim.dmesg();
  const from = lines.indexOf('multikernel kexec: using physical CPU 2 (logical 1), 1 CPUs assigned');
  t.ok(from >= 0, 'kexec_core.c: the boot CPU, physical and logical');
  t.same(lines.slice(from, from + 3), [
    'multikernel kexec: using physical CPU 2 (logical 1), 1 CPUs assigned',
    'Manifest finalized for multikernel instance',
    'Multikernel instance 1 is now active',
  ]);
  await sim.reboot(HALT, 1);
  t.equal((await sim.dmesg()).at(-1), 'Multikernel instance 1 halted (graceful)');
  await sim.reboot(START, 1);
  await sim.reboot(FORCE, 1);
  t.same((await sim.dmesg()).slice(-3), [
    'Force halting multikernel instance 1 via NMI',
    'Sent NMI to 1 CPUs in instance 1',
    'Instance 1 (web) halted, CPUs parking in pool',
  ]);
  t.notMatch(await log(sim), /multikernel: (starting )?instance/, 'no invented lines');
});

t.test('refused starts and halts log what the kernel logs', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  await t.rejects(sim.reboot(START, 1), { code: 'EINVAL' });
  t.equal((await sim.dmesg()).at(-1), 'No multikernel image found with ID 1');
  await t.rejects(sim.reboot(FORCE, 1), { code: 'EINVAL' });
  t.equal((await sim.dmesg()).at(-1), 'Instance 1 not running (state=1), nothing to force halt', 'MK_STATE_READY is 1');
});

t.test('a panic halts the instance back to the pool', async (t) => {
  const { sim, tty } = await running(t);
  const { stream, seen } = await agentConnection(sim, 1023);
  await sim.panic(1);
  t.equal(await status(sim), 'loaded', 'status loaded, without a halt from the host');
  const text = await readUntil(tty, 'shutting down\n');
  t.match(text, /\[ *\d+\.\d{6}\] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n/);
  t.match(text, /Multikernel instance 1 shutting down\n$/, 'the spawn notifies the host and parks (core.c mk_notify_down_and_park)');
  t.notMatch(text, /end Kernel panic/, 'panic_timeout -1: the restart comes before the end marker');
  t.equal((await sim.dmesg()).at(-1), 'Instance 1 (web) halted, CPUs parking in pool', 'the host got MK_SYS_HALTED');
  t.ok(stream.write('anyone?'), 'a write to the dead instance is accepted');
  await tick(50);
  t.same(seen, [], 'and nothing arrives: no data, no end of file, no reset');
  await tty.write(Buffer.from('echo hi\n'));
  t.equal(await readFor(tty, 50), '', 'the console is silent');
  t.match((await sim.readFile('/proc/kimage')).toString(), /^ {4}1 {2}multikernel/m, 'the image stays loaded');
  await t.rejects(sim.reboot(HALT, 1), { code: 'EINVAL' }, 'nothing left to halt');
  await sim.reboot(START, 1);
  t.match(await readUntil(tty, PROMPT), 'instance 1 (web) booting', 'it starts again without a reload');
  stream.destroy();
});

t.test('a hang keeps the instance active and silent', async (t) => {
  const { sim, tty } = await running(t, { haltTimeoutMs: 60 });
  const { stream, seen } = await agentConnection(sim, 1023);
  await sim.hang(1);
  t.equal(await status(sim), 'active', 'status stays active');
  await tty.write(Buffer.from('echo hi\n'));
  t.equal(await readFor(tty, 50), '', 'no echo, no output');
  stream.write('anyone?');
  await tick(50);
  t.same(seen, [], 'open connections fall silent');
  await t.rejects(
    sim.vsockConnect({ cid: 1, port: 4000, signal: timeoutSignal(100) }),
    { name: 'TimeoutError' },
    'a hung kernel answers nothing, not even a reset',
  );
  await t.rejects(sim.reboot(START, 1), { code: 'EBUSY' }, 'its CPUs are not parked');
  t.same((await sim.dmesg()).slice(-2), ['Instance 1 (web): CPU 2 is not parked: -110', 'Multikernel instance 1 is still active']);
  const t0 = Date.now();
  await t.rejects(sim.reboot(HALT, 1), { code: 'ETIMEDOUT', syscall: 'reboot' }, 'the shutdown request is never acknowledged');
  t.ok(Date.now() - t0 >= 55, 'after the halt timeout');
  t.equal((await sim.dmesg()).at(-1), 'Timeout waiting for operation 0x3002 on resource 1', 'messaging.c, MK_SYS_SHUTDOWN');
  t.equal(await status(sim), 'active');
  await t.rejects(sim.poweroffFromInside(1), RangeError, 'a hung spawn cannot power itself off');
  await t.rejects(sim.hang(1), RangeError, 'nor hang twice');
  await sim.reboot(FORCE, 1);
  t.equal(await status(sim), 'loaded', 'the forced halt recovers it');
  await t.rejects(sim.hang(1), RangeError, 'only an active instance can hang');
  await t.rejects(sim.panic(1), RangeError, 'or panic');
  await sim.reboot(START, 1);
  t.match(await readUntil(tty, PROMPT), 'booting');
  const probe = await sim.vsockConnect({ cid: 1, port: 4000 }).catch((e: unknown) => e);
  t.match(probe, { code: 'ECONNRESET', syscall: 'connect' }, 'alive again: an unlistened port is answered with a reset');
  stream.destroy();
});

t.test('a live instance answers a connect to an unlistened port with a reset, at once', async (t) => {
  const { sim } = await running(t);
  const t0 = Date.now();
  await t.rejects(sim.vsockConnect({ cid: 1, port: 4000 }), { code: 'ECONNRESET', syscall: 'connect' });
  t.ok(Date.now() - t0 < 1000, 'no wait for the connect timeout');
});

for (const how of ['graceful halt', 'forced halt', 'poweroff from inside'] as const) {
  t.test(`a ${how} sends nothing to vsock peers`, async (t) => {
    const { sim, tty } = await running(t);
    const { stream, seen } = await agentConnection(sim, 1023);
    if (how === 'graceful halt') await sim.reboot(HALT, 1);
    else if (how === 'forced halt') await sim.reboot(FORCE, 1);
    else await sim.poweroffFromInside(1);
    t.equal(await status(sim), 'loaded');
    if (how === 'poweroff from inside') t.equal((await sim.dmesg()).at(-1), 'Instance 1 (web) halted, CPUs parking in pool');
    t.ok(stream.write('anyone?'), 'writes are accepted');
    await tick(50);
    t.same(seen, [], 'no data, no end of file, no reset: silence');
    const after = await readFor(tty, 50);
    if (how === 'forced halt') t.equal(after, '', 'an NMI prints nothing');
    else t.match(after, /Multikernel instance 1 shutting down\n$/, 'the spawn says it goes down');
    if (how === 'graceful halt') t.match(after, 'Shutdown requested by instance 0\n');
    await t.rejects(
      sim.vsockConnect({ cid: 1, port: AGENT_PORT, localPort: 1022, signal: timeoutSignal(100) }),
      { name: 'TimeoutError' },
      'a stopped instance answers nothing',
    );
    stream.destroy();
  });
}
