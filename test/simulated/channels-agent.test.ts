/**
 * The simulated kerf-init agent in the edge cases where it follows kerf's `src/init/session.c`
 * (f8698f9e) to the letter, and the one source-port rule it applies (docs/kernel-interface.md,
 * "The simulated kerf-init agent").
 */
import t from 'tap';
import { FrameType, decodeExit, encodeFrame, encodeOpen, encodeSignal, OPEN_FLAG_USER } from '../../lib/exec/protocol';
import { FakeCore, rawSession, tick } from './channels-fixture';

function running(): FakeCore {
  const core = new FakeCore();
  core.create(1, 'web', 'loaded');
  core.start(1);
  return core;
}

t.test('a SIGNAL the kernel refuses is ignored: kill(-pid, signo) fails and the command runs on', async (t) => {
  const core = running();
  let port = 1000;
  for (const signo of [65, 128, 0xffffffff]) {
    const s = await rawSession(core, port++);
    s.open(['sleep', '0.05']);
    await s.until(() => s.types().includes(FrameType.STARTED));
    s.send(FrameType.SIGNAL, encodeSignal(signo));
    await s.until(() => s.ended);
    t.same(decodeExit(s.frames.at(-1)!.payload), { signaled: false, code: 0 }, `signal ${signo}: EINVAL, not an exit`);
  }
  const last = await rawSession(core, port++);
  last.open(['sleep', '5']);
  await last.until(() => last.types().includes(FrameType.STARTED));
  last.send(FrameType.SIGNAL, encodeSignal(64));
  await last.until(() => last.ended);
  t.same(decodeExit(last.frames.at(-1)!.payload), { signaled: true, code: 64 }, 'the highest signal number (SIGRTMAX) still kills');
});

t.test('uid, gid and groups in OPEN apply only with the USER flag', async (t) => {
  const core = running();
  const ids = { uid: 1000, gid: 100, groups: [5, 100] };
  const without = await rawSession(core, 1000);
  without.open(['id'], 0, ids);
  await without.until(() => without.ended);
  t.equal(without.stdout(), 'uid=0(root) gid=0(root) groups=0(root)\n', "without the flag the command keeps kerf-init's identity");
  const withFlag = await rawSession(core, 1001);
  withFlag.open(['id'], OPEN_FLAG_USER, ids);
  await withFlag.until(() => withFlag.ended);
  t.equal(withFlag.stdout(), 'uid=1000 gid=100 groups=100,5\n');
});

t.test('a reserved header field that is not 0 is ignored (session.c never reads it)', async (t) => {
  const core = running();
  const s = await rawSession(core);
  const open = encodeFrame(FrameType.OPEN, encodeOpen({ flags: 0x2, uid: 0, gid: 0, groups: [], rows: 0, cols: 0, cwd: '/', argv: ['cat'], env: ['PATH=/bin'] }));
  open.writeUInt16LE(0xffff, 6);
  s.write(open);
  await s.until(() => s.types().includes(FrameType.STARTED));
  const stdin = encodeFrame(FrameType.STDIN, Buffer.from('kept'));
  stdin.writeUInt16LE(1, 6);
  const eof = encodeFrame(FrameType.STDIN_EOF);
  eof.writeUInt16LE(0x8000, 6);
  s.write(Buffer.concat([stdin, eof]));
  await s.until(() => s.ended);
  t.equal(s.stdout(), 'kept');
  t.same(decodeExit(s.frames.at(-1)!.payload), { signaled: false, code: 0 });
});

t.test('a first frame that is not OPEN: the agent hangs up once its header is in, without waiting for the payload', async (t) => {
  const core = running();
  const s = await rawSession(core);
  const header = encodeFrame(FrameType.STDIN, Buffer.alloc(100)).subarray(0, 8);
  s.write(header.subarray(0, 5));
  await tick(20);
  t.notOk(s.ended, 'half a header: still reading');
  s.write(header.subarray(5));
  await s.until(() => s.ended);
  t.same(s.frames, [], 'closed without a frame');
  const open = await rawSession(core, 1001);
  open.write(encodeFrame(FrameType.OPEN, Buffer.alloc(30)).subarray(0, 20));
  await tick(20);
  t.notOk(open.ended, 'an OPEN header: the agent waits for its payload');
  open.write(Buffer.alloc(18));
  await open.until(() => open.ended);
  t.same(open.types(), [FrameType.ERROR], 'then parses it');
});

t.test('source ports: served from 512..1023, the ports kerf\'s client binds; closed without a frame otherwise', async (t) => {
  const core = running();
  for (const port of [1023, 512]) {
    const s = await rawSession(core, port);
    s.open(['true']);
    await s.until(() => s.ended);
    t.same(s.types(), [FrameType.STARTED, FrameType.EXIT], `port ${port}: served`);
  }
  for (const port of [511, 100, 1]) {
    const s = await rawSession(core, port);
    s.open(['true']);
    await s.until(() => s.ended);
    t.same(s.frames, [], `port ${port}: closed without a frame`);
  }
  const ephemeral = await core.channels.vsockConnect({ cid: 1, port: 1023 });
  t.ok(ephemeral.localPort > 1023);
  const ended = new Promise((resolve) => ephemeral.on('end', resolve));
  ephemeral.resume();
  await ended;
  t.pass('an ephemeral port: closed');
  ephemeral.destroy();
});
