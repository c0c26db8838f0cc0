/**
 * /dev/mktty semantics of the simulated kernel (drivers/tty/mktty.c, kernel/multikernel/ipi.c),
 * through the SimChannels seam with a fake core.
 */
import t from 'tap';
import { FakeCore, readFor, readUntil, tick } from './channels-fixture';
import { kstrtoint, MKTTY_MAX_DATA } from '../../lib/system/simulated/mktty';
import type { SimStopCause } from '../../lib/system/simulated/channels';

const enc = (s: string): Buffer => Buffer.from(s, 'latin1');

async function attached(core: FakeCore, id: number) {
  const handle = await core.channels.openMktty();
  if ((await handle.write(enc(`${id}\n`))) !== 2) throw new Error('selection write was short');
  return handle;
}

t.test('read before selecting an instance fails ENOTCONN', async (t) => {
  const core = new FakeCore();
  const handle = await core.channels.openMktty();
  await t.rejects(handle.read(), { code: 'ENOTCONN', syscall: 'read', path: '/dev/mktty' });
});

t.test('the first write selects the instance like kstrtoint', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one');
  const tryWrite = async (text: string): Promise<number | string> => {
    const handle = await core.channels.openMktty();
    try {
      return await handle.write(enc(text));
    } catch (e) {
      return (e as { code: string }).code;
    } finally {
      await handle.close();
    }
  };
  t.equal(await tryWrite('1\n'), 2, 'id with newline, even for an instance that is not loaded');
  t.equal(await tryWrite('1'), 1);
  t.equal(await tryWrite('+1'), 2);
  t.equal(await tryWrite('1\0garbage'), 9, 'stops at NUL, returns the whole count');
  t.equal(await tryWrite('000000000000001\n'), 16, 'only 15 characters are parsed');
  t.equal(await tryWrite('0000000000000001'), 'EINVAL', 'the 16th character is cut off: 0');
  t.equal(await tryWrite('0\n'), 'EINVAL', 'id < 1');
  t.equal(await tryWrite('-3'), 'EINVAL');
  t.equal(await tryWrite('abc'), 'EINVAL');
  t.equal(await tryWrite(''), 'EINVAL');
  t.equal(await tryWrite(' 1'), 'EINVAL');
  t.equal(await tryWrite('1 '), 'EINVAL');
  t.equal(await tryWrite('1\n\n'), 'EINVAL');
  t.equal(await tryWrite('99999999999\n'), 'ERANGE', 'beyond int');
  t.equal(await tryWrite('-99999999999'), 'ERANGE');
  t.equal(await tryWrite('2\n'), 'ENODEV', 'no such instance');
  t.equal(kstrtoint('-2147483648'), -2147483648);
});

t.test('boot log reaches a console selected before start', async (t) => {
  const core = new FakeCore();
  core.create(3, 'web');
  core.load(3);
  const handle = await attached(core, 3);
  core.start(3);
  const text = await readUntil(handle, '/ # ');
  t.match(text, /^\[ {4}0\.000000\] Linux version 7\.0\.0-mk2/);
  t.match(text, 'Command line: console=mktty0 rdinit=/init\n');
  t.match(text, 'multikernel: instance 3 (web) booting');
  t.match(text, 'mktty: early console for instance 3');
  t.match(text, 'kerf-init: starting\n/ # ');
});

t.test('output with nobody attached is lost', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  await tick(20);
  const handle = await attached(core, 1);
  t.equal(await readFor(handle, 80), '', 'the boot log is gone');
  await handle.write(enc('echo hello\n'));
  t.equal(await readUntil(handle, 'hello\r\n/ # '), 'echo hello\r\nhello\r\n/ # ');
});

t.test('the shell: echo, not found, status, files, CR as newline', async (t) => {
  const core = new FakeCore();
  core.create(2, 'db', 'loaded');
  const handle = await attached(core, 2);
  core.start(2);
  await readUntil(handle, '/ # ');
  await handle.write(enc('nope\n'));
  t.match(await readUntil(handle, '/ # '), 'sh: nope: not found\r\n');
  await handle.write(enc('echo $?\r'));
  t.match(await readUntil(handle, '/ # '), '127\r\n');
  await handle.write(enc('uname -n\ncat /proc/cmdline\n'));
  // Typed ahead: the tty echoes both lines at once, the shell answers them in turn.
  t.equal(await readUntil(handle, /rdinit=\/init\r\n\/ # $/), 'uname -n\r\ncat /proc/cmdline\r\ndb\r\n/ # console=mktty0 rdinit=/init\r\n/ # ');
  await handle.write(enc('\n'));
  t.equal(await readUntil(handle, '/ # '), '\r\n/ # ', 'an empty line gives a new prompt');
  await handle.write(enc('cat\n'));
  t.equal(await readUntil(handle, '/ # '), 'cat\r\n/ # ', 'commands on the console get nothing on stdin');
});

t.test('only the newest opened connection that selected the instance gets output', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const older = await core.channels.openMktty();
  const newer = await core.channels.openMktty();
  await newer.write(enc('1\n'));
  await older.write(enc('1\n')); // selected last, but opened first
  await older.write(enc('echo to-newest\n'));
  t.match(await readUntil(newer, 'to-newest\r\n/ # '), 'echo to-newest');
  t.equal(await readFor(older, 60), '', 'the older connection hears nothing');
  await newer.close();
  await older.write(enc('echo now-older\n'));
  t.match(await readUntil(older, 'now-older\r\n/ # '), 'now-older');
});

t.test('16 KiB host buffer: overflow is dropped', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const handle = await attached(core, 1);
  const word = 'x'.repeat(1000);
  const line = `echo ${word}\n`;
  await handle.write(enc(line.repeat(12))); // about 24 KB of echo and output
  await tick(100);
  const got = await handle.read({ max: 1 << 20 });
  t.equal(got.length, 16383, 'a 16384-byte ring holds 16383');
  t.equal(await readFor(handle, 50), '', 'the rest was dropped, not queued');
  await handle.write(enc('echo after\n'));
  t.match(await readUntil(handle, 'after\r\n/ # '), 'echo after');
});

t.test('reads: max, abort, close', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const handle = await attached(core, 1);
  await handle.write(enc('echo xy\n'));
  await tick(20);
  t.equal((await handle.read({ max: 3 })).toString(), 'ech');
  t.equal((await handle.read({ max: 3 })).toString(), 'o x');
  await readUntil(handle, '/ # ');
  const aborted = new AbortController();
  const pending = handle.read({ signal: aborted.signal });
  aborted.abort(new Error('stop'));
  await t.rejects(pending, { message: 'stop' });
  await t.rejects(handle.read({ signal: AbortSignal.abort(new Error('early')) }), { message: 'early' });
  const blocked = handle.read();
  await tick();
  await handle.close();
  await t.rejects(blocked, { code: 'EBADF' });
  await t.rejects(handle.read(), { code: 'EBADF' });
  await t.rejects(handle.write(enc('x')), { code: 'EBADF' });
  await handle.close();
});

t.test('input: chunks of 4080, errors of the IPI ring', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one');
  const handle = await attached(core, 1);
  await t.rejects(handle.write(enc('x')), { code: 'ENODEV' }, 'no image loaded: no IPI area');
  core.load(1);
  // A loaded (not running) kernel never drains its ring: 63 messages fit.
  for (let i = 0; i < 61; i++) t.equal(await handle.write(enc('y')), 1);
  t.equal(await handle.write(Buffer.alloc(MKTTY_MAX_DATA * 3, 0x61)), MKTTY_MAX_DATA * 2, 'short write when the ring fills mid-way');
  await t.rejects(handle.write(enc('z')), { code: 'ENOSPC' });
  core.start(1);
  await readUntil(handle, '/ # ');
  const big = `echo ${'b'.repeat(MKTTY_MAX_DATA + 100)}\n`;
  t.equal(await handle.write(enc(big)), big.length, 'the ring was reset by the start; big writes go out in chunks');
  t.match(await readUntil(handle, /b\r\n\/ # $/), 'bbbb');
  core.instances.delete(1);
  await t.rejects(handle.write(enc('x')), { code: 'EINVAL' }, 'instance gone');
});

t.test('a panicking spawn prints the panic and its way down, then nothing', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const handle = await attached(core, 1);
  await handle.write(enc('echo alive\n'));
  await readUntil(handle, 'alive\r\n/ # ');
  core.stop(1, 'panic');
  const text = await readUntil(handle, 'shutting down\n');
  t.match(text, /^\[ *\d+\.\d{6}\] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n\[ *\d+\.\d{6}\] Multikernel instance 1 shutting down\n$/);
  for (let i = 0; i < 63; i++) await handle.write(enc('echo hello?\n'));
  await t.rejects(handle.write(enc('x')), { code: 'ENOSPC' }, 'a stopped kernel never drains the ring');
  t.equal(await readFor(handle, 80), '', 'no echo, no output');
});

t.test('what each way down prints', async (t) => {
  const cases: [SimStopCause, string[]][] = [
    ['halt', ['Shutdown requested by instance 0', 'Multikernel instance 1 shutting down']],
    ['poweroff', ['reboot: Power down', 'Multikernel instance 1 shutting down']],
    ['forced', []],
  ];
  for (const [how, lines] of cases) {
    const core = new FakeCore();
    core.create(1, 'one', 'loaded');
    const handle = await attached(core, 1);
    core.start(1);
    await readUntil(handle, '/ # ');
    core.stop(1, how);
    const text = await readFor(handle, 50);
    t.same(text.split('\n').filter(Boolean).map((l) => l.replace(/^\[ *\d+\.\d{6}\] /, '')), lines, how);
  }
});

t.test('a hung spawn prints nothing and reads nothing', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  const handle = await attached(core, 1);
  core.start(1);
  await readUntil(handle, '/ # ');
  core.hang(1);
  for (let i = 0; i < 63; i++) await handle.write(enc('echo hello?\n'));
  await t.rejects(handle.write(enc('x')), { code: 'ENOSPC' }, 'nobody drains the ring');
  t.equal(await readFor(handle, 80), '', 'no echo, no output');
});

t.test('a stopped instance says nothing more; a restart boots again', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const handle = await attached(core, 1);
  await handle.write(enc('sleep 0.05\necho queued\n'));
  await readUntil(handle, 'sleep 0.05\r\necho queued\r\n');
  core.stop(1, 'forced');
  t.equal(await readFor(handle, 120), '', 'no prompt after the command finishes, the queued line never runs');
  core.start(1);
  core.channels.instanceStarted(99); // an instance the core no longer knows: no boot log, no crash
  t.match(await readUntil(handle, '/ # '), 'Linux version');
  core.start(1);
  core.stop(1, 'forced');
  t.equal(await readFor(handle, 50), '', 'stopped before the boot log was written');
});

t.test('fault hooks: mktty.open, mktty.write, mktty.read', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  core.faults.add({ op: 'mktty.open', times: 1, action: { errno: 'ENOMEM' } });
  await t.rejects(core.channels.openMktty(), { code: 'ENOMEM', syscall: 'open', path: '/dev/mktty' });
  const handle = await attached(core, 1);
  core.faults.add({ op: 'mktty.write', id: 1, times: 1, action: { errno: 'EIO' } });
  await t.rejects(handle.write(enc('x')), { code: 'EIO', syscall: 'write' });
  core.faults.add({ op: 'mktty.write', id: 1, times: 1, action: { halfway: true } });
  t.equal(await handle.write(enc('echo half\n')), 5, 'half of 10 bytes');
  core.faults.add({ op: 'mktty.read', times: 1, action: { errno: 'EINTR' } });
  await t.rejects(handle.read(), { code: 'EINTR' });
});

t.test('closing the channels closes every console', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const handle = await attached(core, 1);
  await core.channels.close();
  await t.rejects(handle.read(), { code: 'EBADF' });
});
