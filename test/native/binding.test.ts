// The real addon on this machine: its surface against lib/binding.ts, constants against
// lib/uapi.ts, the error shape, and argument abuse of the harmless entry points (the dangerous
// ones are abused in abuse.test.ts, without capabilities).
import t from 'tap';
import * as fs from 'node:fs';
import { loadBinding, type NativeBinding } from '../../lib/binding';
import * as uapi from '../../lib/uapi';
import { isSystemError } from '../../lib/errors';

const binding = loadBinding();

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
  socketpair: true,
  socketError: true,
  read: true,
  write: true,
  shutdownWrite: true,
  close: true,
  sdNotify: true,
  memfdCreate: true,
  FdWatcher: true,
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
  t.teardown(() => binding.close(fd));
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
  try {
    binding.close(1_000_000);
  } catch (e) {
    ours = e as NodeJS.ErrnoException;
  }
  try {
    fs.closeSync(1_000_000);
  } catch (e) {
    theirs = e as NodeJS.ErrnoException;
  }
  t.equal(ours?.message, theirs?.message);
  t.equal(ours?.message, 'EBADF: bad file descriptor, close');
  t.same({ errno: ours?.errno, code: ours?.code, syscall: ours?.syscall }, { errno: -9, code: 'EBADF', syscall: 'close' });
});

t.test('memfdCreate gives a writable fd', async (t) => {
  const fd = binding.memfdCreate('a-name');
  t.teardown(() => binding.close(fd));
  t.match(fs.readlinkSync(`/proc/self/fd/${fd}`), /^\/memfd:a-name/);
  const data = Buffer.from('hello memfd');
  t.equal(binding.write(fd, data, 0, data.length), data.length);
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

t.test('socketpair, read, write, shutdownWrite, socketError, close', async (t) => {
  const [a, b] = binding.socketpair();
  t.ok(Number.isInteger(a) && Number.isInteger(b) && a !== b);
  const out = new Uint8Array([1, 2, 3, 4, 5, 6]);
  t.equal(binding.write(a, out, 2, 3), 3, 'writes buffer[offset, offset+length)');
  const into = Buffer.alloc(8);
  t.equal(binding.read(b, into, 1, 7), 3);
  t.same([...into.subarray(0, 5)], [0, 3, 4, 5, 0]);
  t.equal(binding.read(b, into, 0, 8), -1, 'EAGAIN is -1');
  t.equal(binding.read(b, into, 8, 0), 0, 'zero-length read');
  t.equal(binding.socketError(a), 0);
  binding.shutdownWrite(a);
  t.equal(binding.read(b, into, 0, 8), 0, 'EOF after shutdownWrite');
  t.throws(() => binding.write(a, out, 0, 1), { code: 'EPIPE', syscall: 'write' });
  t.equal(binding.write(b, out, 0, 6), 6, 'the other direction still works');
  t.equal(binding.read(a, into, 0, 8), 6);
  binding.close(b);
  binding.close(a);
  t.throws(() => binding.close(a), { code: 'EBADF', errno: -9, syscall: 'close' });
  t.throws(() => binding.read(a, into, 0, 1), { code: 'EBADF', syscall: 'read' });
  t.throws(() => binding.socketError(a), { code: 'EBADF', syscall: 'getsockopt' });
  t.throws(() => binding.shutdownWrite(0 + 1_000_000), { code: 'EBADF', syscall: 'shutdown' });
});

t.test('argument abuse of the harmless entry points', async (t) => {
  const buf = Buffer.alloc(4);
  const typeErrors: [string, () => unknown][] = [
    ['read without buffer', () => binding.read(0, 'x' as never, 0, 1)],
    ['read into a Uint16Array', () => binding.read(0, new Uint16Array(2) as never, 0, 1)],
    ['write with string fd', () => binding.write('1' as never, buf, 0, 1)],
    ['write without arguments', () => (binding.write as () => number)()],
    ['close(null)', () => binding.close(null as never)],
    ['close(1n)', () => binding.close(1n as never)],
    ['flockTry without exclusive', () => binding.flockTry(0, undefined as never)],
    ['flockWait with string timeout', () => binding.flockWait(0, true, '1' as never)],
    ['flockUnlock({})', () => binding.flockUnlock({} as never)],
    ['vsockSocket(1)', () => binding.vsockSocket(1 as never)],
    ['vsockBind with string port', () => binding.vsockBind(0, 1, '1' as never)],
    ['sdNotify(1)', () => binding.sdNotify(1 as never)],
    ['sdNotify with NUL', () => binding.sdNotify('READY=1\0')],
    ['FdWatcher without callback', () => new binding.FdWatcher(0, null as never)],
    ['FdWatcher with string fd', () => new binding.FdWatcher('0' as never, () => {})],
    ['FdWatcher without new', () => (binding.FdWatcher as unknown as (fd: number, cb: () => void) => unknown)(0, () => {})],
  ];
  for (const [what, fn] of typeErrors) t.throws(fn, TypeError, what);
  const rangeErrors: [string, () => unknown][] = [
    ['read past the end', () => binding.read(0, buf, 2, 3)],
    ['read offset past the end', () => binding.read(0, buf, 5, 0)],
    ['read negative length', () => binding.read(0, buf, 0, -1)],
    ['write fractional offset', () => binding.write(1, buf, 0.5, 1)],
    ['close(-1)', () => binding.close(-1)],
    ['close(2**31)', () => binding.close(2 ** 31)],
    ['close(NaN)', () => binding.close(NaN)],
    ['flockTry(-1)', () => binding.flockTry(-1, true)],
    ['flockWait timeout -2', () => binding.flockWait(0, true, -2)],
    ['flockWait timeout 1.5', () => binding.flockWait(0, true, 1.5)],
    ['vsockBind cid 2**32', () => binding.vsockBind(0, 2 ** 32, 1)],
    ['vsockListen backlog -1', () => binding.vsockListen(0, -1)],
    ['vsockConnect negative port', () => binding.vsockConnect(0, 1, -1)],
    ['vsockAccept(-3)', () => binding.vsockAccept(-3)],
    ['vsockLocalAddress(-1)', () => binding.vsockLocalAddress(-1)],
    ['vsockRemoteAddress(1.5)', () => binding.vsockRemoteAddress(1.5)],
    ['socketError(-1)', () => binding.socketError(-1)],
    ['shutdownWrite(-1)', () => binding.shutdownWrite(-1)],
    ['sdNotify of 4 KiB + 1', () => binding.sdNotify('x'.repeat(4097))],
    ['FdWatcher(-1)', () => new binding.FdWatcher(-1, () => {})],
  ];
  for (const [what, fn] of rangeErrors) t.throws(fn, RangeError, what);
});

let noVsock: string | false = false;
try {
  binding.close(binding.vsockSocket(false));
} catch (e) {
  noVsock = `this machine cannot create AF_VSOCK sockets (${(e as Error).message}); vsock is tested in QEMU`;
}

t.test('vsock sockets without the multikernel transport reach CID 1 only', { skip: noVsock }, async (t) => {
  const fd = binding.vsockSocket(false);
  t.teardown(() => binding.close(fd));
  // Never connects: the RangeError comes before connect(2).
  for (const cid of [0, 2, 3, 0xffffffff]) {
    t.throws(() => binding.vsockConnect(fd, cid, 1023), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, `CID ${cid}`);
  }
  t.throws(() => binding.vsockRemoteAddress(fd), { code: 'ENOTCONN', syscall: 'getpeername' });
  t.throws(() => binding.vsockAccept(fd), { code: 'EINVAL', syscall: 'accept4' }, 'not listening');
  const local = binding.vsockLocalAddress(fd);
  t.same(Object.keys(local).sort(), ['cid', 'port']);
  t.comment(`unbound vsock socket: ${JSON.stringify(local)}`);
});

t.test('the multikernel transport option on a kernel without it', async (t) => {
  const before = fs.readdirSync('/proc/self/fd').length;
  let fd: number | undefined;
  try {
    fd = binding.vsockSocket(true);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    t.ok(err.syscall === 'setsockopt' || err.syscall === 'socket', `failed in ${err.syscall}: ${err.message}`);
    t.ok(typeof err.errno === 'number' && err.errno < 0);
  }
  if (fd !== undefined) {
    t.comment('this kernel accepts SO_VM_SOCKETS_TRANSPORT: a multikernel kernel');
    binding.close(fd);
  }
  t.equal(fs.readdirSync('/proc/self/fd').length, before, 'no fd leaked');
});

t.test('vsock address calls on a non-vsock socket', async (t) => {
  const [a, b] = binding.socketpair();
  t.teardown(() => {
    binding.close(a);
    binding.close(b);
  });
  t.throws(() => binding.vsockLocalAddress(a), { code: 'EAFNOSUPPORT', syscall: 'getsockname' });
  t.throws(() => binding.vsockRemoteAddress(a), { code: 'EAFNOSUPPORT', syscall: 'getpeername' });
  t.throws(() => binding.vsockListen(a, 1), { code: 'EINVAL', syscall: 'listen' });
  t.throws(() => binding.vsockBind(a, 1, 1), { code: 'EINVAL', syscall: 'bind' });
  t.throws(() => binding.vsockAccept(a), { code: 'EINVAL', syscall: 'accept4' });
  t.throws(() => binding.vsockConnect(a, 1, 1), { code: 'EINVAL', syscall: 'connect' }, 'CID 1 is allowed through to connect(2), which refuses an AF_VSOCK address on AF_UNIX');
});
