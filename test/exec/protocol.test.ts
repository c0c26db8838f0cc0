import t from 'tap';
import fc from 'fast-check';
import {
  FrameDecoder,
  FrameType,
  HEADER_LENGTH,
  MAX_PAYLOAD,
  OPEN_FLAG_STDIN,
  OPEN_FLAG_TTY,
  OPEN_FLAG_USER,
  ProtocolError,
  decodeError,
  decodeExit,
  decodeOpen,
  decodeResize,
  decodeSignal,
  decodeStarted,
  decodeStdinAck,
  encodeError,
  encodeExit,
  encodeFrame,
  encodeOpen,
  encodeResize,
  encodeSignal,
  encodeStarted,
  encodeStdinAck,
  errnoName,
  errorExitCode,
  shellStatus,
} from '../../lib/exec/protocol';
import type { OpenRequest } from '../../lib/exec/protocol';

const SEED = 20261124;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

t.test('frame header: u32 len, u16 type, u16 reserved 0, little-endian', async (t) => {
  const frame = encodeFrame(FrameType.STDOUT, Buffer.from('hi'));
  t.same([...frame], [2, 0, 0, 0, 18, 0, 0, 0, 0x68, 0x69]);
  t.same([...encodeFrame(FrameType.STDIN_EOF)], [0, 0, 0, 0, 3, 0, 0, 0]);
  t.equal(encodeFrame(1, Buffer.alloc(MAX_PAYLOAD)).length, HEADER_LENGTH + MAX_PAYLOAD);
  t.throws(() => encodeFrame(1, Buffer.alloc(MAX_PAYLOAD + 1)), RangeError);
});

t.test('message type numbers are kerf proto.h values', async (t) => {
  t.same(FrameType, { OPEN: 1, STDIN: 2, STDIN_EOF: 3, RESIZE: 4, SIGNAL: 5, STARTED: 16, ERROR: 17, STDOUT: 18, STDERR: 19, EXIT: 20, STDIN_ACK: 21 });
  t.same([OPEN_FLAG_TTY, OPEN_FLAG_STDIN, OPEN_FLAG_USER], [1, 2, 4]);
});

t.test('OPEN layout <HHIIHHHHHH> + gids + NUL strings', async (t) => {
  const payload = encodeOpen({ flags: 7, uid: 1000, gid: 100, groups: [4, 27], rows: 24, cols: 80, cwd: '/tmp', argv: ['sh', '-c', 'x'], env: ['A=1'] });
  const fixed = Buffer.from([1, 0, 7, 0, 0xe8, 3, 0, 0, 100, 0, 0, 0, 2, 0, 24, 0, 80, 0, 3, 0, 1, 0, 0, 0]);
  t.same(payload.subarray(0, 24), fixed);
  t.same([...payload.subarray(24, 32)], [4, 0, 0, 0, 27, 0, 0, 0]);
  t.equal(payload.subarray(32).toString('latin1'), '/tmp\0sh\0-c\0x\0A=1\0');
  t.same(decodeOpen(payload), { version: 1, flags: 7, uid: 1000, gid: 100, groups: [4, 27], rows: 24, cols: 80, cwd: '/tmp', argv: ['sh', '-c', 'x'], env: ['A=1'] });
  t.throws(() => encodeOpen({ flags: 0, uid: 0, gid: 0, groups: [], rows: 0, cols: 0, cwd: '/', argv: [], env: [] }), RangeError);
  t.throws(() => encodeOpen({ flags: 0, uid: 0, gid: 0, groups: [], rows: 0, cols: 0, cwd: '/', argv: ['a\0b'], env: [] }), RangeError);
  t.throws(() => encodeOpen({ flags: 0, uid: 0, gid: 0, groups: [], rows: 0, cols: 0, cwd: '/', argv: ['x'.repeat(MAX_PAYLOAD)], env: [] }), RangeError);
});

t.test('OPEN decoding follows kerf-init parse_open', async (t) => {
  const good = encodeOpen({ flags: 0, uid: 0, gid: 0, groups: [1], rows: 0, cols: 0, cwd: '/', argv: ['true'], env: [] });
  const reason = (payload: Buffer): string | undefined => {
    try {
      decodeOpen(payload);
      return undefined;
    } catch (e) {
      t.type(e, ProtocolError);
      t.equal((e as ProtocolError).code, 'ERR_MK_EXEC_PROTOCOL');
      t.equal((e as ProtocolError).name, 'ProtocolError');
      return (e as ProtocolError).reason;
    }
  };
  t.equal(reason(good.subarray(0, 23)), 'malformed', 'shorter than 24 bytes');
  const v2 = Buffer.from(good);
  v2.writeUInt16LE(2, 0);
  t.equal(reason(v2), 'version', 'version other than 1 (kerf-init answers EPROTO)');
  const noArgs = Buffer.from(good);
  noArgs.writeUInt16LE(0, 18);
  t.equal(reason(noArgs), 'malformed', 'argc 0');
  const manyGroups = Buffer.from(good.subarray(0, 26));
  manyGroups.writeUInt16LE(9, 12);
  t.equal(reason(manyGroups), 'malformed', 'too short for the gids');
  t.equal(reason(good.subarray(0, good.length - 1)), 'malformed', 'last string without NUL');
  t.equal(reason(Buffer.concat([good, Buffer.from([0])])), 'malformed', 'trailing bytes');
});

t.test('fixed payloads round-trip and reject wrong sizes', async (t) => {
  t.equal(decodeStarted(encodeStarted(4242)), 4242);
  t.equal(decodeSignal(encodeSignal(15)), 15);
  t.equal(decodeStdinAck(encodeStdinAck(65536)), 65536);
  t.same(decodeResize(encodeResize({ rows: 50, cols: 132 })), { rows: 50, cols: 132 });
  t.same(decodeExit(encodeExit({ signaled: true, code: 9 })), { signaled: true, code: 9 });
  t.same([...encodeExit({ signaled: false, code: 3 })], [0, 3]);
  for (const decode of [decodeStarted, decodeSignal, decodeStdinAck, decodeResize, decodeExit]) {
    t.match(thrown(() => decode(Buffer.alloc(3))), { reason: 'malformed' });
  }
  t.equal(shellStatus({ signaled: true, code: 15 }), 143);
  t.equal(shellStatus({ signaled: false, code: 42 }), 42);
});

t.test('ERROR payload: <I errno> + message NUL, cut like kerf-init', async (t) => {
  const payload = encodeError({ errno: 2, message: 'exec nope: No such file or directory' });
  t.equal(payload.readUInt32LE(0), 2);
  t.equal(payload[payload.length - 1], 0);
  t.same(decodeError(payload), { errno: 2, message: 'exec nope: No such file or directory' });
  t.equal(encodeError({ errno: 1, message: 'x'.repeat(600) }).length, 4 + 507 + 1);
  t.same(decodeError(encodeError({ errno: 1, message: 'a\0b' })), { errno: 1, message: 'a' });
  t.same(decodeError(Buffer.from([5, 0, 0, 0, 0x68, 0x69])), { errno: 5, message: 'hi' }, 'missing NUL tolerated');
  t.match(thrown(() => decodeError(Buffer.alloc(3))), { reason: 'malformed' });
  t.equal(errorExitCode(2), 127, 'ENOENT → 127');
  t.equal(errorExitCode(13), 126, 'EACCES → 126');
  t.equal(errnoName(2), 'ENOENT');
  t.equal(errnoName(1_000_000), undefined);
});

t.test('FrameDecoder: partial frames and several frames per chunk', async (t) => {
  const decoder = new FrameDecoder();
  const a = encodeFrame(FrameType.STDOUT, Buffer.from('hello'));
  const b = encodeFrame(FrameType.EXIT, encodeExit({ signaled: false, code: 0 }));
  const stream = Buffer.concat([a, b]);
  t.same(decoder.push(stream.subarray(0, 3)), []);
  t.equal(decoder.buffered, 3);
  t.same(decoder.push(stream.subarray(3, 10)), []);
  const frames = decoder.push(stream.subarray(10));
  t.same(frames.map((f) => [f.type, f.payload.toString('latin1')]), [
    [18, 'hello'],
    [20, '\0\0'],
  ]);
  t.equal(decoder.buffered, 0);
});

t.test('FrameDecoder rejects oversize as soon as the header is complete, then stays failed; ignores the reserved field', async (t) => {
  const oversize = Buffer.alloc(8);
  oversize.writeUInt32LE(MAX_PAYLOAD + 1, 0);
  oversize.writeUInt16LE(18, 4);
  const d1 = new FrameDecoder();
  t.match(thrown(() => d1.push(oversize)), { reason: 'oversize' });
  t.match(thrown(() => d1.push(encodeFrame(18))), { reason: 'oversize' }, 'poisoned');
  const reserved = encodeFrame(18, Buffer.from('x'));
  reserved.writeUInt16LE(0xffff, 6);
  const d2 = new FrameDecoder();
  t.equal(d2.pendingType, undefined, 'no header yet');
  t.same(d2.push(reserved.subarray(0, 8)), []);
  t.equal(d2.pendingType, 18, 'the header of a frame still missing its payload');
  t.same(d2.push(reserved.subarray(8)), [{ type: 18, payload: Buffer.from('x') }], 'kerf-init and kerf\'s client never read the reserved field');
  t.equal(d2.pendingType, undefined);
  const d3 = new FrameDecoder();
  const max = Buffer.alloc(8);
  max.writeUInt32LE(MAX_PAYLOAD, 0);
  t.same(d3.push(max), [], 'exactly MAX_PAYLOAD is allowed');
});

const openArb: fc.Arbitrary<OpenRequest> = fc.record({
  flags: fc.integer({ min: 0, max: 7 }),
  uid: fc.nat({ max: 0xffffffff }),
  gid: fc.nat({ max: 0xffffffff }),
  groups: fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 8 }),
  rows: fc.nat({ max: 0xffff }),
  cols: fc.nat({ max: 0xffff }),
  cwd: fc.string({ maxLength: 20 }).filter((s) => !s.includes('\0')),
  argv: fc.array(fc.string({ maxLength: 12 }).filter((s) => !s.includes('\0')), { minLength: 1, maxLength: 6 }),
  env: fc.array(fc.string({ maxLength: 12 }).filter((s) => !s.includes('\0')), { maxLength: 6 }),
});

t.test('property: OPEN round-trips', async (t) => {
  fc.assert(
    fc.property(openArb, (request) => {
      t.same(decodeOpen(encodeOpen(request)), { version: 1, ...request });
    }),
    { seed: SEED, numRuns: 200 },
  );
});

t.test('property: any split of a frame stream decodes to the same frames', async (t) => {
  const frameArb = fc.record({ type: fc.integer({ min: 0, max: 0xffff }), payload: fc.uint8Array({ maxLength: 300 }) });
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, cuts) => {
      const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)));
      const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((x, y) => x - y);
      const decoder = new FrameDecoder();
      const out = [];
      let last = 0;
      for (const p of [...points, bytes.length]) {
        out.push(...decoder.push(bytes.subarray(last, p)));
        last = p;
      }
      t.same(
        out.map((f) => [f.type, [...f.payload]]),
        frames.map((f) => [f.type, [...f.payload]]),
      );
      return decoder.buffered === 0;
    }),
    { seed: SEED, numRuns: 200 },
  );
});

t.test('property: hostile bytes never crash the decoders with anything but ProtocolError', async (t) => {
  let checked = 0;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const buffer = Buffer.from(bytes);
      for (const fn of [() => new FrameDecoder().push(buffer), () => decodeOpen(buffer), () => decodeError(buffer), () => decodeExit(buffer)]) {
        try {
          fn();
        } catch (e) {
          if (!(e instanceof ProtocolError)) return false;
        }
      }
      checked++;
      return true;
    }),
    { seed: SEED, numRuns: 500 },
  );
  t.equal(checked, 500);
});
