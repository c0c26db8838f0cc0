// LinuxSystem's dangerous methods (kexec_file_load, reboot, mount, vsock) with an injected fake
// binding that records every call: nothing here reaches the kernel. The same methods run for
// real in the QEMU lane (test/qemu). Also the lock logic and readiness edge cases the real
// kernel does not produce on demand (poll errors, lock cancellation races).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FdHandle, KexecLoadArgs, NativeBinding } from '../../lib/binding';
import { systemError } from '../../lib/errors';
import { LinuxSystem, decodeKexecFlags } from '../../lib/system/linux';
import {
  KEXEC_FILE_DEBUG,
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_ON_CRASH,
  KEXEC_FILE_UNLOAD,
  KEXEC_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
  kexecMkId,
} from '../../lib/uapi';

type Call = [string, ...unknown[]];

/** The flag word exactly as native/kexec.cc builds it. */
function nativeFlags(id: number, o: { initrd: boolean; debug: boolean; unload: boolean }): number {
  let flags = KEXEC_MULTIKERNEL | kexecMkId(id);
  if (o.unload) return flags | KEXEC_FILE_UNLOAD;
  if (!o.initrd) flags |= KEXEC_FILE_NO_INITRAMFS;
  if (o.debug) flags |= KEXEC_FILE_DEBUG;
  return flags;
}

/** A device handle of the fake binding: records its calls; `fire` plays a readiness callback. */
interface FakeHandle extends FdHandle {
  events: number;
  closed: boolean;
  fire(status: number, events: number): void;
}

type ReadImpl = (buffer: Uint8Array, offset: number, length: number) => number;

function fakeBinding(
  overrides: Partial<NativeBinding> = {},
  deviceRead: ReadImpl = () => -1,
): { binding: NativeBinding; calls: Call[]; handles: FakeHandle[] } {
  const calls: Call[] = [];
  const handles: FakeHandle[] = [];
  const record =
    <R>(name: string, result: R) =>
    (...args: unknown[]): R => {
      calls.push([name, ...args]);
      return result;
    };
  class Handle implements FakeHandle {
    events = 0;
    closed = false;
    #callback: ((status: number, events: number) => void) | undefined;
    constructor(readonly fd: number) {
      handles.push(this);
    }
    read(buffer: Uint8Array, offset: number, length: number): number {
      calls.push(['read', this.fd, offset, length]);
      return deviceRead(buffer, offset, length);
    }
    write(_buffer: Uint8Array, offset: number, length: number): number {
      calls.push(['write', this.fd, offset, length]);
      return -1;
    }
    shutdownWrite(): void {}
    socketError(): number {
      return 0;
    }
    watch(events: number, callback: (status: number, events: number) => void): void {
      calls.push(['watch', this.fd, events]);
      this.events = events;
      this.#callback = callback;
    }
    unwatch(): void {
      calls.push(['unwatch', this.fd]);
      this.events = 0;
    }
    close(): void {
      calls.push(['handle.close', this.fd]);
      this.closed = true;
      this.events = 0;
    }
    fire(status: number, events: number): void {
      this.#callback?.(status, events);
    }
  }
  const binding = {
    constants: { UV_READABLE: 1, UV_WRITABLE: 2, UV_DISCONNECT: 4 },
    kexecLoad: record('kexecLoad', Promise.resolve()),
    kexecUnload: record('kexecUnload', Promise.resolve()),
    kexecFlags: (id: number, o: { initrd: boolean; debug: boolean; unload: boolean }) => nativeFlags(id, o),
    rebootStart: record('rebootStart', undefined),
    rebootHalt: record('rebootHalt', Promise.resolve()),
    rebootHaltForce: record('rebootHaltForce', undefined),
    mountMultikernel: record('mountMultikernel', undefined),
    umountMultikernel: record('umountMultikernel', undefined),
    flockTry: record('flockTry', true),
    flockWait: (fd: number, exclusive: boolean, timeoutMs: number) => {
      calls.push(['flockWait', fd, exclusive, timeoutMs]);
      return { promise: Promise.resolve(true), cancel: () => calls.push(['cancel']) };
    },
    flockUnlock: record('flockUnlock', undefined),
    vsockSocket: (multikernel: boolean) => {
      calls.push(['vsockSocket', multikernel]);
      throw systemError('EAFNOSUPPORT', 'socket');
    },
    sdNotify: record('sdNotify', true),
    memfdCreate: record('memfdCreate', -1),
    dupFd: (fd: number) => {
      calls.push(['dupFd', fd]);
      return new Handle(fd);
    },
    ...overrides,
  } as unknown as NativeBinding;
  return { binding, calls, handles };
}

const ID = 7;
const LOAD = KEXEC_MULTIKERNEL | kexecMkId(ID);

t.test('kexecFileLoad: a load with an initramfs', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  await system.kexecFileLoad({ kernelFd: 20, initrdFd: 21, cmdline: 'console=mktty0 rdinit=/init', flags: LOAD });
  t.same(calls, [['kexecLoad', { kernelFd: 20, initrdFd: 21, cmdline: 'console=mktty0 rdinit=/init', id: ID, debug: false } satisfies KexecLoadArgs]]);
});

t.test('kexecFileLoad: without initramfs, with debug, highest id', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  const flags = KEXEC_MULTIKERNEL | kexecMkId(2047) | KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG;
  await system.kexecFileLoad({ kernelFd: 3, initrdFd: -1, cmdline: '', flags });
  t.same(calls, [['kexecLoad', { kernelFd: 3, initrdFd: -1, cmdline: '', id: 2047, debug: true }]]);
});

t.test('kexecFileLoad: an unload', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  await system.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(1) });
  t.same(calls, [['kexecUnload', 1]]);
});

t.test('kexecFileLoad refuses anything but a multikernel request, before the addon is called', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  const bad: Array<[number, RegExp]> = [
    [0, /lack KEXEC_MULTIKERNEL/],
    [KEXEC_FILE_NO_INITRAMFS, /lack KEXEC_MULTIKERNEL/],
    [kexecMkId(ID) | KEXEC_FILE_NO_INITRAMFS, /lack KEXEC_MULTIKERNEL/],
    [KEXEC_FILE_UNLOAD, /lack KEXEC_MULTIKERNEL/],
    [KEXEC_MULTIKERNEL, /no instance id/],
    [KEXEC_MULTIKERNEL | KEXEC_FILE_NO_INITRAMFS, /no instance id/],
    [LOAD | KEXEC_FILE_ON_CRASH, /bits other than/],
    [LOAD | 0x10000, /bits other than/],
    [LOAD | 0x80000000, /bits other than/],
    [LOAD + 2 ** 32, /bits other than/],
    [-1, /bits other than/],
    [LOAD + 0.5, /240.5 carry bits other than/],
    [NaN, /NaN carry bits/],
    [KEXEC_FILE_UNLOAD | KEXEC_FILE_DEBUG | LOAD, /unload takes only/],
    [KEXEC_FILE_UNLOAD | KEXEC_FILE_NO_INITRAMFS | LOAD, /unload takes only/],
  ];
  for (const [flags, message] of bad) {
    await t.rejects(system.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags }), { name: 'RangeError', message }, `flags ${flags}`);
  }
  t.same(calls, [], 'the addon was never called');
});

t.test('kexecFileLoad: fds must agree with the flags', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  const unload = KEXEC_FILE_UNLOAD | LOAD;
  await t.rejects(system.kexecFileLoad({ kernelFd: 3, initrdFd: -1, cmdline: '', flags: unload }), TypeError);
  await t.rejects(system.kexecFileLoad({ kernelFd: -1, initrdFd: 4, cmdline: '', flags: unload }), TypeError);
  await t.rejects(system.kexecFileLoad({ kernelFd: 3, initrdFd: -1, cmdline: '', flags: LOAD }), {
    name: 'TypeError',
    message: /KEXEC_FILE_NO_INITRAMFS is not set/,
  });
  await t.rejects(system.kexecFileLoad({ kernelFd: 3, initrdFd: 4, cmdline: '', flags: LOAD | KEXEC_FILE_NO_INITRAMFS }), {
    name: 'TypeError',
    message: /KEXEC_FILE_NO_INITRAMFS is set but initrdFd is 4/,
  });
  t.same(calls, []);
});

t.test('kexecFileLoad: an addon that would encode other flags is not called', async (t) => {
  const { binding, calls } = fakeBinding({ kexecFlags: () => LOAD | KEXEC_FILE_DEBUG });
  const system = new LinuxSystem({ binding });
  await t.rejects(system.kexecFileLoad({ kernelFd: 3, initrdFd: 4, cmdline: '', flags: LOAD }), {
    message: /encodes kexec flags 0xf8 for requested flags 0xf0/,
  });
  t.same(calls, []);
});

t.test('kexecFileLoad passes the kernel errno through', async (t) => {
  const err = systemError('EBUSY', 'kexec_file_load');
  const { binding } = fakeBinding({ kexecLoad: () => Promise.reject(err), kexecUnload: () => Promise.reject(err) });
  const system = new LinuxSystem({ binding });
  t.equal(await system.kexecFileLoad({ kernelFd: 3, initrdFd: 4, cmdline: '', flags: LOAD }).catch((e: unknown) => e), err);
  t.equal(
    await system.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: LOAD | KEXEC_FILE_UNLOAD }).catch((e: unknown) => e),
    err,
  );
});

t.test('decodeKexecFlags', async (t) => {
  t.same(decodeKexecFlags(LOAD | KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG), { id: ID, unload: false, noInitramfs: true, debug: true });
  t.same(decodeKexecFlags(LOAD | KEXEC_FILE_UNLOAD), { id: ID, unload: true, noInitramfs: false, debug: false });
  t.same(decodeKexecFlags(0xfff0), { id: 2047, unload: false, noInitramfs: false, debug: false });
});

t.test('reboot: the three multikernel commands map to the addon', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 3);
  await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, 4);
  await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, 2047);
  t.same(calls, [
    ['rebootStart', 3],
    ['rebootHalt', 4],
    ['rebootHaltForce', 2047],
  ]);
});

t.test('reboot refuses every other command and bad ids before the addon is called', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  const LINUX_REBOOT_CMD_RESTART = 0x01234567;
  const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;
  const LINUX_REBOOT_CMD_KEXEC = 0x45584543;
  for (const cmd of [LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_POWER_OFF, LINUX_REBOOT_CMD_KEXEC, 0, 0xcdef0123]) {
    await t.rejects(system.reboot(cmd, 1), { name: 'RangeError', message: /not a multikernel command/ });
  }
  for (const id of [0, -1, 2048, 1.5, NaN]) {
    await t.rejects(system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, id), { name: 'RangeError', message: /1\.\.2047/ });
  }
  t.same(calls, []);
});

t.test('reboot passes the kernel errno through', async (t) => {
  const err = systemError('EINVAL', 'reboot');
  const { binding } = fakeBinding({
    rebootStart: () => {
      throw err;
    },
    rebootHalt: () => Promise.reject(systemError('ETIMEDOUT', 'reboot')),
  });
  const system = new LinuxSystem({ binding });
  t.equal(await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 1).catch((e: unknown) => e), err, 'a sync throw becomes a rejection');
  await t.rejects(system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, 1), { code: 'ETIMEDOUT' });
});

t.test('mount and umount go to the addon; errors become rejections', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  await system.mountMultikernel();
  await system.umountMultikernel();
  t.same(calls, [['mountMultikernel'], ['umountMultikernel']]);
  const failing = new LinuxSystem({
    binding: fakeBinding({
      mountMultikernel: () => {
        throw systemError('ENODEV', 'mount', '/sys/fs/multikernel');
      },
    }).binding,
  });
  await t.rejects(failing.mountMultikernel(), { code: 'ENODEV', syscall: 'mount' });
});

t.test('vsock goes through lib/system/linux/vsock with the injected binding', async (t) => {
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  await t.rejects(system.vsockConnect({ cid: 3, port: 1023 }), { code: 'EAFNOSUPPORT' });
  await t.rejects(system.vsockListen({ port: 1024, multikernel: false }), { code: 'EAFNOSUPPORT' });
  t.same(calls, [
    ['vsockSocket', true],
    ['vsockSocket', false],
  ]);
});

t.test('notify and openImageBytes use the addon', async (t) => {
  const { binding, calls } = fakeBinding({
    memfdCreate: (name: string) => {
      calls.push(['memfdCreate', name]);
      throw systemError('EMFILE', 'memfd_create');
    },
  });
  const system = new LinuxSystem({ binding });
  t.equal(await system.notify('READY=1'), true);
  await t.rejects(system.openImageBytes('vmlinux', Buffer.from('x')), { code: 'EMFILE' });
  t.same(calls, [
    ['sdNotify', 'READY=1'],
    ['memfdCreate', 'vmlinux'],
  ]);
});

t.test('openImageBytes closes the memfd when writing fails', async (t) => {
  // A read-only fd stands in for the memfd, so the write fails with EBADF.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-fake-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'ro'), '');
  const fd = fs.openSync(path.join(dir, 'ro'), 'r');
  const { binding } = fakeBinding({ memfdCreate: () => fd });
  const system = new LinuxSystem({ binding });
  await t.rejects(system.openImageBytes('x', Buffer.from('data')), { code: 'EBADF', syscall: 'write' });
  t.throws(() => fs.fstatSync(fd), { code: 'EBADF' }, 'the fd was closed');
});

function lockFile(t: tap.Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-fake-lock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'lock');
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

t.test('lock: defaults wait for an exclusive lock without timeout; release unlocks then closes once', async (t) => {
  const file = lockFile(t);
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  const before = openFds();
  const handle = await system.lock(file);
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'created 0600');
  t.equal(calls.length, 1);
  const [name, fd, exclusive, timeout] = calls[0]!;
  t.same([name, exclusive, timeout], ['flockWait', true, -1]);
  t.equal(openFds(), before + 1);
  await handle.release();
  await handle.release();
  t.same(calls.slice(1), [['flockUnlock', fd]]);
  t.equal(openFds(), before, 'fd closed');
});

t.test('lock: shared, timeout and no-wait options reach the addon', async (t) => {
  const file = lockFile(t);
  const { binding, calls } = fakeBinding();
  const system = new LinuxSystem({ binding });
  const shared = await system.lock(file, { exclusive: false, timeoutMs: 250 });
  t.match(calls[0], ['flockWait', Number, false, 250]);
  const tried = await system.lock(file, { wait: false, exclusive: false });
  t.match(calls[1], ['flockTry', Number, false]);
  await shared.release();
  await tried.release();
  await t.rejects(system.lock(file, { timeoutMs: -5 }), RangeError);
  await t.rejects(system.lock(file, { timeoutMs: 1.5 }), RangeError);
});

t.test('lock: busy without waiting is EWOULDBLOCK and the fd is closed', async (t) => {
  const file = lockFile(t);
  const { binding } = fakeBinding({ flockTry: () => false });
  const system = new LinuxSystem({ binding });
  const before = openFds();
  await t.rejects(system.lock(file, { wait: false }), { code: 'EWOULDBLOCK', syscall: 'flock', path: file });
  t.equal(openFds(), before);
});

t.test('lock: a timeout is ETIMEDOUT and the fd is closed', async (t) => {
  const file = lockFile(t);
  const { binding } = fakeBinding({ flockWait: () => ({ promise: Promise.resolve(false), cancel: () => undefined }) });
  const system = new LinuxSystem({ binding });
  const before = openFds();
  await t.rejects(system.lock(file, { timeoutMs: 10 }), { code: 'ETIMEDOUT', syscall: 'flock', path: file });
  t.equal(openFds(), before);
});

t.test('lock: an addon error closes the fd and passes through', async (t) => {
  const file = lockFile(t);
  const { binding } = fakeBinding({
    flockWait: () => ({ promise: Promise.reject(systemError('ENOLCK', 'flock')), cancel: () => undefined }),
  });
  const system = new LinuxSystem({ binding });
  const before = openFds();
  await t.rejects(system.lock(file), { code: 'ENOLCK' });
  t.equal(openFds(), before);
  await t.rejects(system.lock(path.join(file, 'not-a-dir', 'x')), { code: 'ENOTDIR', syscall: 'open' });
});

t.test('lock: abort cancels the wait and rejects with the reason', async (t) => {
  const file = lockFile(t);
  let settle: (taken: boolean) => void = () => undefined;
  let waiting: () => void = () => undefined;
  const waitCalled = new Promise<void>((resolve) => (waiting = resolve));
  const { binding, calls } = fakeBinding({
    flockWait: () => ({
      promise: new Promise<boolean>((resolve) => {
        settle = resolve;
        waiting();
      }),
      cancel: () => {
        calls.push(['cancel']);
        settle(false);
      },
    }),
  });
  const system = new LinuxSystem({ binding });
  const before = openFds();
  const ac = new AbortController();
  const pending = system.lock(file, { signal: ac.signal });
  await waitCalled;
  const reason = new Error('shutting down');
  ac.abort(reason);
  t.equal(await pending.catch((e: unknown) => e), reason);
  t.same(calls, [['cancel']]);
  t.equal(openFds(), before);

  await t.rejects(system.lock(file, { signal: ac.signal }), reason, 'already aborted: rejects before opening');
  t.equal(openFds(), before);
});

t.test('lock: a lock granted as the signal aborts is given back', async (t) => {
  const file = lockFile(t);
  const ac = new AbortController();
  const { binding, calls } = fakeBinding({
    flockWait: () => ({
      // The addon hands over the lock in the same turn the caller aborts.
      promise: Promise.resolve(true).then((v) => {
        ac.abort();
        return v;
      }),
      cancel: () => calls.push(['cancel']),
    }),
  });
  const system = new LinuxSystem({ binding });
  const before = openFds();
  await t.rejects(system.lock(file, { signal: ac.signal }), { name: 'AbortError' });
  t.match(calls, [['cancel'], ['flockUnlock', Number]]);
  t.equal(openFds(), before);
});

t.test('lock: an aborted wait that did not get the lock unlocks nothing', async (t) => {
  const file = lockFile(t);
  const ac = new AbortController();
  const { binding, calls } = fakeBinding({
    flockWait: () => ({
      promise: Promise.resolve(false).then((v) => {
        ac.abort();
        return v;
      }),
      cancel: () => calls.push(['cancel']),
    }),
  });
  const system = new LinuxSystem({ binding });
  await t.rejects(system.lock(file, { signal: ac.signal }), { name: 'AbortError' });
  t.same(calls, [['cancel']]);
});

t.test('lock: release closes the fd even when unlocking fails', async (t) => {
  const file = lockFile(t);
  const { binding } = fakeBinding({
    flockUnlock: () => {
      throw systemError('EBADF', 'flock');
    },
  });
  const system = new LinuxSystem({ binding });
  const before = openFds();
  const handle = await system.lock(file);
  await t.rejects(handle.release(), { code: 'EBADF' });
  t.equal(openFds(), before);
  await handle.release();
});

function fakeDeviceSystem(reads: Array<number | Error>): { system: LinuxSystem; calls: Call[]; handles: FakeHandle[] } {
  const fake = fakeBinding({}, (buffer, offset) => {
    const next = reads.shift() ?? -1;
    if (next instanceof Error) throw next;
    if (next > 0) buffer.fill(0x41, offset, offset + next);
    return next;
  });
  return { system: new LinuxSystem({ binding: fake.binding }), calls: fake.calls, handles: fake.handles };
}

t.test('device readiness: the watch runs only while somebody waits', async (t) => {
  const { system, calls, handles } = fakeDeviceSystem([-1, 3]);
  const before = openFds();
  const dev = await system.openDevice('/dev/null');
  t.equal(openFds(), before, "the device lives in the addon's handle: node:fs closed its own fd");
  t.equal(calls[0]?.[0], 'dupFd');
  const pending = dev.read({ max: 8 });
  await new Promise((r) => setImmediate(r));
  t.equal(handles.length, 1);
  const w = handles[0]!;
  t.equal(w.events, 1, 'waits for UV_READABLE');
  w.fire(0, 2);
  await new Promise((r) => setImmediate(r));
  t.equal(w.events, 1, 'a WRITABLE event does not wake a reader');
  w.fire(0, 1);
  t.equal((await pending).toString(), 'AAA');
  t.equal(w.events, 0, 'stopped again');
  await dev.close();
  t.equal(w.closed, true, 'close() closes the handle');
  await dev.close();
  t.equal(calls.filter((c) => c[0] === 'handle.close').length, 1, 'once');
});

t.test('device: a handle that cannot be made leaves no fd behind', async (t) => {
  const { binding } = fakeBinding({
    dupFd: () => {
      throw systemError('EMFILE', 'fcntl');
    },
  });
  const before = openFds();
  await t.rejects(new LinuxSystem({ binding }).openDevice('/dev/null'), { code: 'EMFILE', syscall: 'fcntl' });
  t.equal(openFds(), before);
});

t.test('device readiness: a poll error rejects the waiting read with a Node-shaped error', async (t) => {
  const { system, handles } = fakeDeviceSystem([-1, -1, -1]);
  const dev = await system.openDevice('/dev/null');
  t.teardown(() => dev.close());
  const pending = dev.read();
  await new Promise((r) => setImmediate(r));
  handles[0]!.fire(-os.constants.errno.EBADF, 0);
  await t.rejects(pending, { code: 'EBADF', syscall: 'poll', path: '/dev/null' });
  const keyRejected = dev.read();
  await new Promise((r) => setImmediate(r));
  handles[0]!.fire(-129, 0);
  await t.rejects(keyRejected, { code: 'EKEYREJECTED', errno: -129, message: "EKEYREJECTED: key was rejected by service, poll '/dev/null'" }, 'named from lib/errors.ts, not libuv');
  const odd = dev.read();
  await new Promise((r) => setImmediate(r));
  handles[0]!.fire(-4095, 0);
  await t.rejects(odd, { code: 'UNKNOWN', errno: -4095, syscall: 'poll' }, 'a status no table names is UNKNOWN, as in Node');
});

t.test('device: a read error from the kernel rejects with that errno', async (t) => {
  const { system } = fakeDeviceSystem([systemError('ENOTCONN', 'read')]);
  const dev = await system.openDevice('/dev/null');
  t.teardown(() => dev.close());
  await t.rejects(dev.read(), { code: 'ENOTCONN', syscall: 'read' });
});

t.test('openKernelLog: /dev/kmsg read-only, moved past the records logged so far, held by the addon', async (t) => {
  const { binding, calls } = fakeBinding({
    seekEnd: (fd: number) => {
      calls.push(['seekEnd', fd]);
      return 0;
    },
  });
  const before = openFds();
  const log = await new LinuxSystem({ binding }).openKernelLog().catch((err: NodeJS.ErrnoException) => err);
  if (log instanceof Error) {
    // a container without /dev/kmsg, or a user without the right to read it
    t.match(log, { code: /^(ENOENT|EACCES|EPERM)$/, syscall: 'open', path: '/dev/kmsg' });
    t.same(calls, [], 'nothing else was tried');
    return;
  }
  const [seek, dup] = calls;
  t.equal(seek?.[0], 'seekEnd');
  t.same(dup, ['dupFd', seek?.[1]], 'the duplicate is made of the moved fd');
  t.equal(openFds(), before, "node:fs closed its own fd: the log lives in the addon's handle");
  await log.close();
});

t.test('openKernelLog: a seek that fails leaves no fd behind', async (t) => {
  const { binding } = fakeBinding({
    seekEnd: () => {
      throw systemError('ESPIPE', 'lseek');
    },
  });
  const before = openFds();
  const err = await new LinuxSystem({ binding }).openKernelLog().catch((e: NodeJS.ErrnoException) => e);
  t.match(err, { code: /^(ESPIPE|ENOENT|EACCES|EPERM)$/ });
  t.equal(openFds(), before);
});
