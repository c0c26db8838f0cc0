// FdDuplex and FdWatcher over real AF_UNIX socketpairs: 1 GiB with back-pressure, half-close
// both ways, destroy mid-transfer, errors, and no fd leaks.
import t from 'tap';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { AsyncLocalStorage } from 'node:async_hooks';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { loadBinding, type NativeBinding } from '../../lib/binding';
import { FdDuplex } from '../../lib/system/linux/fd-stream';

const binding = loadBinding();
// the 1 GiB transfer needs 3-40 s depending on the load of the machine
t.setTimeout(600_000);
const MiB = 1024 * 1024;

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function fdIsOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

function pair(options: { readSize?: number; writableHighWaterMark?: number } = {}): [FdDuplex, FdDuplex] {
  const [a, b] = binding.socketpair();
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

t.test('FdWatcher', async (t) => {
  const [a, b] = binding.socketpair();
  t.teardown(() => {
    binding.close(a);
    binding.close(b);
  });
  const { UV_READABLE, UV_WRITABLE } = binding.constants;
  const als = new AsyncLocalStorage<string>();
  const seen: { status: number; events: number; store: string | undefined }[] = [];
  let watcher!: InstanceType<NativeBinding['FdWatcher']>;
  const fired = new Promise<void>((resolve) => {
    als.run('the-context', () => {
      watcher = new binding.FdWatcher(b, (status, events) => {
        seen.push({ status, events, store: als.getStore() });
        watcher.stop();
        resolve();
      });
    });
  });
  watcher.start(UV_READABLE);
  watcher.start(UV_READABLE | UV_WRITABLE); // restart with other events
  watcher.start(UV_READABLE);
  binding.write(a, Buffer.from('x'), 0, 1);
  await fired;
  t.same(seen, [{ status: 0, events: UV_READABLE, store: 'the-context' }], 'readable, with the async context kept');
  watcher.close();
  watcher.close();
  watcher.stop();
  t.throws(() => watcher.start(UV_READABLE), { code: 'EBADF', syscall: 'uv_poll_start' }, 'start after close');
  t.throws(() => watcher.start(8), RangeError, 'unknown event bits');
  t.throws(() => new binding.FdWatcher(1_000_000, () => {}), { code: 'EBADF', syscall: 'uv_poll_init' });
  const file = fs.openSync(__filename, 'r');
  t.throws(() => new binding.FdWatcher(file, () => {}), { code: 'EPERM', syscall: 'uv_poll_init' }, 'regular files cannot be polled');
  fs.closeSync(file);
  t.ok(fdIsOpen(b), 'closing the watcher never closes the fd');
});

t.test('an exception thrown by a watcher callback is an uncaught exception', async (t) => {
  const [a, b] = binding.socketpair();
  const boom = new Error('boom from the callback');
  const watcher = new binding.FdWatcher(a, () => {
    watcher.close();
    throw boom;
  });
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const caught = new Promise<unknown>((resolve) => process.once('uncaughtException', resolve));
  watcher.start(binding.constants.UV_WRITABLE);
  const error = await caught;
  for (const l of listeners) process.on('uncaughtException', l);
  t.equal(error, boom);
  binding.close(a);
  binding.close(b);
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
  t.ok(rssMax - rssStart < 256 * MiB, `RSS grew by ${((rssMax - rssStart) / MiB).toFixed(0)} MiB`);
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
  const [w, r] = binding.socketpair();
  const writer = new FdDuplex(binding, w);
  let readsAfterDestroy = 0;
  const reader: FdDuplex = new FdDuplex(
    {
      ...binding,
      read(fd: number, buffer: Uint8Array, offset: number, length: number): number {
        if (reader.destroyed) readsAfterDestroy++;
        return binding.read(fd, buffer, offset, length);
      },
    },
    r,
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
  const [a, b] = binding.socketpair();
  const stream = new FdDuplex(binding, a);
  binding.write(a, Buffer.from('unread by b'), 0, 11);
  binding.write(b, Buffer.from('x'), 0, 1);
  binding.close(b); // closing with unread data resets the connection
  stream.resume();
  const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
  t.equal(error.code, 'ECONNRESET');
  t.equal(error.syscall, 'read');
  t.equal(error.message, 'ECONNRESET: connection reset by peer, read');
  await closed(stream);
  t.notOk(fdIsOpen(a), 'fd closed');
});

t.test('a write error (EPIPE) fails the write and destroys the stream', async (t) => {
  const [a, b] = binding.socketpair();
  binding.close(b); // nothing unread: the next write(2) fails with EPIPE
  const stream = new FdDuplex(binding, a);
  const writeError = new Promise<Error | null | undefined>((resolve) => stream.write('x', resolve));
  const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
  t.same({ code: error.code, errno: error.errno, syscall: error.syscall }, { code: 'EPIPE', errno: -32, syscall: 'write' });
  t.equal(await writeError, error, 'the write callback gets the same error');
  await closed(stream);
  t.notOk(fdIsOpen(a), 'fd closed');
});

t.test('ownsFd false leaves the fd open', async (t) => {
  const [a, b] = binding.socketpair();
  const stream = new FdDuplex(binding, a, { ownsFd: false });
  stream.destroy();
  await closed(stream);
  t.ok(fdIsOpen(a));
  binding.close(a);
  binding.close(b);
});

/** The real binding with some calls replaced, for failures a socketpair cannot produce. */
function patched(overrides: Partial<NativeBinding>): NativeBinding {
  return { ...binding, ...overrides } as NativeBinding;
}

t.test('failures of shutdown, close and the poll itself', async (t) => {
  const fdsBefore = openFds();
  await t.test('shutdownWrite failing fails end()', async (t) => {
    const [a, b] = binding.socketpair();
    const stream = new FdDuplex(
      patched({
        shutdownWrite: () => {
          throw Object.assign(new Error('ENOTCONN: socket is not connected, shutdown'), { code: 'ENOTCONN' });
        },
      }),
      a,
    );
    stream.end();
    const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
    t.equal(error.code, 'ENOTCONN');
    binding.close(b);
  });
  await t.test('close failing is reported by destroy()', async (t) => {
    const [a, b] = binding.socketpair();
    const closeError = Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO' });
    const fake = patched({
      close: (fd: number) => {
        binding.close(fd);
        throw closeError;
      },
    });
    const s1 = new FdDuplex(fake, a);
    s1.destroy();
    t.equal(((await once(s1, 'error')) as [Error])[0], closeError, 'the close error when there was none');
    const s2 = new FdDuplex(fake, b);
    const first = new Error('first');
    s2.destroy(first);
    t.equal(((await once(s2, 'error')) as [Error])[0], first, 'the original error wins');
  });
  await t.test('a poll error destroys the stream', async (t) => {
    const [a, b] = binding.socketpair();
    let callback!: (status: number, events: number) => void;
    const fake = patched({
      FdWatcher: class {
        constructor(_fd: number, cb: (status: number, events: number) => void) {
          callback = cb;
        }
        start(): void {}
        stop(): void {}
        close(): void {}
      },
    });
    const stream = new FdDuplex(fake, a);
    stream.resume();
    callback(-9, 0);
    const [error] = (await once(stream, 'error')) as [NodeJS.ErrnoException];
    t.same({ code: error.code, errno: error.errno, syscall: error.syscall }, { code: 'EBADF', errno: -9, syscall: 'uv_poll' }, 'no socket error: libuv\'s');
    binding.close(b);

    const [c, d] = binding.socketpair();
    const notASocket = new FdDuplex(
      patched({
        FdWatcher: fake.FdWatcher,
        socketError: () => {
          throw Object.assign(new Error('ENOTSOCK: socket operation on non-socket, getsockopt'), { code: 'ENOTSOCK' });
        },
      }),
      c,
    );
    notASocket.resume();
    callback(-9, 0);
    const [error2] = (await once(notASocket, 'error')) as [NodeJS.ErrnoException];
    t.equal(error2.syscall, 'uv_poll', 'not a socket: libuv\'s error');
    binding.close(d);

    const [e, f] = binding.socketpair();
    const reading = new FdDuplex(patched({ FdWatcher: fake.FdWatcher, socketError: () => 104 }), e);
    reading.resume();
    callback(-9, 0);
    const [error3] = (await once(reading, 'error')) as [NodeJS.ErrnoException];
    t.same({ code: error3.code, syscall: error3.syscall }, { code: 'ECONNRESET', syscall: 'read' }, 'the socket error wins');
    binding.close(f);
  });
  t.equal(openFds(), fdsBefore, 'no fd leaked');
});

t.test('constructor validation', async (t) => {
  t.throws(() => new FdDuplex(binding, -1), RangeError);
  t.throws(() => new FdDuplex(binding, 1.5), RangeError);
  t.throws(() => new FdDuplex(binding, 0, { readSize: 0 }), RangeError);
  t.throws(() => new FdDuplex(binding, 0, { readSize: 1.5 }), RangeError);
});
