// lib/system/linux/vsock.ts against a fake vsock: the binding's vsock calls are mapped onto real
// AF_UNIX socketpairs (so FdWatcher, read/write and FdDuplex are the real ones), with a small
// in-memory table of ports. Real AF_VSOCK is exercised inside QEMU guests (test/qemu).
import t from 'tap';
import * as fs from 'node:fs';
import { once } from 'node:events';
import { loadBinding, type NativeBinding, type VsockAddress } from '../../lib/binding';
import { systemError } from '../../lib/errors';
import { VMADDR_CID_ANY } from '../../lib/uapi';
import { vsockConnect, vsockListen } from '../../lib/system/linux/vsock';
import type { VsockStream } from '../../lib/system/system';

const real = loadBinding();
const HOST_CID = 2;
const GUEST_CID = 7;
const ANY_PORT = 0xffffffff;

interface Sock {
  spare?: number; // the other end of the socketpair: becomes the accepted fd of a connection
  multikernel: boolean;
  local?: VsockAddress;
  remote?: VsockAddress;
  queue?: { fd: number; cid: number; port: number }[];
}

interface FakeVsock {
  binding: NativeBinding;
  calls: string[];
  /** how the next connects answer: connected at once, in progress, refused (SO_ERROR), or stuck */
  connectMode: 'now' | 'progress' | 'refused' | 'stuck';
  acceptError?: Error;
  localAddressError?: Error;
}

function fakeVsock(): FakeVsock {
  const socks = new Map<number, Sock>();
  const listeners = new Map<number, number>(); // port -> listening fd
  let nextPort = 49152;
  const soError = new Map<number, number>();
  const state: FakeVsock = {
    calls: [],
    connectMode: 'now',
    binding: {
      ...real,
      vsockSocket(multikernel: boolean): number {
        state.calls.push(`socket(${multikernel})`);
        const [a, b] = real.socketpair();
        socks.set(a, { spare: b, multikernel });
        return a;
      },
      vsockBind(fd: number, cid: number, port: number): void {
        state.calls.push(`bind(${cid}, ${port})`);
        const sock = socks.get(fd) as Sock;
        if (port !== ANY_PORT && [...socks.values()].some((s) => s.local?.port === port)) {
          throw systemError('EADDRINUSE', 'bind');
        }
        sock.local = { cid: cid === VMADDR_CID_ANY ? HOST_CID : cid, port: port === ANY_PORT ? nextPort++ : port };
      },
      vsockListen(fd: number, backlog: number): void {
        state.calls.push(`listen(${backlog})`);
        const sock = socks.get(fd) as Sock;
        sock.queue = [];
        listeners.set((sock.local as VsockAddress).port, fd);
      },
      vsockConnect(fd: number, cid: number, port: number): boolean {
        state.calls.push(`connect(${cid}, ${port})`);
        const sock = socks.get(fd) as Sock;
        sock.local ??= { cid: GUEST_CID, port: nextPort++ };
        sock.remote = { cid, port };
        const mode = state.connectMode;
        if (mode === 'refused') {
          soError.set(fd, 111); // ECONNREFUSED
          return false;
        }
        if (mode === 'stuck') {
          // fill the socket so it is not writable: the connect never completes
          const block = Buffer.alloc(65536);
          while (real.write(fd, block, 0, block.length) > 0);
          return false;
        }
        const listenerFd = listeners.get(port);
        if (listenerFd === undefined) throw systemError('ECONNRESET', 'connect');
        const listener = socks.get(listenerFd) as Sock;
        const accepted = sock.spare as number;
        delete sock.spare;
        socks.set(accepted, { multikernel: sock.multikernel, local: listener.local, remote: sock.local });
        (listener.queue as Sock['queue'] & object).push({ fd: accepted, ...sock.local });
        real.write(listener.spare as number, Buffer.from([1]), 0, 1); // the listener becomes readable
        return mode === 'now';
      },
      vsockAccept(fd: number) {
        if (state.acceptError !== undefined) throw state.acceptError;
        const sock = socks.get(fd) as Sock;
        if (real.read(fd, Buffer.alloc(1), 0, 1) < 0) return null;
        return (sock.queue as NonNullable<Sock['queue']>).shift() as { fd: number; cid: number; port: number };
      },
      vsockLocalAddress(fd: number): VsockAddress {
        if (state.localAddressError !== undefined) throw state.localAddressError;
        return { ...((socks.get(fd) as Sock).local as VsockAddress) };
      },
      vsockRemoteAddress(fd: number): VsockAddress {
        return { ...((socks.get(fd) as Sock).remote as VsockAddress) };
      },
      socketError(fd: number): number {
        return soError.get(fd) ?? real.socketError(fd);
      },
      close(fd: number): void {
        const sock = socks.get(fd);
        socks.delete(fd);
        soError.delete(fd);
        if (sock?.spare !== undefined) real.close(sock.spare);
        if (sock?.queue !== undefined) {
          listeners.delete((sock.local as VsockAddress).port);
          for (const pending of sock.queue) real.close(pending.fd);
        }
        real.close(fd);
      },
    },
  };
  return state;
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function closed(stream: VsockStream): Promise<unknown> {
  return stream.closed ? Promise.resolve() : once(stream, 'close');
}

async function readAll(stream: VsockStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += String(chunk);
  return text;
}

t.test('connect, accept and talk both ways', async (t) => {
  const fds = openFds();
  const vsock = fakeVsock();
  const server = await vsockListen(vsock.binding, { port: 1023 });
  t.equal(server.port, 1023);
  const accepted = server.accept();
  const client = await vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1023, localPort: 700 });
  const peer = await accepted;
  t.same(
    { localCid: client.localCid, localPort: client.localPort, remoteCid: client.remoteCid, remotePort: client.remotePort },
    { localCid: HOST_CID, localPort: 700, remoteCid: GUEST_CID, remotePort: 1023 },
    'client addresses, bound to the source port asked for',
  );
  t.same({ localPort: peer.localPort, remoteCid: peer.remoteCid, remotePort: peer.remotePort }, { localPort: 1023, remoteCid: HOST_CID, remotePort: 700 });
  t.same(vsock.calls, ['socket(true)', `bind(${VMADDR_CID_ANY}, 1023)`, 'listen(128)', 'socket(true)', `bind(${VMADDR_CID_ANY}, 700)`, 'connect(7, 1023)']);
  const toPeer = readAll(peer);
  const toClient = readAll(client);
  client.end('ping');
  peer.end('pong');
  t.equal(await toPeer, 'ping');
  t.equal(await toClient, 'pong');
  await Promise.all([closed(client), closed(peer), server.close()]);
  t.equal(openFds(), fds, 'no fd leaked');
});

t.test('an in-progress connect waits for writability', async (t) => {
  const vsock = fakeVsock();
  vsock.connectMode = 'progress';
  const server = await vsockListen(vsock.binding, { port: ANY_PORT, cid: HOST_CID, backlog: 4, multikernel: false });
  t.equal(server.port, 49152, 'the kernel-chosen port');
  const client = await vsockConnect(vsock.binding, { cid: HOST_CID, port: server.port, multikernel: false });
  t.same(vsock.calls.filter((c) => c.startsWith('socket')), ['socket(false)', 'socket(false)']);
  const peer = await server.accept();
  const withSignal = await vsockConnect(vsock.binding, { cid: HOST_CID, port: server.port, multikernel: false, signal: AbortSignal.timeout(5000) });
  const peer2 = await server.accept();
  for (const s of [client, peer, withSignal, peer2]) s.destroy();
  await server.close();
});

t.test('refused, failing and aborted connects close their socket', async (t) => {
  const fds = openFds();
  const vsock = fakeVsock();
  vsock.connectMode = 'refused';
  await t.rejects(vsockConnect(vsock.binding, { cid: GUEST_CID, port: 5 }), { code: 'ECONNREFUSED', syscall: 'connect', errno: -111 });
  vsock.connectMode = 'now';
  await t.rejects(vsockConnect(vsock.binding, { cid: GUEST_CID, port: 5 }), { code: 'ECONNRESET' }, 'connect(2) failing');
  const server = await vsockListen(vsock.binding, { port: 600 });
  await t.rejects(vsockConnect(vsock.binding, { cid: GUEST_CID, port: 600, localPort: 600 }), { code: 'EADDRINUSE', syscall: 'bind' });
  await t.rejects(vsockListen(vsock.binding, { port: 600 }), { code: 'EADDRINUSE' }, 'listen on a taken port');

  vsock.connectMode = 'stuck';
  const controller = new AbortController();
  const pending = vsockConnect(vsock.binding, { cid: GUEST_CID, port: 600, signal: controller.signal });
  setTimeout(() => controller.abort(new Error('gave up')), 20);
  await t.rejects(pending, { message: 'gave up' }, 'aborted while waiting for the connection');
  await t.rejects(vsockConnect(vsock.binding, { cid: GUEST_CID, port: 600, signal: AbortSignal.abort() }), { name: 'AbortError' }, 'already aborted');
  await server.close();
  t.equal(openFds(), fds, 'no fd leaked');
});

t.test('a poll error while connecting', async (t) => {
  const vsock = fakeVsock();
  vsock.connectMode = 'stuck';
  const binding: NativeBinding = {
    ...vsock.binding,
    FdWatcher: class {
      constructor(_fd: number, callback: (status: number, events: number) => void) {
        setImmediate(() => callback(-9, 0));
      }
      start(): void {}
      stop(): void {}
      close(): void {}
    },
  };
  await t.rejects(vsockConnect(binding, { cid: GUEST_CID, port: 1 }), { code: 'EBADF', syscall: 'connect' }, 'no SO_ERROR: the poll status is reported');
  const refused: NativeBinding = { ...binding, socketError: () => 104 };
  await t.rejects(vsockConnect(refused, { cid: GUEST_CID, port: 1 }), { code: 'ECONNRESET', syscall: 'connect' }, 'SO_ERROR wins over the EBADF libuv reports for POLLERR');
});

t.test('the server as an async iterable; close ends it and rejects waiters', async (t) => {
  const fds = openFds();
  const vsock = fakeVsock();
  const server = await vsockListen(vsock.binding, { port: 1024 });
  const clients = await Promise.all([1, 2, 3].map(() => vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1024 })));
  const seen: number[] = [];
  for await (const conn of server) {
    seen.push(conn.remotePort);
    conn.destroy();
    if (seen.length === 3) break;
  }
  t.same(seen, clients.map((c) => c.localPort), 'in connection order');
  for (const c of clients) c.destroy();

  const waiting = server.accept();
  const iterating = (async () => {
    const got: VsockStream[] = [];
    for await (const conn of server) got.push(conn);
    return got;
  })();
  await new Promise((resolve) => setImmediate(resolve));
  const closing = server.close();
  t.equal(server.close(), closing, 'close is idempotent');
  await closing;
  await t.rejects(waiting, { code: 'ERR_SERVER_NOT_RUNNING' }, 'a pending accept rejects');
  t.same(await iterating, [], 'the iteration ends quietly');
  await t.rejects(server.accept(), { code: 'ERR_SERVER_NOT_RUNNING' }, 'accept after close');
  for await (const conn of server) t.fail(`nothing after close: ${conn.remotePort}`);
  t.equal(openFds(), fds, 'no fd leaked');
});

t.test('accept with an AbortSignal', async (t) => {
  const vsock = fakeVsock();
  const server = await vsockListen(vsock.binding, { port: 1025 });
  await t.rejects(server.accept({ signal: AbortSignal.abort() }), { name: 'AbortError' });
  const controller = new AbortController();
  const first = server.accept({ signal: controller.signal });
  const second = server.accept();
  controller.abort();
  await t.rejects(first, { name: 'AbortError' });
  const client = await vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1025 });
  const peer = await second;
  t.equal(peer.remotePort, client.localPort, 'the next waiter got the connection');
  const third = server.accept({ signal: AbortSignal.timeout(5000) });
  const client2 = await vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1025 });
  t.equal((await third).remotePort, client2.localPort, 'a signal that never fires');
  for (const s of [client, client2, peer]) s.destroy();
  await server.close();
});

t.test('accept failures', async (t) => {
  const fds = openFds();
  const vsock = fakeVsock();
  const server = await vsockListen(vsock.binding, { port: 1026 });
  const client = await vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1026 });
  vsock.localAddressError = systemError('EBADF', 'getsockname');
  await t.rejects(server.accept(), { code: 'EBADF', syscall: 'getsockname' }, 'a connection that cannot be wrapped is closed');
  vsock.localAddressError = undefined;
  vsock.acceptError = systemError('EMFILE', 'accept4');
  await t.rejects(server.accept(), { code: 'EMFILE' });
  const iterator = server[Symbol.asyncIterator]();
  await t.rejects(iterator.next(), { code: 'EMFILE' }, 'the iteration fails with it');
  vsock.acceptError = undefined;
  client.destroy();
  await server.close();
  t.equal(openFds(), fds, 'no fd leaked');
});

t.test('a poll error on the listening socket rejects the waiters', async (t) => {
  const vsock = fakeVsock();
  let callback!: (status: number, events: number) => void;
  const binding: NativeBinding = {
    ...vsock.binding,
    FdWatcher: class {
      constructor(_fd: number, cb: (status: number, events: number) => void) {
        callback = cb;
      }
      start(): void {}
      stop(): void {}
      close(): void {}
    },
  };
  const server = await vsockListen(binding, { port: 1027 });
  const a = server.accept();
  const b = server.accept();
  callback(-9, 0);
  await t.rejects(a, { code: 'EBADF', syscall: 'accept4' });
  await t.rejects(b, { code: 'EBADF', syscall: 'accept4' });
  await server.close();
});

t.test('bad options reject before any system call', async (t) => {
  const vsock = fakeVsock();
  const b = vsock.binding;
  const connects: [string, unknown, ErrorConstructor][] = [
    ['cid missing', { port: 1 }, TypeError],
    ['cid -1', { cid: -1, port: 1 }, RangeError],
    ['cid 2**32', { cid: 2 ** 32, port: 1 }, RangeError],
    ['port 1.5', { cid: 3, port: 1.5 }, RangeError],
    ['port string', { cid: 3, port: '1' }, TypeError],
    ['localPort -1', { cid: 3, port: 1, localPort: -1 }, RangeError],
    ['multikernel string', { cid: 3, port: 1, multikernel: 'yes' }, TypeError],
    ['signal not a signal', { cid: 3, port: 1, signal: {} }, TypeError],
  ];
  for (const [what, options, type] of connects) {
    let sync = false;
    let promise: Promise<unknown> | undefined;
    try {
      promise = vsockConnect(b, options as never);
    } catch {
      sync = true;
    }
    t.notOk(sync, `${what}: no synchronous throw`);
    await t.rejects(promise as Promise<unknown>, type, what);
  }
  const listens: [string, unknown, ErrorConstructor][] = [
    ['port missing', {}, TypeError],
    ['cid 1.5', { port: 1, cid: 1.5 }, RangeError],
    ['backlog -1', { port: 1, backlog: -1 }, RangeError],
    ['backlog 1e6', { port: 1, backlog: 1e6 }, RangeError],
    ['multikernel 1', { port: 1, multikernel: 1 }, TypeError],
  ];
  for (const [what, options, type] of listens) await t.rejects(vsockListen(b, options as never), type, what);
  const server = await vsockListen(b, { port: 2000 });
  await t.rejects(server.accept({ signal: 'x' as never }), TypeError, 'accept with a bad signal');
  await server.close();
  t.same(vsock.calls, ['socket(true)', `bind(${VMADDR_CID_ANY}, 2000)`, 'listen(128)'], 'no socket was made for bad options');
});
