// The real addon on this machine: its surface against lib/binding.ts, constants against
// lib/uapi.ts, the error shape, FdHandles, and argument abuse of the harmless entry points (the
// dangerous ones are abused in abuse.test.ts, without capabilities). Socketpairs come from the
// test-only helper addon (./helper), not from the production binding.
import t from 'tap';
import * as fs from 'node:fs';
import { loadBinding, type FdHandle, type NativeBinding } from '../../lib/binding';
import * as uapi from '../../lib/uapi';
import { isSystemError } from '../../lib/errors';
import { fdIsOpen, handlePair as pairOf } from './helper';

const binding = loadBinding();
const handlePair = (): [FdHandle, FdHandle] => pairOf(binding);

// Record<keyof NativeBinding, true>: the compiler fails when this list and the interface drift.
const KEYS: Record<keyof NativeBinding, true> = {
  constants: true,
  kexecLoad: true,
  kexecUnload: true,
  kexecFlags: true,
  rebootStart: true,
  rebootHalt: true,
  rebootHaltForce: true,
  mountMultikernel: true,
  umountMultikernel: true,
  flockTry: true,
  flockWait: true,
  flockUnlock: true,
  vsockSocket: true,
  vsockBind: true,
  vsockConnect: true,
  vsockListen: true,
  vsockAccept: true,
  vsockLocalAddress: true,
  vsockRemoteAddress: true,
  dupFd: true,
  seekEnd: true,
  sdNotify: true,
  memfdCreate: true,
  setErrnoErrorFactory: true,
};

t.test('the binding has exactly the NativeBinding keys', async (t) => {
  const expected = Object.keys(KEYS).sort();
  t.same(Object.keys(binding).sort(), expected);
  for (const key of expected) {
    const value = (binding as unknown as Record<string, unknown>)[key];
    t.equal(typeof value, key === 'constants' ? 'object' : 'function', `${key} has the right kind`);
  }
  t.equal(loadBinding(), binding, 'loadBinding caches the addon');
});

t.test('constants are frozen and equal lib/uapi.ts', async (t) => {
  const c = binding.constants;
  t.ok(Object.isFrozen(c));
  t.throws(() => {
    'use strict';
    (c as { KEXEC_MULTIKERNEL: number }).KEXEC_MULTIKERNEL = 0;
  }, TypeError);
  const fromUapi: Record<string, unknown> = uapi;
  const shared = Object.keys(c).filter((k) => !k.startsWith('UV_'));
  t.equal(shared.length, 19);
  for (const key of shared) t.equal((c as unknown as Record<string, number>)[key], fromUapi[key], key);
  t.same([c.UV_READABLE, c.UV_WRITABLE, c.UV_DISCONNECT], [1, 2, 4], 'libuv readiness bits');
});

t.test('kexecFlags', async (t) => {
  const f = (id: number, initrd: boolean, debug: boolean, unload: boolean): number =>
    binding.kexecFlags(id, { initrd, debug, unload });
  t.equal(f(1, false, false, false), 0x34, 'id 1 load without initrd');
  t.equal(f(1, false, true, false), 0x3c, 'with debug');
  t.equal(f(1, true, false, false), 0x30, 'with an initrd');
  t.equal(f(3, false, false, true), 0x71, 'unload id 3');
  t.equal(f(3, true, true, true), 0x71, 'an unload ignores initrd and debug');
  t.equal(f(2047, true, false, false), 0xfff0, 'largest id');
  t.equal(f(9, true, false, false), uapi.KEXEC_MULTIKERNEL | uapi.kexecMkId(9), 'matches lib/uapi kexecMkId');
  t.ok(uapi.isValidMkId(2047) && !uapi.isValidMkId(2048) && !uapi.isValidMkId(0) && !uapi.isValidMkId('1'));
  for (let id = 1; id <= 2047; id += 89) {
    const flags = f(id, id % 2 === 0, id % 3 === 0, id % 5 === 0);
    t.equal(uapi.kexecGetMkId(flags), id, `id ${id} round-trips`);
    t.ok(flags & uapi.KEXEC_MULTIKERNEL, 'the multikernel bit is always set');
  }
  t.throws(() => f(0, false, false, false), RangeError);
  t.throws(() => f(2048, false, false, false), RangeError);
  t.throws(() => binding.kexecFlags(1, null as never), TypeError);
  t.throws(() => binding.kexecFlags(1, { initrd: 1, debug: false, unload: false } as never), TypeError);
});

t.test('kexec_file_load error shape, with an empty memfd no kernel could load', async (t) => {
  const fd = binding.memfdCreate('empty-image');
  t.teardown(() => fs.closeSync(fd));
  const error = await binding
    .kexecLoad({ kernelFd: fd, initrdFd: fd, cmdline: 'console=mktty0', id: 1, debug: false })
    .then(
      () => null,
      (e: unknown) => e as NodeJS.ErrnoException,
    );
  t.ok(error instanceof Error, 'the load failed');
  t.ok(isSystemError(error), 'lib/errors recognises it as a system error');
  t.notOk(isSystemError(error, 'EBUSY'), 'with its own code only');
  t.notOk(isSystemError(new TypeError('x')), 'an argument error is not one');
  t.notOk(isSystemError('ENOSYS'), 'nor a string');
  const e = error as NodeJS.ErrnoException;
  t.comment(`this kernel answered: ${e.message}`);
  t.match(e.code, /^E[A-Z0-9]+$/);
  t.ok(typeof e.errno === 'number' && e.errno < 0, 'negative errno');
  t.equal(e.syscall, 'kexec_file_load');
  t.equal(e.path, undefined);
  const description = (await import('node:util')).getSystemErrorMap().get(e.errno as number)?.[1];
  t.equal(e.message, `${e.code}: ${description}, kexec_file_load`);
  // This kernel has no kexec_file_load for our flag word: a stock kernel built without
  // CONFIG_KEXEC_FILE answers ENOSYS; one with it but without multikernel EINVAL/ENOEXEC.
  t.ok(isSystemError(e, 'ENOSYS', 'EINVAL', 'ENOEXEC', 'EPERM', 'EBADF'), `code ${e.code}`);
});

t.test('errors are shaped exactly like node:fs errors', async (t) => {
  let ours: NodeJS.ErrnoException | undefined;
  let theirs: NodeJS.ErrnoException | undefined;
  const [handle] = handlePair();
  handle.close();
  try {
    handle.read(Buffer.alloc(1), 0, 1);
  } catch (e) {
    ours = e as NodeJS.ErrnoException;
  }
  try {
    fs.readSync(1_000_000, Buffer.alloc(1));
  } catch (e) {
    theirs = e as NodeJS.ErrnoException;
  }
  t.equal(ours?.message, theirs?.message);
  t.equal(ours?.message, 'EBADF: bad file descriptor, read');
  t.same(Object.keys(ours ?? {}).sort(), Object.keys(theirs ?? {}).sort(), 'the same own properties');
  t.same({ errno: ours?.errno, code: ours?.code, syscall: ours?.syscall }, { errno: -9, code: 'EBADF', syscall: 'read' });
});

t.test('memfdCreate gives a writable fd', async (t) => {
  const fd = binding.memfdCreate('a-name');
  t.teardown(() => fs.closeSync(fd));
  t.match(fs.readlinkSync(`/proc/self/fd/${fd}`), /^\/memfd:a-name/);
  const data = Buffer.from('hello memfd');
  t.equal(fs.writeSync(fd, data), data.length);
  t.equal(fs.fstatSync(fd).size, data.length);
  const back = Buffer.alloc(data.length);
  t.equal(fs.readSync(fd, back, 0, back.length, 0), data.length);
  t.same(back, data);
  const fdinfo = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const flags = parseInt(/flags:\s*([0-7]+)/.exec(fdinfo)?.[1] ?? '0', 8);
  t.ok(flags & 0o2000000, 'O_CLOEXEC');
  t.throws(() => binding.memfdCreate('x'.repeat(250)), RangeError, 'name longer than 249 bytes');
  t.throws(() => binding.memfdCreate('a\0b'), TypeError);
  t.throws(() => binding.memfdCreate(3 as never), TypeError);
});

t.test('FdHandle: read, write, shutdownWrite, socketError, close', async (t) => {
  const [a, b] = handlePair();
  t.ok(Number.isInteger(a.fd) && Number.isInteger(b.fd) && a.fd !== b.fd);
  const out = new Uint8Array([1, 2, 3, 4, 5, 6]);
  t.equal(a.write(out, 2, 3), 3, 'writes buffer[offset, offset+length)');
  const into = Buffer.alloc(8);
  t.equal(b.read(into, 1, 7), 3);
  t.same([...into.subarray(0, 5)], [0, 3, 4, 5, 0]);
  t.equal(b.read(into, 0, 8), -1, 'EAGAIN is -1');
  t.equal(b.read(into, 8, 0), 0, 'zero-length read');
  t.equal(a.socketError(), 0);
  a.shutdownWrite();
  t.equal(b.read(into, 0, 8), 0, 'EOF after shutdownWrite');
  t.throws(() => a.write(out, 0, 1), { code: 'EPIPE', syscall: 'write' });
  t.equal(b.write(out, 0, 6), 6, 'the other direction still works');
  t.equal(a.read(into, 0, 8), 6);
  const fdB = b.fd;
  b.close();
  t.notOk(fdIsOpen(fdB), 'close() closed the fd');
  t.equal(b.fd, -1, 'a closed handle has fd -1');
  b.close(); // idempotent
  a.close();
  for (const [what, call, syscall] of [
    ['read', () => a.read(into, 0, 1), 'read'],
    ['write', () => a.write(out, 0, 1), 'write'],
    ['socketError', () => a.socketError(), 'getsockopt'],
    ['shutdownWrite', () => a.shutdownWrite(), 'shutdown'],
    ['watch', () => a.watch(binding.constants.UV_READABLE, () => {}), 'uv_poll_start'],
  ] as const) {
    t.throws(call, { code: 'EBADF', errno: -9, syscall }, `${what} on a closed handle`);
  }
  a.unwatch(); // harmless after close
});

t.test('a closed handle never reaches the file that reuses its number', async (t) => {
  const [a, b] = handlePair();
  const number = a.fd;
  a.close();
  const [c, d] = handlePair(); // the lowest free numbers: a's comes back
  t.ok([c.fd, d.fd].includes(number), `fd ${number} was reused`);
  t.throws(() => a.write(Buffer.from('x'), 0, 1), { code: 'EBADF' }, 'the old handle fails');
  const into = Buffer.alloc(1);
  t.equal(c.read(into, 0, 1), -1, 'nothing was written to the new socket');
  t.equal(d.read(into, 0, 1), -1);
  for (const h of [b, c, d]) h.close();
});

t.test('dupFd: a close-on-exec duplicate; the caller keeps its own fd', async (t) => {
  const fd = fs.openSync(__filename, 'r');
  const handle = binding.dupFd(fd);
  t.not(handle.fd, fd);
  t.equal(fs.readlinkSync(`/proc/self/fd/${handle.fd}`), __filename);
  const flags = parseInt(/flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${handle.fd}`, 'utf8'))?.[1] ?? '0', 8);
  t.ok(flags & 0o2000000, 'O_CLOEXEC');
  const head = Buffer.alloc(2);
  t.equal(handle.read(head, 0, 2), 2);
  t.equal(head.toString(), '//');
  handle.close();
  t.ok(fdIsOpen(fd), "closing the handle leaves the caller's fd open");
  fs.closeSync(fd);
  t.throws(() => binding.dupFd(fd), { code: 'EBADF', syscall: 'fcntl' });
  t.throws(() => handle.watch(binding.constants.UV_READABLE, () => {}), { code: 'EBADF' });
  const file = binding.dupFd(fs.openSync(__filename, 'r'));
  t.throws(() => file.watch(binding.constants.UV_READABLE, () => {}), { code: 'EPERM', syscall: 'uv_poll_init' }, 'regular files cannot be polled');
  file.close();
});

t.test('seekEnd: lseek(fd, 0, SEEK_END)', async (t) => {
  const fd = fs.openSync(__filename, 'r');
  t.teardown(() => fs.closeSync(fd));
  const size = fs.fstatSync(fd).size;
  t.equal(binding.seekEnd(fd), size, 'the new offset: the size of a regular file');
  t.equal(fs.readSync(fd, Buffer.alloc(4), 0, 4, null), 0, 'reads continue from the end');
  const [a, b] = handlePair();
  t.throws(() => binding.seekEnd(a.fd), { code: 'ESPIPE', syscall: 'lseek' }, 'a socket has no offset');
  a.close();
  b.close();
  t.throws(() => binding.seekEnd(-1), RangeError);
  t.throws(() => binding.seekEnd('3' as never), TypeError);
});

t.test('only the addon makes FdHandles', async (t) => {
  const [a, b] = handlePair();
  const FdHandleClass = a.constructor as new (...args: unknown[]) => unknown;
  t.throws(() => new FdHandleClass(), TypeError, 'the class cannot be constructed from JavaScript');
  t.throws(() => new FdHandleClass(a.fd), TypeError);
  const lookalike = Object.create(Object.getPrototypeOf(a) as object) as FdHandle;
  t.throws(() => binding.vsockBind(lookalike, 1, 1), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }, 'an object with its prototype is not one');
  t.throws(() => binding.vsockConnect({ fd: a.fd } as never, 1, 1), { code: 'ERR_INVALID_ARG_TYPE' }, 'nor an object with an fd');
  t.throws(() => binding.vsockListen(a.fd as never, 1), { code: 'ERR_INVALID_ARG_TYPE' }, 'nor a number');
  a.close();
  b.close();
});

t.test('argument abuse of the harmless entry points', async (t) => {
  const buf = Buffer.alloc(4);
  const [h, peer] = handlePair();
  t.teardown(() => {
    h.close();
    peer.close();
  });
  const typeErrors: [string, () => unknown][] = [
    ['read without buffer', () => h.read('x' as never, 0, 1)],
    ['read into a Uint16Array', () => h.read(new Uint16Array(2) as never, 0, 1)],
    ['write with string offset', () => h.write(buf, '1' as never, 1)],
    ['write without arguments', () => (h.write as () => number)()],
    ['watch without callback', () => h.watch(binding.constants.UV_READABLE, null as never)],
    ['watch with string events', () => h.watch('1' as never, () => {})],
    ['dupFd(null)', () => binding.dupFd(null as never)],
    ['dupFd(1n)', () => binding.dupFd(1n as never)],
    ['setErrnoErrorFactory(1)', () => binding.setErrnoErrorFactory(1 as never)],
    ['flockTry without exclusive', () => binding.flockTry(0, undefined as never)],
    ['flockWait with string timeout', () => binding.flockWait(0, true, '1' as never)],
    ['flockUnlock({})', () => binding.flockUnlock({} as never)],
    ['vsockSocket(1)', () => binding.vsockSocket(1 as never)],
    ['vsockBind with string port', () => binding.vsockBind(h, 1, '1' as never)],
    ['vsockBind with an fd number', () => binding.vsockBind(0 as never, 1, 1)],
    ['vsockAccept(null)', () => binding.vsockAccept(null as never)],
    ['vsockLocalAddress(-1)', () => binding.vsockLocalAddress(-1 as never)],
    ['sdNotify(1)', () => binding.sdNotify(1 as never)],
    ['sdNotify with NUL', () => binding.sdNotify('READY=1\0')],
  ];
  for (const [what, fn] of typeErrors) t.throws(fn, TypeError, what);
  const rangeErrors: [string, () => unknown][] = [
    ['read past the end', () => h.read(buf, 2, 3)],
    ['read offset past the end', () => h.read(buf, 5, 0)],
    ['read negative length', () => h.read(buf, 0, -1)],
    ['write fractional offset', () => h.write(buf, 0.5, 1)],
    ['watch(0)', () => h.watch(0, () => {})],
    ['watch(8)', () => h.watch(8, () => {})],
    ['dupFd(-1)', () => binding.dupFd(-1)],
    ['dupFd(2**31)', () => binding.dupFd(2 ** 31)],
    ['dupFd(NaN)', () => binding.dupFd(NaN)],
    ['flockTry(-1)', () => binding.flockTry(-1, true)],
    ['flockWait timeout -2', () => binding.flockWait(0, true, -2)],
    ['flockWait timeout 1.5', () => binding.flockWait(0, true, 1.5)],
    ['vsockBind cid 2**32', () => binding.vsockBind(h, 2 ** 32, 1)],
    ['vsockListen backlog -1', () => binding.vsockListen(h, -1)],
    ['vsockConnect negative port', () => binding.vsockConnect(h, 1, -1)],
    ['sdNotify of 4 KiB + 1', () => binding.sdNotify('x'.repeat(4097))],
  ];
  for (const [what, fn] of rangeErrors) t.throws(fn, RangeError, what);
});

let noVsock: string | false = false;
try {
  binding.vsockSocket(false).close();
} catch (e) {
  noVsock = `this machine cannot create AF_VSOCK sockets (${(e as Error).message}); vsock is tested in QEMU`;
}

t.test('vsock sockets without the multikernel transport reach CID 1 only', { skip: noVsock }, async (t) => {
  const socket = binding.vsockSocket(false);
  t.teardown(() => socket.close());
  // Never connects: the RangeError comes before connect(2).
  for (const cid of [0, 2, 3, 0xffffffff]) {
    t.throws(() => binding.vsockConnect(socket, cid, 1023), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, `CID ${cid}`);
  }
  t.throws(() => binding.vsockRemoteAddress(socket), { code: 'ENOTCONN', syscall: 'getpeername' });
  t.throws(() => binding.vsockAccept(socket), { code: 'EINVAL', syscall: 'accept4' }, 'not listening');
  const local = binding.vsockLocalAddress(socket);
  t.same(Object.keys(local).sort(), ['cid', 'port']);
  t.comment(`unbound vsock socket: ${JSON.stringify(local)}`);
});

t.test('the multikernel transport option on a kernel without it', async (t) => {
  const before = fs.readdirSync('/proc/self/fd').length;
  let socket: FdHandle | undefined;
  try {
    socket = binding.vsockSocket(true);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    t.ok(err.syscall === 'setsockopt' || err.syscall === 'socket', `failed in ${err.syscall}: ${err.message}`);
    t.ok(typeof err.errno === 'number' && err.errno < 0);
  }
  if (socket !== undefined) {
    t.comment('this kernel accepts SO_VM_SOCKETS_TRANSPORT: a multikernel kernel');
    socket.close();
  }
  t.equal(fs.readdirSync('/proc/self/fd').length, before, 'no fd leaked');
});

t.test('vsock address calls on a non-vsock socket', async (t) => {
  const [a, b] = handlePair();
  t.teardown(() => {
    a.close();
    b.close();
  });
  t.throws(() => binding.vsockLocalAddress(a), { code: 'EAFNOSUPPORT', syscall: 'getsockname' });
  t.throws(() => binding.vsockRemoteAddress(a), { code: 'EAFNOSUPPORT', syscall: 'getpeername' });
  t.throws(() => binding.vsockListen(a, 1), { code: 'EINVAL', syscall: 'listen' });
  t.throws(() => binding.vsockBind(a, 1, 1), { code: 'EINVAL', syscall: 'bind' });
  t.throws(() => binding.vsockAccept(a), { code: 'EINVAL', syscall: 'accept4' });
  t.throws(() => binding.vsockConnect(a, 1, 1), { code: 'EINVAL', syscall: 'connect' }, 'CID 1 is allowed through to connect(2), which refuses an AF_VSOCK address on AF_UNIX');
});
