// /dev/kmsg of the simulated kernel (System.openKernelLog): records logged after the open, one per
// read, EPIPE for overwritten ones, and wake-ups from this process and from another one.
import t from 'tap';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { SimulatedSystem } from '../../lib/system/simulated';
import { DMESG_LINES } from '../../lib/system/simulated/kernel';
import { M, setup } from './helpers';

const garbage = Buffer.from('not a device tree');
/** two lines: "Loading host kernel device tree configuration (17 bytes at offset 0)", "Invalid device tree header: -9" */
const badBaseline = (sim: SimulatedSystem) => sim.writeFile(`${M}/device_tree`, garbage).catch(() => undefined);

t.test('records logged after the open, one per read, in the dev-kmsg format', async (t) => {
  const sim = await setup({}, { start: true });
  t.teardown(() => sim.dispose());
  const before = (await sim.dmesg()).length;
  const log = await sim.openKernelLog();
  const first = log.read();
  let settled = false;
  void first.then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 20));
  t.notOk(settled, 'nothing logged since the open: the read waits');
  await sim.panic(1);
  const lines = (await sim.dmesg()).slice(before);
  t.ok(lines.length >= 1);
  t.equal((await first).toString(), `6,${before},0,-;${lines[0]}\n`, 'prio 6, sequence number, timestamp 0, flags -');
  for (let i = 1; i < lines.length; i++) t.equal((await log.read()).toString(), `6,${before + i},0,-;${lines[i]}\n`);
  await badBaseline(sim);
  await t.rejects(log.read({ max: 8 }), { code: 'EINVAL', syscall: 'read' }, 'a buffer smaller than the record');
  t.match((await log.read()).toString(), /;Loading host kernel device tree configuration \(17 bytes at offset 0\)\n$/, 'the record stays for a large enough read');
  t.match((await log.read()).toString(), /;Invalid device tree header: -9\n$/);
  await t.rejects(log.write(Buffer.from('x')), { code: 'EBADF', syscall: 'write' }, 'opened read-only');
  await t.rejects(log.read({ max: 0 }), RangeError);
  const aborted = new AbortController();
  const waiting = log.read({ signal: aborted.signal });
  aborted.abort(new Error('enough'));
  await t.rejects(waiting, { message: 'enough' }, 'the signal ends a waiting read');
  const pending = log.read();
  await log.close();
  await t.rejects(pending, { code: 'EBADF' }, 'closing ends a waiting read');
  await t.rejects(log.read(), { code: 'EBADF' });
  await log.close();
});

t.test('a reader left behind by the ring gets EPIPE once, then the oldest record kept', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const log = await sim.openKernelLog();
  for (let i = 0; i < DMESG_LINES / 2 + 3; i++) await badBaseline(sim);
  t.equal((await sim.dmesg()).length, DMESG_LINES, 'the ring keeps the newest lines');
  await t.rejects(log.read(), { code: 'EPIPE', syscall: 'read', path: '/dev/kmsg' });
  t.match((await log.read()).toString(), /^6,6,0,-;Loading host kernel/, 'on with the oldest kept, sequence 6');
  const late = await sim.openKernelLog();
  await badBaseline(sim);
  t.match((await late.read()).toString(), new RegExp(`^6,${DMESG_LINES + 6},`), 'a new reader starts after the last record');
  sim.faults.add({ op: 'open.kmsg', action: { errno: 'EPERM' } });
  await t.rejects(sim.openKernelLog(), { code: 'EPERM' }, 'dmesg_restrict, as a fault');
  await Promise.all([log.close(), late.close()]);
});

t.test('a record logged by another process wakes a reader', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mk-kmsg-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const a = new SimulatedSystem({ stateDir: dir });
  const b = new SimulatedSystem({ stateDir: dir });
  t.teardown(() => Promise.all([a.dispose(), b.dispose()]));
  await a.mountMultikernel();
  const log = await a.openKernelLog();
  const reading = log.read();
  await new Promise((r) => setTimeout(r, 20));
  await badBaseline(b);
  t.match((await reading).toString(), /;Loading host kernel/);
  t.match((await log.read()).toString(), /;Invalid device tree header: -9\n$/);
  // the directory watch ends with the last waiting reader and starts again with the next
  const again = log.read();
  await badBaseline(b);
  t.match((await again).toString(), /;Loading host kernel/);
  await log.close();
});
