// FdDuplex and FdHandle readiness over real AF_UNIX socketpairs (from the test helper addon):
// 1 GiB with back-pressure, half-close both ways, destroy mid-transfer, errors, and no fd leaks.
import t from 'tap';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { AsyncLocalStorage } from 'node:async_hooks';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadBinding, type FdHandle } from '../../lib/binding';
import { FdDuplex } from '../../lib/system/linux/fd-stream';
import { fdIsOpen, handlePair, patchHandle as patched } from './helper';

const binding = loadBinding();
// the 1 GiB transfer needs 3-40 s depending on the load of the machine
t.setTimeout(600_000);
const MiB = 1024 * 1024;

/**
 * Memory that AddressSanitizer keeps back when this runs under it (`npm run test:asan` preloads
 * libasan): freed blocks wait in its quarantine, 256 MiB by default, before they are reused, so
 * streaming 1 GiB through short-lived buffers fills it. 0 when not under ASan.
 */
function asanQuarantine(): number {
  if (!(process.env.LD_PRELOAD ?? '').includes('libasan')) return 0;
  const set = /(?:^|:)quarantine_size_mb=(\d+)/.exec(process.env.ASAN_OPTIONS ?? '');
  return (set === null ? 256 : Number(set[1])) * MiB;
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function pair(options: { readSize?: number; writableHighWaterMark?: number } = {}): [FdDuplex, FdDuplex] {
  const [a, b] = handlePair(binding);
  return [new FdDuplex(binding, a, options), new FdDuplex(binding, b, options)];
}

function closed(stream: FdDuplex): Promise<unknown> {
  return stream.closed ? Promise.resolve() : once(stream, 'close');
}

async function collect(stream: FdDuplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

t.test('FdHandle readiness: watch, unwatch, async context, close', async (t) => {
  const [a, b] = handlePair(binding);
  t.teardown(() => {
    a.close();
    b.close();
  });
  const { UV_READABLE, UV_WRITABLE } = binding.constants;
  const als = new AsyncLocalStorage<string>();
  const seen: { status: number; events: number; store: string | undefined }[] = [];
  let fired!: () => void;
  const firedOnce = new Promise<void>((resolve) => (fired = resolve));
  // the handle's async context is the one it was made in
  const [c, d] = als.run('the-context', () => handlePair(binding));
  t.teardown(() => {
    c.close();
    d.close();
  });
  const callback = (status: number, events: number): void => {
    seen.push({ status, events, store: als.getStore() });
    d.unwatch();
    fired();
  };
  d.watch(UV_READABLE, callback);
  d.watch(UV_READABLE | UV_WRITABLE, () => t.fail('replaced before it could run')); // restart with other events
  d.watch(UV_READABLE, callback);
  // The context must survive a collection: Node 20 holds an async resource weakly, and a fresh
  // object made for it (node-addon-api's default) was collected here, losing the store (a CI flake).
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  c.write(Buffer.from('x'), 0, 1);
  await firedOnce;
  t.same(seen, [{ status: 0, events: UV_READABLE, store: 'the-context' }], 'readable, with the async context kept');
  d.unwatch();
  d.unwatch();
  const fd = d.fd;
  d.close();
  t.notOk(fdIsOpen(fd), 'close() stops the watch and closes the fd');
  t.throws(() => d.watch(UV_READABLE, callback), { code: 'EBADF', syscall: 'uv_poll_start' }, 'watch after close');
  t.throws(() => a.watch(8, callback), RangeError, 'unknown event bits');
  t.ok(fdIsOpen(a.fd) && fdIsOpen(b.fd), 'the other handles are untouched');
});

t.test('an exception thrown by a readiness callback is an uncaught exception', async (t) => {
  const [a, b] = handlePair(binding);
  const boom = new Error('boom from the callback');
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const caught = new Promise<unknown>((resolve) => process.once('uncaughtException', resolve));
  a.watch(binding.constants.UV_WRITABLE, () => {
    a.unwatch();
    throw boom;
  });
  const error = await caught;
  for (const l of listeners) process.on('uncaughtException', l);
  t.equal(error, boom);
  a.close();
  b.close();
});

t.test('a handle nobody closed is closed when it is collected', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const before = openFds();
  (() => {
    handlePair(binding);
  })();
  t.equal(openFds(), before + 2);
  for (let i = 0; i < 20 && openFds() > before; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  t.equal(openFds(), before, 'both fds closed by the finalizer');
});

t.test('1 GiB through a socketpair with a slow consumer', { timeout: 600_000 }, async (t) => {
  const total = 1024 * MiB;
  const chunkSize = 1 * MiB;
  const [writer, reader] = pair({ readSize: chunkSize, writableHighWaterMark: 4 * MiB });
  const pattern = Buffer.allocUnsafe(chunkSize);
  for (let i = 0; i < chunkSize; i += 4) pattern.writeUInt32LE((i * 2654435761) >>> 0, i);
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let maxWritable = 0;
  let maxReadable = 0;
  let drains = 0;
  let rssMax = process.memoryUsage().rss;
  const rssStart = rssMax;

  let receivedBytes = 0;
  let pausedOnce = false;
  const sink = new Writable({
    highWaterMark: chunkSize,
    write(chunk: Buffer, _enc, callback) {
      received.update(chunk);
      receivedBytes += chunk.length;
      maxReadable = Math.max(maxReadable, reader.readableLength);
      if (!pausedOnce && receivedBytes >= total / 4) {
        // The consumer stalls: the writer must block on a full socket, not buffer in memory.
        pausedOnce = true;
        setTimeout(callback, 300);
      } else if (receivedBytes % (64 * MiB) < chunk.length) {
        setTimeout(callback, 1);
      } else {
        callback();
      }
    },
  });
  const started = process.hrtime.bigint();
  reader.pipe(sink);
  const finished = once(sink, 'finish');

  for (let offset = 0, n = 0; offset < total; offset += chunkSize, n++) {
    const chunk = Buffer.from(pattern);
    chunk.writeUInt32LE(n, 0); // every chunk differs, so reordering changes the checksum
    sent.update(chunk);
    if (!writer.write(chunk)) {
      drains++;
      await once(writer, 'drain');
    }
    maxWritable = Math.max(maxWritable, writer.writableLength);
    if (n % 64 === 0) rssMax = Math.max(rssMax, process.memoryUsage().rss);
  }
  writer.end();
  await finished;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  t.equal(receivedBytes, total, 'every byte arrived');
  t.equal(received.digest('hex'), sent.digest('hex'), 'sha256 matches');
  t.ok(maxWritable <= 5 * MiB, `writer buffered at most ${(maxWritable / MiB).toFixed(2)} MiB`);
  t.ok(maxReadable <= 2 * MiB, `reader buffered at most ${(maxReadable / MiB).toFixed(2)} MiB`);
  t.ok(drains > 0, `the writer waited for drain ${drains} times`);
  const quarantine = asanQuarantine();
  t.ok(rssMax - rssStart < 256 * MiB + quarantine, `RSS grew by ${((rssMax - rssStart) / MiB).toFixed(0)} MiB${quarantine > 0 ? ` (bound 256 MiB + ASan's quarantine ${quarantine / MiB} MiB)` : ''}`);
  t.comment(`1 GiB in ${seconds.toFixed(2)} s: ${(1024 / seconds).toFixed(0)} MiB/s`);
  const bothClosed = Promise.all([once(writer, 'close'), once(reader, 'close')]);
  writer.destroy();
  reader.destroy();
  await bothClosed;
  t.notOk(fdIsOpen(writer.fd) || fdIsOpen(reader.fd), 'both fds closed');
});

t.test('half-close both ways', async (t) => {
  const fdsBefore = openFds();
  const [a, b] = pair();
  const bGotEnd = once(b, 'end');
  const aData = collect(a);
  a.end('from a');
  const fromA: Buffer[] = [];
  b.on('data', (c: Buffer) => fromA.push(c));
  await bGotEnd;
  t.equal(Buffer.concat(fromA).toString(), 'from a', 'b read everything, then EOF');
  t.notOk(a.destroyed, 'a is only half-closed');
  b.write('reply from b after a ended');
  b.end();
  t.equal((await aData).toString(), 'reply from b after a ended', 'a still reads after its own end()');
  await Promise.all([closed(a), closed(b)]);
  t.equal(openFds(), fdsBefore, 'both fds closed once both directions ended');
});

t.test('destroy mid-transfer: the peer sees an error or EOF, no fd leaks', async (t) => {
  const fdsBefore = openFds();
  const [w, r] = handlePair(binding);
  const writer = new FdDuplex(binding, w);
  let readsAfterDestroy = 0;
  const reader: FdDuplex = new FdDuplex(
    binding,
    patched(r, {
      read(buffer: Uint8Array, offset: number, length: number): number {
        if (reader.destroyed) readsAfterDestroy++;
        return r.read(buffer, offset, length);
      },
    }),
  );
  const block = Buffer.alloc(256 * 1024, 7);
  let got = 0;
  reader.on('data', (c: Buffer) => {
    got += c.length;
    if (got >= 4 * MiB && !reader.destroyed) reader.destroy();
  });
  reader.on('error', (e) => t.fail(`destroyed from a data listener, the reader must stop reading: ${e.message}`));
  const writerError = new Promise<NodeJS.ErrnoException>((resolve) => writer.once('error', resolve));
  const pump = async (): Promise<void> => {
    while (!writer.destroyed) {
      if (!writer.write(block)) {
        await new Promise((resolve) => {
          writer.once('drain', resolve);
          writer.once('close', resolve);
        });
      }
    }
  };
  await pump();
  const error = await writerError;
  t.ok(['EPIPE', 'ECONNRESET'].includes(error.code as string), `writer failed with ${error.code}`);
  t.equal(readsAfterDestroy, 0, 'no read(2) of the closed (perhaps reused) fd number after destroy()');
  t.equal(error.syscall, 'write');
  t.equal(error.message, `${error.code}: ${error.code === 'EPIPE' ? 'broken pipe' : 'connection reset by peer'}, write`);
  await closed(writer);
  t.equal(openFds(), fdsBefore, 'no fd leaked');

  // The other way round: the writer goes away, the reader drains and sees EOF.
  const [w2, r2] = pair();
  w2.write(Buffer.alloc(100_000, 1));
  w2.destroy();
  const data = await collect(r2);
  t.equal(data.length, 100_000, 'everything written before destroy() arrives, then EOF');
  await closed(r2);
  t.equal(openFds(), fdsBefore, 'no fd leaked');
});

t.test('a read error (ECONNRESET) destroys the stream', async (t) => {
  const [a, b] = handlePair(binding);
  const stream = new FdDuplex(binding, a);
  a.write(Buffer.from('unread by b'), 0, 11);
  b.write(Buffer.from('x'), 0, 1);
  b.close(); // closing with unread data resets the connection
  stream.resume();
  const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
  t.equal(error.code, 'ECONNRESET');
  t.equal(error.syscall, 'read');
  t.equal(error.message, 'ECONNRESET: connection reset by peer, read');
  await closed(stream);
  t.notOk(fdIsOpen(stream.fd), 'fd closed');
});

t.test('a write error (EPIPE) fails the write and destroys the stream', async (t) => {
  const [a, b] = handlePair(binding);
  b.close(); // nothing unread: the next write(2) fails with EPIPE
  const stream = new FdDuplex(binding, a);
  const writeError = new Promise<Error | null | undefined>((resolve) => stream.write('x', resolve));
  const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
  t.same({ code: error.code, errno: error.errno, syscall: error.syscall }, { code: 'EPIPE', errno: -32, syscall: 'write' });
  t.equal(await writeError, error, 'the write callback gets the same error');
  await closed(stream);
  t.notOk(fdIsOpen(stream.fd), 'fd closed');
});

t.test('destroy() fails a write that waits for the socket to drain', async (t) => {
  const fdsBefore = openFds();
  for (const reason of [undefined, new Error('gave up')]) {
    const [a, b] = handlePair(binding);
    const stream = new FdDuplex(binding, a);
    stream.on('error', () => {});
    // more than the socket buffer takes: the rest of the chunk waits for WRITABLE
    const written = new Promise<Error | null | undefined>((resolve) => stream.write(Buffer.alloc(8 * MiB), resolve));
    await new Promise((resolve) => setImmediate(resolve));
    t.ok(stream.writableLength > 0, 'the write is pending');
    stream.destroy(reason);
    const outcome = await Promise.race([written, new Promise((resolve) => setTimeout(() => resolve('never called'), 2000))]);
    if (reason === undefined) {
      t.match(outcome, { code: 'ERR_STREAM_DESTROYED' }, "the write's callback gets ERR_STREAM_DESTROYED");
    } else {
      t.equal(outcome, reason, "the write's callback gets the destroy error");
    }
    await closed(stream);
    b.close();
  }
  t.equal(openFds(), fdsBefore, 'no fd leaked');
});

t.test('failures of shutdown, close and the poll itself', async (t) => {
  const fdsBefore = openFds();
  await t.test('shutdownWrite failing fails end()', async (t) => {
    const [a, b] = handlePair(binding);
    const stream = new FdDuplex(
      binding,
      patched(a, {
        shutdownWrite: () => {
          throw Object.assign(new Error('ENOTCONN: socket is not connected, shutdown'), { code: 'ENOTCONN' });
        },
      }),
    );
    stream.end();
    const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
    t.equal(error.code, 'ENOTCONN');
    b.close();
  });
  await t.test('close failing is reported by destroy()', async (t) => {
    const [a, b] = handlePair(binding);
    const closeError = Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO' });
    const failingClose = (handle: FdHandle): FdHandle =>
      patched(handle, {
        close: () => {
          handle.close();
          throw closeError;
        },
      });
    const s1 = new FdDuplex(binding, failingClose(a));
    s1.destroy();
    t.equal(((await once(s1, 'error')) as [Error])[0], closeError, 'the close error when there was none');
    const s2 = new FdDuplex(binding, failingClose(b));
    const first = new Error('first');
    s2.destroy(first);
    t.equal(((await once(s2, 'error')) as [Error])[0], first, 'the original error wins');
  });
  await t.test('a poll error destroys the stream', async (t) => {
    let callback!: (status: number, events: number) => void;
    const fakeWatch = { watch: (_events: number, cb: (status: number, events: number) => void) => void (callback = cb), unwatch: () => {} };
    const [a, b] = handlePair(binding);
    const stream = new FdDuplex(binding, patched(a, fakeWatch));
    stream.resume();
    await new Promise((resolve) => setImmediate(resolve));
    callback(-9, 0);
    const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
    t.same({ code: error.code, errno: error.errno, syscall: error.syscall }, { code: 'EBADF', errno: -9, syscall: 'uv_poll' }, "no socket error: libuv's");
    b.close();

    const [c, d] = handlePair(binding);
    const notASocket = new FdDuplex(
      binding,
      patched(c, {
        ...fakeWatch,
        socketError: () => {
          throw Object.assign(new Error('ENOTSOCK: socket operation on non-socket, getsockopt'), { code: 'ENOTSOCK' });
        },
      }),
    );
    notASocket.resume();
    await new Promise((resolve) => setImmediate(resolve));
    callback(-9, 0);
    const [error2] = (await once(notASocket, 'error')) as [NodeJS.ErrnoException];
    t.equal(error2.syscall, 'uv_poll', "not a socket: libuv's error");
    d.close();

    const [e, f] = handlePair(binding);
    const reading = new FdDuplex(binding, patched(e, { ...fakeWatch, socketError: () => 104 }));
    reading.resume();
    await new Promise((resolve) => setImmediate(resolve));
    callback(-9, 0);
    const [error3] = (await once(reading, 'error')) as [NodeJS.ErrnoException];
    t.same({ code: error3.code, syscall: error3.syscall }, { code: 'ECONNRESET', syscall: 'read' }, 'the socket error wins');
    f.close();
  });
  t.equal(openFds(), fdsBefore, 'no fd leaked');
});

t.test('constructor validation', async (t) => {
  const [a, b] = handlePair(binding);
  t.throws(() => new FdDuplex(binding, a, { readSize: 0 }), RangeError);
  t.throws(() => new FdDuplex(binding, a, { readSize: 1.5 }), RangeError);
  a.close();
  b.close();
});

t.test('paced (no flow control): writes of at most maxWrite, a full ring waited out, not an error', async (t) => {
  const [a, b] = handlePair(binding);
  const sizes: number[] = [];
  let full = 3; // the next three writes find the ring full
  const nospc = (code: string) => Object.assign(new Error(`${code}: no room`), { code });
  const codes = ['ENOSPC', 'ENOBUFS', 'ENOMEM'];
  const stream = new FdDuplex(
    binding,
    patched(a, {
      write: (buffer: Uint8Array, offset: number, length: number) => {
        if (full > 0) throw nospc(codes[--full]!);
        sizes.push(length);
        return a.write(buffer, offset, length);
      },
    }),
    { paced: { maxWrite: 1000 } },
  );
  const peer = new FdDuplex(binding, b);
  const received: Buffer[] = [];
  peer.on('data', (c: Buffer) => received.push(c));
  const data = Buffer.alloc(4500, 7);
  const t0 = Date.now();
  await new Promise<void>((resolve, reject) => stream.write(data, (e) => (e ? reject(e) : resolve())));
  t.ok(Date.now() - t0 >= 1 + 2 + 4 - 1, 'paused 1, 2 and 4 ms');
  t.same(sizes, [1000, 1000, 1000, 1000, 500], 'at most maxWrite per write(2)');
  stream.end();
  await once(peer, 'end');
  t.equal(Buffer.concat(received).length, 4500, 'everything arrived, in one piece');
  stream.destroy();
  peer.destroy();

  // destroyed while waiting for room: the write fails, the timer is gone
  const [c, d] = handlePair(binding);
  const stuck = new FdDuplex(binding, patched(c, { write: () => { throw nospc('ENOSPC'); } }), { paced: { maxWrite: 4096 } });
  const failed = new Promise<Error | null | undefined>((resolve) => stuck.write(Buffer.alloc(10), resolve));
  stuck.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, 20));
  stuck.destroy();
  t.match(await failed, { code: 'ERR_STREAM_DESTROYED' });
  d.close();

  // unpaced: ENOSPC is an error like any other
  const [e, f] = handlePair(binding);
  const plain = new FdDuplex(binding, patched(e, { write: () => { throw nospc('ENOSPC'); } }));
  plain.write(Buffer.alloc(10));
  t.match(((await once(plain, 'error')) as [Error])[0], { code: 'ENOSPC' });
  f.close();
  t.throws(() => new FdDuplex(binding, f, { paced: { maxWrite: 0 } }), RangeError);
});
