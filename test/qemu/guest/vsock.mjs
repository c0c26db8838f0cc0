// AF_VSOCK Duplex streams through LinuxSystem on the loopback transport (CID 1) inside the guest.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { assert, check, collect, emit, finish, lib, sleep, withTimeout } from './lib.mjs';

const { LinuxSystem } = lib('system/linux/index');
const sys = new LinuxSystem();
const LOCAL = { cid: 1, multikernel: false };

await check('vsock-loopback-available', async () => {
  assert(existsSync('/sys/module/vsock_loopback') || existsSync('/sys/module/vsock'), 'vsock_loopback module not loaded');
  return { modules: ['vsock', 'vmw_vsock_virtio_transport_common', 'vsock_loopback'].filter((m) => existsSync(`/sys/module/${m}`)) };
});

// echo server used by several checks
const echo = await sys.vsockListen({ port: 5000, multikernel: false });
(async () => {
  for await (const s of echo) {
    s.on('error', () => {});
    s.pipe(s);
  }
})().catch(() => {});

await check('vsock-echo', async () => {
  const s = await sys.vsockConnect({ ...LOCAL, port: 5000 });
  assert(s.remoteCid === 1 && s.remotePort === 5000, `remote ${s.remoteCid}:${s.remotePort}`);
  s.end('hello vsock');
  const got = (await withTimeout(collect(s), 20000, 'echo')).toString();
  assert(got === 'hello vsock', `echoed ${JSON.stringify(got)}`);
  return { local: `${s.localCid}:${s.localPort}` };
});

await check('vsock-64MiB-checksum', async () => {
  const TOTAL = 64 * 1024 * 1024;
  const sink = await sys.vsockListen({ port: 5001, multikernel: false });
  const server = (async () => {
    const s = await sink.accept();
    const h = createHash('sha256');
    let n = 0;
    // events, not for-await: the async iterator destroys the stream at the end of the loop
    s.on('data', (c) => {
      h.update(c);
      n += c.length;
    });
    await once(s, 'end');
    s.end(`${n} ${h.digest('hex')}`);
  })();
  const t0 = Date.now();
  const c = await sys.vsockConnect({ ...LOCAL, port: 5001 });
  const h = createHash('sha256');
  const chunk = Buffer.alloc(1024 * 1024);
  for (let off = 0; off < TOTAL; off += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((off + i) * 2654435761 >>> 0, i);
    h.update(chunk);
    if (!c.write(Buffer.from(chunk))) await once(c, 'drain');
  }
  c.end();
  const answer = (await withTimeout(collect(c), 120000, '64 MiB')).toString();
  await server;
  await sink.close();
  const expected = `${TOTAL} ${h.digest('hex')}`;
  assert(answer === expected, `server saw ${answer}, sent ${expected}`);
  const ms = Date.now() - t0;
  return { bytes: TOTAL, ms, MiBps: +(64 / (ms / 1000)).toFixed(1) };
});

await check('vsock-back-pressure', async () => {
  const srv = await sys.vsockListen({ port: 5002, multikernel: false });
  const accepted = srv.accept();
  const c = await sys.vsockConnect({ ...LOCAL, port: 5002 });
  const s = await accepted;
  s.pause(); // the server does not read yet
  const chunk = Buffer.alloc(256 * 1024, 7);
  let written = 0;
  let full = false;
  while (written < 256 * 1024 * 1024) {
    written += chunk.length;
    if (!c.write(chunk)) {
      full = true;
      break;
    }
    await sleep(0);
  }
  assert(full, `write() never returned false after ${written} bytes`);
  // the kernel buffer fills and stays full while nobody reads: no drain yet
  const early = await Promise.race([once(c, 'drain').then(() => 'drain'), sleep(1000).then(() => 'blocked')]);
  assert(early === 'blocked', 'drain came although the peer reads nothing');
  const writableLength = c.writableLength;
  let received = 0;
  s.on('data', (d) => {
    received += d.length;
  });
  s.resume();
  await withTimeout(once(c, 'drain'), 30000, 'drain after the peer reads');
  c.end();
  await withTimeout(once(s, 'end'), 30000, 'end');
  assert(received === written, `received ${received} of ${written}`);
  s.destroy();
  await srv.close();
  return { bytesBeforeFull: written, writableLength };
});

await check('vsock-100-concurrent', async () => {
  const N = 100;
  const t0 = Date.now();
  const results = await withTimeout(
    Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const s = await sys.vsockConnect({ ...LOCAL, port: 5000 });
        s.end(`connection ${i}`);
        return (await collect(s)).toString() === `connection ${i}` ? s.localPort : -1;
      }),
    ),
    120000,
    '100 connections',
  );
  assert(results.every((p) => p >= 0), `${results.filter((p) => p < 0).length} connections echoed wrong data`);
  assert(new Set(results).size === N, 'local ports are distinct');
  return { connections: N, ms: Date.now() - t0 };
});

await check('vsock-peer-vanishes', async () => {
  const srv = await sys.vsockListen({ port: 5003, multikernel: false });
  const accepted = srv.accept();
  const c = await sys.vsockConnect({ ...LOCAL, port: 5003 });
  const s = await accepted;
  // the server reads a little, then disappears (fd closed, no orderly end) while the client writes
  const outcome = new Promise((resolve) => {
    c.on('error', (e) => resolve(`error ${e.code}`));
    c.on('close', () => resolve('close'));
  });
  let gotEnd = false;
  c.on('end', () => {
    gotEnd = true;
  });
  c.resume();
  let stop = false;
  (async () => {
    const chunk = Buffer.alloc(64 * 1024, 1);
    while (!stop && !c.destroyed) {
      if (!c.write(chunk)) await Promise.race([once(c, 'drain'), once(c, 'close'), sleep(500)]).catch(() => {});
    }
  })().catch(() => {});
  await once(s, 'data');
  s.destroy();
  const how = await withTimeout(outcome, 20000, 'client notices the peer vanished');
  stop = true;
  c.destroy();
  await srv.close();
  return { outcome: how, gotEnd };
});

await check('vsock-connect-refused', async () => {
  let code;
  try {
    await sys.vsockConnect({ ...LOCAL, port: 5999 });
  } catch (e) {
    code = e.code;
  }
  assert(code === 'ECONNRESET' || code === 'ECONNREFUSED', `connect to a closed port: ${code}`);
  return { code };
});

await echo.close();
emit('vsock-script-complete', true);
finish();
