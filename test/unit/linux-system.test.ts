// LinuxSystem on this machine: only safe, real system calls (files in a temp dir, procfs, a FIFO,
// /dev/ptmx, memfd, sd_notify without a supervisor). kexec, reboot, mount and vsock are in
// linux-system-fake.test.ts with an injected binding, and really run in the QEMU lane.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadBinding } from '../../lib/binding';
import { probeMultikernelSupport, explainNoSupport } from '../../lib/support';
import { LinuxSystem } from '../../lib/system/linux';

const system = new LinuxSystem();

function tempDir(t: tap.Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-linux-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('kind', async (t) => {
  t.equal(system.kind, 'linux');
});

t.test('readFile reads procfs files to EOF although st_size says 0', async (t) => {
  const st = fs.statSync('/proc/cpuinfo');
  t.equal(st.size, 0, 'procfs reports size 0');
  const cpuinfo = await system.readFile('/proc/cpuinfo');
  t.ok(cpuinfo.length > 0);
  t.match(cpuinfo.toString(), /processor\s*:\s*0/);
  t.equal(cpuinfo.toString().match(/^processor\s*:/gm)?.length, os.cpus().length, 'every CPU is there');
  t.ok(cpuinfo.toString().endsWith('\n\n'), 'read to the end');
  const environ = await system.readFile('/proc/self/environ');
  t.ok(environ.equals(fs.readFileSync('/proc/self/environ')), `/proc/self/environ complete (${environ.length} bytes)`);
  const status = (await system.readFile('/proc/self/status')).toString();
  t.match(status, new RegExp(`^Pid:\\s+${process.pid}$`, 'm'));
});

t.test('readFile of a large file grows its buffer', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'big');
  const content = Buffer.alloc(1_000_003);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) & 0xff;
  fs.writeFileSync(file, content);
  const read = await system.readFile(file);
  t.equal(read.length, content.length);
  t.ok(read.equals(content));
  t.equal(read.buffer.byteLength, read.length, 'the result does not keep the oversized work buffer');
  const empty = path.join(dir, 'empty');
  fs.writeFileSync(empty, '');
  t.equal((await system.readFile(empty)).length, 0);
  const exact = path.join(dir, 'exact');
  fs.writeFileSync(exact, Buffer.alloc(4096, 1));
  t.equal((await system.readFile(exact)).length, 4096);
});

t.test('errors are Node-shaped', async (t) => {
  const dir = tempDir(t);
  await t.rejects(system.readFile(path.join(dir, 'missing')), {
    code: 'ENOENT',
    errno: -os.constants.errno.ENOENT,
    syscall: 'open',
    path: path.join(dir, 'missing'),
    message: /^ENOENT: no such file or directory, open '/,
  });
  await t.rejects(system.readFile(dir), { code: 'EISDIR', syscall: 'read' });
  await t.rejects(system.writeFile(path.join(dir, 'missing'), Buffer.from('x')), { code: 'ENOENT', syscall: 'open' });
  await t.rejects(system.writeFile(dir, Buffer.from('x')), { code: 'EISDIR' });
  await t.rejects(system.readdir(path.join(dir, 'missing')), { code: 'ENOENT', syscall: 'scandir' });
  await t.rejects(system.stat(path.join(dir, 'missing')), { code: 'ENOENT', syscall: 'lstat' });
  await t.rejects(system.rmdir(path.join(dir, 'missing')), { code: 'ENOENT', syscall: 'rmdir' });
  await t.rejects(system.mkdir(dir), { code: 'EEXIST', syscall: 'mkdir' });
  await t.rejects(system.openImage(path.join(dir, 'missing')), { code: 'ENOENT' });
  await t.rejects(system.openDevice(path.join(dir, 'missing')), { code: 'ENOENT' });
});

t.test('writeFile: no O_CREAT, no O_TRUNC, one write, resolves with the count', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, 'XXXXXXXXXX');
  t.equal(await system.writeFile(file, Buffer.from('abc')), 3);
  t.equal(fs.readFileSync(file, 'latin1'), 'abcXXXXXXX', 'written at offset 0, not truncated');
  const big = Buffer.alloc(300_000, 0x5a);
  t.equal(await system.writeFile(file, big), big.length);
  t.ok(fs.readFileSync(file).equals(big));
  t.equal(await system.writeFile(file, new Uint8Array(0)), 0);
  t.notOk(fs.existsSync(path.join(dir, 'new')));
  await t.rejects(system.writeFile(path.join(dir, 'new'), Buffer.from('x')), { code: 'ENOENT' });
  t.notOk(fs.existsSync(path.join(dir, 'new')), 'never creates files');
});

t.test('readdir, mkdir, rmdir and stat', async (t) => {
  const dir = tempDir(t);
  await system.mkdir(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'file'), 'hello');
  fs.chmodSync(path.join(dir, 'file'), 0o640);
  fs.symlinkSync('file', path.join(dir, 'link'));
  t.same((await system.readdir(dir)).sort(), ['file', 'link', 'sub']);
  t.same(await system.stat(path.join(dir, 'file')), { type: 'file', mode: 0o640, size: 5, mtimeMs: fs.lstatSync(path.join(dir, 'file')).mtimeMs });
  t.match(await system.stat(path.join(dir, 'sub')), { type: 'directory' });
  t.match(await system.stat(path.join(dir, 'link')), { type: 'symlink' }, 'lstat: links are not followed');
  t.match(await system.stat('/dev/null'), { type: 'char-device', mode: 0o666 });
  execFileSync('mkfifo', [path.join(dir, 'fifo')]);
  t.match(await system.stat(path.join(dir, 'fifo')), { type: 'other' });
  t.match(await system.stat('/proc/self/status'), { type: 'file', size: 0 });
  await t.rejects(system.rmdir(dir), { code: 'ENOTEMPTY' });
  await system.rmdir(path.join(dir, 'sub'));
  t.notOk(fs.existsSync(path.join(dir, 'sub')));
});

t.test('createExclusive and unlink: an empty file that must not exist yet, as kerf creates its lock', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'kerf.lock');
  const fdsBefore = fs.readdirSync('/proc/self/fd').length;
  const t0 = Date.now();
  await system.createExclusive(file);
  const st = fs.lstatSync(file);
  t.ok(st.isFile());
  t.equal(st.size, 0, 'empty, as kerf\'s touch leaves it');
  t.equal(st.mode & 0o777, 0o644 & ~process.umask(), 'mode 0644 less the umask');
  const stat = await system.stat(file);
  t.equal(stat.mtimeMs, st.mtimeMs, 'stat gives lstat\'s mtime');
  t.ok(stat.mtimeMs >= t0 - 1000 && stat.mtimeMs <= Date.now() + 1000, 'created now');
  await t.rejects(system.createExclusive(file), { code: 'EEXIST', syscall: 'open', path: file }, 'exists: EEXIST');
  fs.symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'link'));
  await t.rejects(system.createExclusive(path.join(dir, 'link')), { code: 'EEXIST' }, 'a dangling symlink is not followed');
  t.notOk(fs.existsSync(path.join(dir, 'nowhere')));
  await t.rejects(system.createExclusive(path.join(dir, 'missing', 'x')), { code: 'ENOENT', syscall: 'open' }, 'no directory: ENOENT');
  t.equal(fs.readdirSync('/proc/self/fd').length, fdsBefore, 'no fd left open');
  await system.unlink(file);
  t.notOk(fs.existsSync(file));
  await t.rejects(system.unlink(file), { code: 'ENOENT', syscall: 'unlink', path: file });
  await t.rejects(system.unlink(dir), { code: 'EISDIR' });
  // with bytes (this library's owner record in kerf's lock file); empty bytes write nothing
  await system.createExclusive(file, Buffer.from('multikernel pid=1 start=2 boot=x\n'));
  t.equal(fs.readFileSync(file, 'utf8'), 'multikernel pid=1 start=2 boot=x\n');
  await system.unlink(file);
  await system.createExclusive(file, new Uint8Array(0));
  t.equal(fs.statSync(file).size, 0);
  await system.unlink(file);
  t.equal(fs.readdirSync('/proc/self/fd').length, fdsBefore, 'no fd left open');
});

t.test('this machine has no multikernel support, and the probe says so', async (t) => {
  const report = await probeMultikernelSupport(system);
  t.equal(report.supported, false);
  t.equal(report.filesystemRegistered, false);
  t.equal(report.mountPoint, false);
  t.equal(report.kimage, false);
  t.match(report.findings, ['/proc/filesystems has no "multikernel"', '/sys/fs/multikernel is missing', '/proc/kimage is missing']);
  await t.rejects(
    explainNoSupport(system, 'reading the multikernel pool', () => system.readFile('/sys/fs/multikernel/device_tree')),
    { code: 'ERR_MK_NO_SUPPORT', name: 'MultikernelError', cause: { code: 'ENOENT' } },
  );
});

t.test('openImage and openImageBytes give readable fds; closeImage closes them', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'vmlinux');
  fs.writeFileSync(file, 'ELF image bytes');
  const fd = await system.openImage(file);
  t.equal(fs.readFileSync(fd, 'latin1'), 'ELF image bytes');
  t.equal(fs.fstatSync(fd).isFile(), true);
  t.throws(() => fs.writeSync(fd, 'x'), { code: 'EBADF' }, 'read-only');
  await system.closeImage(fd);
  t.throws(() => fs.fstatSync(fd), { code: 'EBADF' });

  const bytes = Buffer.alloc(3 * 1024 * 1024 + 5);
  for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i >> 12;
  const memfd = await system.openImageBytes('initrd', bytes);
  t.equal(fs.readlinkSync(`/proc/self/fd/${memfd}`), '/memfd:initrd (deleted)');
  t.ok(fs.readFileSync(`/proc/self/fd/${memfd}`).equals(bytes), 'all bytes written');
  await system.closeImage(memfd);
  await t.rejects(system.closeImage(memfd), { code: 'EBADF' });

  const empty = await system.openImageBytes('empty', new Uint8Array(0));
  t.equal(fs.fstatSync(empty).size, 0);
  await system.closeImage(empty);
});

t.test('notify outside a supervisor is false', async (t) => {
  const saved = process.env.NOTIFY_SOCKET;
  delete process.env.NOTIFY_SOCKET;
  t.teardown(() => {
    if (saved !== undefined) process.env.NOTIFY_SOCKET = saved;
  });
  t.equal(await system.notify('READY=1'), false);
});

t.test('the addon is loaded only when needed', async (t) => {
  const lazy = new LinuxSystem();
  t.equal((lazy as unknown as { bindingInstance: unknown }).bindingInstance, undefined);
  await lazy.readFile('/proc/self/status');
  await lazy.stat('/proc');
  t.equal((lazy as unknown as { bindingInstance: unknown }).bindingInstance, undefined, 'plain files need no addon');
  await lazy.notify('READY=1');
  t.equal((lazy as unknown as { bindingInstance: unknown }).bindingInstance, loadBinding());
});

async function fifoPair(t: tap.Test): Promise<{ path: string; dev: Awaited<ReturnType<LinuxSystem['openDevice']>>; peer: number }> {
  const dir = tempDir(t);
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const dev = await system.openDevice(fifo);
  // The device end holds the FIFO open for reading and writing, so this open never blocks.
  const peer = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  t.teardown(async () => {
    await dev.close();
    fs.closeSync(peer);
  });
  return { path: fifo, dev, peer };
}

t.test('openDevice: read waits for readiness, then returns what arrived', async (t) => {
  const { dev, peer } = await fifoPair(t);
  let done = false;
  const pending = dev.read().then((b) => {
    done = true;
    return b;
  });
  await sleep(50);
  t.equal(done, false, 'nothing to read yet: the read waits');
  fs.writeSync(peer, 'hello');
  const got = await pending;
  t.equal(got.toString(), 'hello');

  fs.writeSync(peer, 'abcdef');
  const first = await dev.read({ max: 4 });
  t.equal(first.toString(), 'abcd', 'max bounds one read');
  const second = await dev.read();
  t.equal(second.toString(), 'ef');
  t.equal(first.toString(), 'abcd', 'a later read does not overwrite an earlier result');
  t.ok(second.buffer.byteLength < 64 * 1024, 'a small result does not pin a 64 KiB buffer');
  await t.rejects(dev.read({ max: 0 }), RangeError);
  await t.rejects(dev.read({ max: 1.5 }), RangeError);
});

t.test('openDevice: write goes out in one write(2) and waits when the device is full', async (t) => {
  const { dev, peer } = await fifoPair(t);
  t.equal(await dev.write(Buffer.from('ping')), 4);
  const buf = Buffer.alloc(16);
  t.equal(fs.readSync(peer, buf), 4);
  t.equal(await dev.write(new Uint8Array(0)), 0);

  // Fill the pipe until write(2) says EAGAIN, then check that the write waits for room.
  const chunk = Buffer.alloc(4096, 1);
  let filled = 0;
  for (;;) {
    try {
      filled += fs.writeSync(peer, chunk);
    } catch (e) {
      t.equal((e as NodeJS.ErrnoException).code, 'EAGAIN');
      break;
    }
  }
  t.ok(filled >= 4096, `pipe filled with ${filled} bytes`);
  let written: number | undefined;
  const pending = dev.write(Buffer.from('late')).then((n) => (written = n));
  await sleep(50);
  t.equal(written, undefined, 'write waits for WRITABLE');
  const drain = Buffer.alloc(filled);
  let drained = 0;
  while (drained < filled) drained += fs.readSync(peer, drain, drained, filled - drained, null);
  t.equal(await pending, 4);
  const tail = Buffer.alloc(8);
  t.equal(fs.readSync(peer, tail).toString(), '4');
});

t.test('openDevice: a read and a write can wait at the same time', async (t) => {
  const { dev, peer } = await fifoPair(t);
  const chunk = Buffer.alloc(65536, 2);
  let filled = 0;
  for (;;) {
    try {
      filled += fs.writeSync(peer, chunk);
    } catch {
      break;
    }
  }
  // The pipe is full: a write waits; a read succeeds at once and makes room.
  const writing = dev.write(Buffer.alloc(10, 3));
  const first = await dev.read({ max: 65536 });
  t.ok(first.length > 0);
  t.equal(await writing, 10);
});

t.test('openDevice: abort stops a waiting read with the signal reason', async (t) => {
  const { dev, peer } = await fifoPair(t);
  const ac = new AbortController();
  const reason = new Error('user pressed ^C');
  const pending = dev.read({ signal: ac.signal });
  await sleep(20);
  ac.abort(reason);
  await t.rejects(pending, reason);
  await t.rejects(dev.read({ signal: ac.signal }), reason, 'an aborted signal rejects at once');
  const pre = new AbortController();
  pre.abort();
  await t.rejects(dev.read({ signal: pre.signal }), { name: 'AbortError' });
  // The device still works after an abort, and a finished read leaves the signal alone.
  const ac2 = new AbortController();
  fs.writeSync(peer, 'after');
  t.equal((await dev.read({ signal: ac2.signal })).toString(), 'after');
  ac2.abort();
  const again = dev.read({ signal: new AbortController().signal });
  fs.writeSync(peer, 'again');
  t.equal((await again).toString(), 'again');
});

t.test('openDevice: close is idempotent and fails waiting and later calls with EBADF', async (t) => {
  const dir = tempDir(t);
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const dev = await system.openDevice(fifo);
  const fdsBefore = fs.readdirSync('/proc/self/fd').length;
  const ac = new AbortController();
  const pending = dev.read({ signal: ac.signal }).catch((e: unknown) => e);
  await sleep(20);
  await dev.close();
  ac.abort(new Error('too late: the read has already failed'));
  t.match(await pending, { code: 'EBADF', syscall: 'poll', path: fifo }, 'a waiting read fails when the device is closed');
  await dev.close();
  await t.rejects(dev.read(), { code: 'EBADF', syscall: 'read' });
  await t.rejects(dev.write(Buffer.from('x')), { code: 'EBADF', syscall: 'write' });
  t.equal(fs.readdirSync('/proc/self/fd').length, fdsBefore - 1, 'the fd was closed once');
});

t.test('openDevice on a real character device (/dev/ptmx): read waits, abort ends it', async (t) => {
  // A pty master whose slave was never opened has nothing to read: EAGAIN, so the read waits.
  const dev = await system.openDevice('/dev/ptmx');
  t.teardown(() => dev.close());
  t.match(await system.stat('/dev/ptmx'), { type: 'char-device' });
  const ac = new AbortController();
  const pending = dev.read({ signal: ac.signal });
  await sleep(30);
  ac.abort(new Error('stop'));
  await t.rejects(pending, { message: 'stop' });
});

t.test('openDevice: end of file is an empty buffer, without waiting', async (t) => {
  const nul = await system.openDevice('/dev/null');
  t.teardown(() => nul.close());
  t.equal((await nul.read()).length, 0);
  t.equal(await nul.write(Buffer.from('discarded')), 9);
});

t.test('writeFile to a FIFO opened elsewhere is still a single write', async (t) => {
  const { path: fifo, peer } = await fifoPair(t);
  t.equal(await system.writeFile(fifo, Buffer.from('one-shot')), 8);
  const buf = Buffer.alloc(32);
  t.equal(fs.readSync(peer, buf, 0, 32, null), 8);
  t.equal(buf.subarray(0, 8).toString(), 'one-shot');
});
