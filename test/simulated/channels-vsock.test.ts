/**
 * AF_VSOCK semantics of the simulated kernel (net/vmw_vsock/mk_transport.c, af_vsock.c,
 * kernel/multikernel/ipi.c), through the SimChannels seam with a fake core.
 */
import t from 'tap';
import type { Duplex } from 'node:stream';
import { MK_PACKET_PAYLOAD, MK_RING_SLOTS, SimVsock } from '../../lib/system/simulated/vsock';
import { once } from 'node:events';
import type { VsockStream } from '../../lib/system/system';
import { VMADDR_PORT_ANY } from '../../lib/uapi';
import { FakeCore, tick } from './channels-fixture';

async function collect(stream: VsockStream, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
    chunks.push(chunk as Buffer);
    n += (chunk as Buffer).length;
    if (n >= bytes) break;
  }
  return Buffer.concat(chunks);
}

t.test('loopback transport: CID 1 reaches listeners of this host', async (t) => {
  const core = new FakeCore();
  const server = await core.channels.vsockListen({ port: 5000, multikernel: false });
  t.equal(server.port, 5000);
  const client = await core.channels.vsockConnect({ cid: 1, port: 5000, multikernel: false });
  const accepted = await server.accept();
  t.same([client.localCid, client.remoteCid, client.remotePort], [1, 1, 5000]);
  t.same([accepted.localCid, accepted.localPort, accepted.remotePort], [1, 5000, client.localPort]);
  t.ok(client.localPort > 1023, 'an ephemeral port above the reserved range');
  client.write('ping');
  t.equal((await collect(accepted, 4)).toString(), 'ping');
  accepted.end('pong');
  const chunks: Buffer[] = [];
  for await (const chunk of client) chunks.push(chunk as Buffer);
  t.equal(Buffer.concat(chunks).toString(), 'pong', 'then end of file');
  await t.rejects(core.channels.vsockConnect({ cid: 2, port: 5000, multikernel: false }), { code: 'ENODEV', syscall: 'connect' }, 'loopback has no other CIDs');
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 5001, multikernel: false }), { code: 'ECONNRESET', syscall: 'connect' }, 'nobody listens');
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 5000, multikernel: false, signal: AbortSignal.abort(new Error('no')) }), { message: 'no' });
  await core.channels.close();
});

t.test('ports: reserved ports, EADDRINUSE, ephemeral, release on close', async (t) => {
  const core = new FakeCore();
  await core.channels.vsockListen({ port: 6000, multikernel: false });
  const a = await core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false, localPort: 700 });
  t.equal(a.localPort, 700, 'privileged: a reserved port binds');
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false, localPort: 700 }), { code: 'EADDRINUSE', syscall: 'bind' });
  await t.rejects(core.channels.vsockListen({ port: 6000 }), { code: 'EADDRINUSE' }, 'one port table for listeners and connections');
  await t.rejects(core.channels.vsockListen({ port: -1 }), { code: 'EINVAL' });
  const e1 = await core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false });
  const e2 = await core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false });
  t.equal(e2.localPort, e1.localPort + 1, 'ephemeral ports count up');
  const taken = await core.channels.vsockListen({ port: e2.localPort + 1 });
  const e3 = await core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false });
  t.equal(e3.localPort, e2.localPort + 2, 'bound ports are skipped');
  await taken.close();
  a.destroy();
  await tick();
  const again = await core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false, localPort: 700 });
  t.equal(again.localPort, 700, 'closing released the port');
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 6001, multikernel: false, localPort: 701 }), { code: 'ECONNRESET' });
  const reuse = await core.channels.vsockConnect({ cid: 1, port: 6000, multikernel: false, localPort: 701 });
  t.equal(reuse.localPort, 701, 'a failed connect released its port');
  const any = await core.channels.vsockListen({ port: VMADDR_PORT_ANY });
  t.ok(any.port > 1023);
  t.ok((await core.channels.vsockListen({ port: 6100, cid: 0 })).port, 'CID 0 is the host on the multikernel transport');
  t.ok((await core.channels.vsockListen({ port: 6101, cid: 1, multikernel: false })).port, 'CID 1 on loopback');
  await t.rejects(core.channels.vsockListen({ port: 6102, cid: 5 }), { code: 'EADDRNOTAVAIL' });
  const resets: string[] = [];
  for (const s of [a, e1, e2, e3, again, reuse]) s.on('error', (e: NodeJS.ErrnoException) => resets.push(e.code!));
  await core.channels.close();
  await tick();
  t.same(resets, ['ECONNRESET', 'ECONNRESET', 'ECONNRESET', 'ECONNRESET', 'ECONNRESET'], 'never-accepted connections are reset when the listener closes');

  const user = new FakeCore({ privileged: false });
  await t.rejects(user.channels.vsockListen({ port: 1023 }), { code: 'EACCES', syscall: 'bind' });
  await t.rejects(user.channels.vsockConnect({ cid: 1, port: 1, localPort: 1023 }), { code: 'EACCES', syscall: 'bind' });
  t.ok((await user.channels.vsockListen({ port: 1024 })).port, '1024 needs no privilege');
});

t.test('listener: backlog, accept abort, close, async iteration', async (t) => {
  const core = new FakeCore();
  const server = await core.channels.vsockListen({ port: 7000, backlog: 1 });
  const first = await core.channels.vsockConnect({ cid: 1, port: 7000, multikernel: false });
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 7000, multikernel: false }), { code: 'ECONNRESET' }, 'accept queue full');
  const controller = new AbortController();
  const accepted = await server.accept();
  t.equal(accepted.remotePort, first.localPort);
  const pending = server.accept({ signal: controller.signal });
  controller.abort(new Error('enough'));
  await t.rejects(pending, { message: 'enough' });
  await t.rejects(server.accept({ signal: AbortSignal.abort(new Error('before')) }), { message: 'before' });
  const later = server.accept({ signal: new AbortController().signal });
  const queued = await core.channels.vsockConnect({ cid: 1, port: 7000, multikernel: false });
  t.equal((await later).remotePort, queued.localPort, 'a waiting accept gets the next connection');
  const orphan = await core.channels.vsockConnect({ cid: 1, port: 7000, multikernel: false });
  const orphanError = once(orphan, 'error');
  await server.close();
  t.match((await orphanError)[0], { code: 'ECONNRESET' }, 'never accepted: reset');
  await t.rejects(server.accept(), { code: 'EBADF' });
  await server.close();
  const idle = await core.channels.vsockListen({ port: 7002 });
  const waiting = idle.accept({ signal: new AbortController().signal });
  await idle.close();
  await t.rejects(waiting, { code: 'EBADF', syscall: 'accept' }, 'closing rejects a waiting accept');

  const iterated = await core.channels.vsockListen({ port: 7001 });
  const seen: number[] = [];
  const loop = (async () => {
    for await (const stream of iterated) seen.push(stream.localPort);
  })();
  await core.channels.vsockConnect({ cid: 1, port: 7001, multikernel: false });
  await core.channels.vsockConnect({ cid: 1, port: 7001, multikernel: false });
  await tick();
  await iterated.close();
  await loop;
  t.same(seen, [7001, 7001], 'iteration ends when the listener closes');
});

t.test('back-pressure: a 64 KiB window per direction, nothing lost', async (t) => {
  const core = new FakeCore();
  const server = await core.channels.vsockListen({ port: 7100 });
  const client = await core.channels.vsockConnect({ cid: 1, port: 7100, multikernel: false });
  const peer = await server.accept();
  const data = Buffer.alloc(300 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  let full = false;
  for (let off = 0; off < data.length; off += 16 * 1024) {
    if (!client.write(data.subarray(off, off + 16 * 1024))) full = true;
  }
  t.ok(full, 'write() reports a full buffer');
  await tick();
  t.ok(peer.readableLength <= 64 * 1024, `the reader buffers at most 64 KiB (${peer.readableLength})`);
  t.ok(client.writableLength > 0, 'the rest waits on the writer');
  const drained = once(client, 'drain');
  const got = await collect(peer, data.length);
  await drained;
  t.ok(got.equals(data), 'all bytes, in order');
  peer.destroy();
  await tick();
  const failed = once(client, 'error');
  client.write('late');
  t.match((await failed)[0], { code: 'EPIPE' }, 'writing to a closed peer fails EPIPE');

  const writer = await core.channels.vsockConnect({ cid: 1, port: 7100, multikernel: false });
  const reader = await server.accept();
  while (writer.write(Buffer.alloc(16 * 1024))); // fill both buffers: the last write is blocked
  await tick();
  const broken = once(writer, 'error');
  reader.destroy();
  writer.write('more');
  t.match((await broken)[0], { code: 'EPIPE' }, 'a writer blocked on a reader that goes away is released, then fails');
  await core.channels.close();
});

t.test('multikernel transport: errors by instance state', async (t) => {
  const core = new FakeCore();
  await t.rejects(core.channels.vsockConnect({ cid: 9, port: 1023 }), { code: 'EINVAL', syscall: 'connect' }, 'no such instance');
  core.create(1, 'one');
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 1023 }), { code: 'ENODEV' }, 'no image loaded');
  core.load(1);
  const before = Date.now();
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 1023 }), { code: 'ETIMEDOUT' }, 'loaded but not running: no answer');
  t.ok(Date.now() - before >= 190, 'after the connect timeout');
  core.start(1);
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 4000 }), { code: 'ECONNRESET' }, 'nobody listens in the instance');
  const agent = await core.channels.vsockConnect({ cid: 1, port: 1023, localPort: 1000 });
  t.same([agent.localCid, agent.localPort, agent.remoteCid, agent.remotePort], [0, 1000, 1, 1023]);
  agent.destroy();
});

t.test('hang: connect hangs until timeout, streams fall silent without closing', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const stream = await core.channels.vsockConnect({ cid: 1, port: 1023, localPort: 900 });
  let closed = false;
  let data = 0;
  stream.on('close', () => (closed = true));
  stream.on('data', (chunk: Buffer) => (data += chunk.length));
  let written = false;
  stream.write(Buffer.alloc(100 * 1024), () => (written = true)); // no flow control: taken at once
  core.hang(1);
  await tick(50);
  t.ok(written, 'the write completed: its bytes are lost with the kernel');
  stream.write(Buffer.alloc(100));
  await tick(50);
  t.equal(data, 0, 'nothing comes back');
  t.notOk(closed, 'and nothing closes');
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 1023, signal: new AbortController().signal }), { code: 'ETIMEDOUT' });
  const controller = new AbortController();
  const pending = core.channels.vsockConnect({ cid: 1, port: 1023, signal: controller.signal });
  controller.abort(new Error('give up'));
  await t.rejects(pending, { message: 'give up' });
  const later = new AbortController();
  const waiting = core.channels.vsockConnect({ cid: 1, port: 1023, signal: later.signal });
  await tick(20);
  later.abort(new Error('waited enough'));
  await t.rejects(waiting, { message: 'waited enough' }, 'an abort during the wait');
  stream.destroy();
  stream.end();
});

for (const how of ['halt', 'poweroff', 'panic', 'forced'] as const) {
  t.test(`a stop (${how}) sends nothing: the connections stay open and silent`, async (t) => {
    const core = new FakeCore();
    core.create(1, 'one', 'loaded');
    core.start(1);
    const stream = await core.channels.vsockConnect({ cid: 1, port: 1023, localPort: 901 });
    let events = 0;
    for (const e of ['data', 'end', 'error', 'close']) stream.on(e, () => events++);
    core.stop(1, how);
    t.ok(stream.write('into the void'), 'writes are accepted');
    stream.end();
    await tick(50);
    t.equal(events, 0, 'no data, no end of file, no reset');
    t.notOk(stream.destroyed);
    core.channels.instanceStopped(1, how); // nothing left to stop
    core.channels.instanceHung(5); // nothing to silence
    stream.destroy();
  });
}

t.test('fault hook vsock.connect', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  core.faults.add({ op: 'vsock.connect', id: 1, times: 1, action: { errno: 'ECONNREFUSED' } });
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 1023 }), { code: 'ECONNREFUSED', syscall: 'connect' });
  core.faults.add({ op: 'vsock.connect', id: 1, times: 1, action: { halfway: true } });
  await t.rejects(core.channels.vsockConnect({ cid: 1, port: 1023 }), { code: 'ETIMEDOUT' }, 'halfway: the request is lost');
  const ok = await core.channels.vsockConnect({ cid: 1, port: 1023, localPort: 1000 });
  t.equal(ok.remotePort, 1023);
  const reset = once(ok, 'error');
  await core.channels.close();
  t.match((await reset)[0], { code: 'ECONNRESET' });
  t.ok(ok.destroyed, 'close() resets instance connections');
});

t.test('multikernel transport: no flow control; a silent kernel\'s ring fills, then writes wait', async (t) => {
  const core = new FakeCore();
  core.create(1, 'one', 'loaded');
  core.start(1);
  const guests: Duplex[] = [];
  const vsock = new SimVsock(core, { privileged: true, connectTimeoutMs: 200, instanceListener: () => (guest) => void guests.push(guest) });
  t.teardown(() => vsock.close());
  const host = await vsock.connect({ cid: 1, port: 5000 });
  // the spawn's socket never reads: every write still completes, its queue grows (mk_vsock_rx_pkt)
  const chunk = Buffer.alloc(64 * 1024, 1);
  const done: number[] = [];
  for (let i = 0; i < 16; i++) host.write(chunk, () => done.push(i));
  await tick(20);
  t.equal(done.length, 16, 'all 1 MiB written although nobody reads');
  t.equal(guests[0]!.readableLength, 16 * 64 * 1024, "queued at the receiver, whatever its high-water mark");
  // and the other way
  let back = 0;
  guests[0]!.write(Buffer.alloc(256 * 1024), () => back++);
  await tick(20);
  t.equal(back, 1, 'the spawn side too');

  // hung: the ring takes 64 packets of 4028 bytes, shared by the instance's connections
  const second = await vsock.connect({ cid: 1, port: 5001 });
  vsock.instanceHung(1);
  let first = false;
  host.write(Buffer.alloc(60 * MK_PACKET_PAYLOAD), () => (first = true));
  let other = false;
  second.write(Buffer.alloc(4 * MK_PACKET_PAYLOAD), () => (other = true));
  let stuck: Error | null | undefined | 'waiting' = 'waiting';
  host.write(Buffer.alloc(1), (e) => (stuck = e));
  await tick(20);
  t.ok(first && other, `${MK_RING_SLOTS} slots taken by two connections`);
  t.equal(stuck, 'waiting', 'the next write waits for room that never comes');
  host.destroy();
  await tick(5);
  t.match(stuck, { code: 'ERR_STREAM_DESTROYED' }, 'destroying the stream fails the waiting write');
  second.destroy();

  // stopped: the same, with a fresh ring
  core.stop(1);
  const fresh = await (async () => {
    core.start(1);
    const c = await vsock.connect({ cid: 1, port: 5002 });
    vsock.instanceStopped(1);
    return c;
  })();
  let fits = false;
  fresh.write(Buffer.alloc(MK_RING_SLOTS * MK_PACKET_PAYLOAD), () => (fits = true));
  let waits = true;
  fresh.write(Buffer.alloc(1), () => (waits = false));
  await tick(20);
  t.ok(fits && waits, 'a stopped kernel: the ring fills, then writes wait');
  fresh.destroy();
});
