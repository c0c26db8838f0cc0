// lib/system/linux/vsock.ts against a fake vsock: the binding's vsock calls are mapped onto real
// AF_UNIX socketpairs (from the test helper addon, held by real FdHandles, so readiness, read/write
// and FdDuplex are the real ones), with a small in-memory table of ports. Real AF_VSOCK is
// exercised inside QEMU guests (test/qemu).
import t from 'tap';
import * as fs from 'node:fs';
import { once } from 'node:events';
import { loadBinding, type FdHandle, type NativeBinding, type VsockAddress } from '../../lib/binding';
import { systemError } from '../../lib/errors';
import { VMADDR_CID_ANY } from '../../lib/uapi';
import { vsockConnect, vsockListen } from '../../lib/system/linux/vsock';
import type { VsockStream } from '../../lib/system/system';
import { handlePair, patchHandle } from './helper';

const real = loadBinding();
const HOST_CID = 2;
const GUEST_CID = 7;
const ANY_PORT = 0xffffffff;

interface Sock {
  spare?: FdHandle; // the other end of the socketpair: becomes the accepted socket of a connection
  multikernel: boolean;
  local?: VsockAddress;
  remote?: VsockAddress;
  queue?: { socket: FdHandle; cid: number; port: number }[];
}

interface FakeVsock {
  binding: NativeBinding;
  calls: string[];
  /** how the next connects answer: connected at once, in progress, refused (SO_ERROR), or stuck */
  connectMode: 'now' | 'progress' | 'refused' | 'stuck';
  acceptError?: Error;
  localAddressError?: Error;
  /** replaces methods of the sockets vsockSocket makes from now on (fake readiness, SO_ERROR) */
  socketPatch?: Partial<FdHandle>;
}

function fakeVsock(): FakeVsock {
  const socks = new Map<FdHandle, Sock>();
  const listeners = new Map<number, FdHandle>(); // port -> listening socket
  let nextPort = 49152;
  const soError = new Map<FdHandle, number>();
  const realOf = new Map<FdHandle, FdHandle>();
  /** The real handle behind one of the fake's sockets. */
  const real_ = (socket: FdHandle): FdHandle => realOf.get(socket) as FdHandle;
  /** The fake's own view of a socket: its SO_ERROR, and the spare and queue closed with it. */
  const fakeSocket = (handle: FdHandle): FdHandle => {
    const socket = patchHandle(handle, {
      socketError: () => soError.get(handle) ?? handle.socketError(),
      close: () => {
        const sock = socks.get(handle);
        socks.delete(handle);
        soError.delete(handle);
        sock?.spare?.close();
        if (sock?.queue !== undefined) {
          listeners.delete((sock.local as VsockAddress).port);
          for (const pending of sock.queue) pending.socket.close();
        }
        handle.close();
      },
      ...state.socketPatch,
    });
    realOf.set(socket, handle);
    return socket;
  };
  const state: FakeVsock = {
    calls: [],
    connectMode: 'now',
    binding: {
      ...real,
      vsockSocket(multikernel: boolean): FdHandle {
        state.calls.push(`socket(${multikernel})`);
        const [a, b] = handlePair(real);
        socks.set(a, { spare: b, multikernel });
        return fakeSocket(a);
      },
      vsockBind(socket: FdHandle, cid: number, port: number): void {
        state.calls.push(`bind(${cid}, ${port})`);
        const sock = socks.get(real_(socket)) as Sock;
        if (port !== ANY_PORT && [...socks.values()].some((s) => s.local?.port === port)) {
          throw systemError('EADDRINUSE', 'bind');
        }
        sock.local = { cid: cid === VMADDR_CID_ANY ? HOST_CID : cid, port: port === ANY_PORT ? nextPort++ : port };
      },
      vsockListen(socket: FdHandle, backlog: number): void {
        state.calls.push(`listen(${backlog})`);
        const sock = socks.get(real_(socket)) as Sock;
        sock.queue = [];
        listeners.set((sock.local as VsockAddress).port, real_(socket));
      },
      vsockConnect(socket: FdHandle, cid: number, port: number): boolean {
        state.calls.push(`connect(${cid}, ${port})`);
        const fd = real_(socket);
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
          while (fd.write(block, 0, block.length) > 0);
          return false;
        }
        const listenerSocket = listeners.get(port);
        if (listenerSocket === undefined) throw systemError('ECONNRESET', 'connect');
        const listener = socks.get(listenerSocket) as Sock;
        const accepted = sock.spare as FdHandle;
        delete sock.spare;
        socks.set(accepted, { multikernel: sock.multikernel, local: listener.local, remote: sock.local });
        (listener.queue as Sock['queue'] & object).push({ socket: fakeSocket(accepted), ...(sock.local as VsockAddress) });
        (listener.spare as FdHandle).write(Buffer.from([1]), 0, 1); // the listener becomes readable
        return mode === 'now';
      },
      vsockAccept(socket: FdHandle) {
        if (state.acceptError !== undefined) throw state.acceptError;
        const fd = real_(socket);
        const sock = socks.get(fd) as Sock;
        if (fd.read(Buffer.alloc(1), 0, 1) < 0) return null;
        return (sock.queue as NonNullable<Sock['queue']>).shift() as { socket: FdHandle; cid: number; port: number };
      },
      vsockLocalAddress(socket: FdHandle): VsockAddress {
        if (state.localAddressError !== undefined) throw state.localAddressError;
        return { ...((socks.get(real_(socket)) as Sock).local as VsockAddress) };
      },
      vsockRemoteAddress(socket: FdHandle): VsockAddress {
        return { ...((socks.get(real_(socket)) as Sock).remote as VsockAddress) };
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
  const fds = openFds();
  const vsock = fakeVsock();
  vsock.connectMode = 'stuck';
  const pollError = {
    watch: (_events: number, callback: (status: number, events: number) => void) => void setImmediate(() => callback(-9, 0)),
    unwatch: () => {},
  };
  vsock.socketPatch = pollError;
  await t.rejects(vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1 }), { code: 'EBADF', syscall: 'connect' }, 'no SO_ERROR: the poll status is reported');
  vsock.socketPatch = { ...pollError, socketError: () => 104 };
  await t.rejects(vsockConnect(vsock.binding, { cid: GUEST_CID, port: 1 }), { code: 'ECONNRESET', syscall: 'connect' }, 'SO_ERROR wins over the EBADF libuv reports for POLLERR');
  t.equal(openFds(), fds, 'the sockets were closed');
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
  const watches: number[] = [];
  vsock.socketPatch = {
    watch: (events, cb) => {
      watches.push(events);
      callback = cb;
    },
    unwatch: () => watches.push(0),
  };
  const server = await vsockListen(vsock.binding, { port: 1027 });
  const a = server.accept();
  const signal = new AbortController().signal;
  const b = server.accept({ signal });
  callback(-9, 0);
  await t.rejects(a, { code: 'EBADF', syscall: 'accept4' });
  await t.rejects(b, { code: 'EBADF', syscall: 'accept4' });
  const c = server.accept();
  t.equal(watches.at(-1), 1, 'a later accept watches again (libuv stopped the watch with the error)');
  await server.close();
  await t.rejects(c, { code: 'ERR_SERVER_NOT_RUNNING' });
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
