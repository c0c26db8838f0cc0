import t from 'tap';
import {
  KEXEC_FILE_DEBUG,
  KEXEC_FILE_NO_INITRAMFS as NOINIT,
  KEXEC_FILE_ON_CRASH,
  KEXEC_FILE_UNLOAD,
  KEXEC_MULTIKERNEL as MK,
  kexecMkId,
  LINUX_REBOOT_CMD_MULTIKERNEL as START,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT as HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE as FORCE,
} from '../../lib/uapi';
import { fakeArm64Image, fakeElfVmlinux } from '../contract/fake-kernel';
import { M, setup, status } from './helpers';

t.test('flag word decoded the kernel way', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const fd = await sim.openImageBytes('vmlinux', fakeElfVmlinux());
  const load = (flags: number, extra: Partial<{ kernelFd: number; initrdFd: number; cmdline: string }> = {}) =>
    sim.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: 'x', flags, ...extra });
  await t.rejects(load(MK | kexecMkId(1) | NOINIT | 0x10000), { code: 'EINVAL', syscall: 'kexec_file_load' }, 'unknown bit');
  await t.rejects(load(-1), { code: 'EINVAL' }, 'negative flag word');
  await t.rejects(load(1.5), { code: 'EINVAL' }, 'not an integer');
  await t.rejects(load(MK | kexecMkId(1) | KEXEC_FILE_ON_CRASH | NOINIT), { code: 'EINVAL' }, 'ON_CRASH with MULTIKERNEL');
  await t.rejects(load(MK | NOINIT), { code: 'EINVAL' }, 'no id');
  await t.rejects(load(kexecMkId(1) | NOINIT), { code: 'EPERM' }, 'a host kexec is not simulated');
  await t.rejects(load(MK | kexecMkId(1)), { code: 'EBADF' }, 'initrd -1 without NO_INITRAMFS');
  await t.rejects(load(MK | kexecMkId(1) | NOINIT, { kernelFd: 999 }), { code: 'EBADF' }, 'unknown kernel fd');
  await t.rejects(load(MK | kexecMkId(1) | NOINIT, { cmdline: 'a\0b' }), { code: 'EINVAL' }, 'a NUL inside the command line');
  await t.resolves(load(MK | kexecMkId(1) | NOINIT, { cmdline: 'y'.repeat(2047) }), '2047 characters + NUL = COMMAND_LINE_SIZE is accepted');
  await load(MK | kexecMkId(1) | KEXEC_FILE_UNLOAD);
  const big = await sim.openImageBytes('big', fakeElfVmlinux(300 * 1024 * 1024));
  await t.rejects(load(MK | kexecMkId(1) | NOINIT, { kernelFd: big }), { code: 'ENOMEM' }, 'image larger than the instance memory');
  const initrd = await sim.openImageBytes('initrd', Buffer.alloc(1000));
  await load(MK | kexecMkId(1) | KEXEC_FILE_DEBUG, { initrdFd: initrd, cmdline: 'console=mktty0' });
  t.match((await sim.dmesg()).join('\n'), /kexec_file: Loaded kernel at 0x[0-9a-f]+ bufsz=0x2000/);
  const kimage = (await sim.readFile('/proc/kimage')).toString().split('\n');
  t.equal(kimage[1], '    1  multikernel  0x000040000000         3  file  "console=mktty0"', 'exact kexec_core.c row (kernel, initrd and setup segments)');
  await sim.closeImage(fd);
  await t.rejects(sim.closeImage(fd), { code: 'EBADF', syscall: 'close' });
});

t.test('arm64 takes an Image, not an ELF', async (t) => {
  const sim = await setup({ arch: 'arm64' }, { instance: true });
  t.teardown(() => sim.dispose());
  const elf = await sim.openImageBytes('vmlinux', fakeElfVmlinux());
  const image = await sim.openImageBytes('Image', fakeArm64Image());
  const flags = MK | kexecMkId(1) | NOINIT;
  await t.rejects(sim.kexecFileLoad({ kernelFd: elf, initrdFd: -1, cmdline: '', flags }), { code: 'ENOEXEC' });
  await sim.kexecFileLoad({ kernelFd: image, initrdFd: -1, cmdline: '', flags });
  t.equal(await status(sim), 'loaded');
  t.match((await sim.readFile('/proc/cpuinfo')).toString(), /^CPU implementer\t: 0x41$/m);
  const x86 = await setup({}, { instance: true });
  t.teardown(() => x86.dispose());
  const img = await x86.openImageBytes('Image', fakeArm64Image());
  await t.rejects(x86.kexecFileLoad({ kernelFd: img, initrdFd: -1, cmdline: '', flags }), { code: 'ENOEXEC' }, 'x86_64 refuses an arm64 Image');
  const bad = Buffer.from(fakeElfVmlinux());
  bad.writeUInt16LE(183, 18); // EM_AARCH64
  const wrong = await x86.openImageBytes('vmlinux-arm', bad);
  await t.rejects(x86.kexecFileLoad({ kernelFd: wrong, initrdFd: -1, cmdline: '', flags }), { code: 'ENOEXEC' }, 'an ELF for another machine');
});

t.test('openImage reads a host file', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  const dir = t.testdir({ vmlinux: fakeElfVmlinux() });
  const fd = await sim.openImage(`${dir}/vmlinux`);
  await sim.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: '', flags: MK | kexecMkId(1) | NOINIT });
  await t.rejects(sim.openImage(`${dir}/missing`), { code: 'ENOENT' });
});

t.test('reboot commands', async (t) => {
  const sim = await setup({ haltTimeoutMs: 30 }, { start: true });
  t.teardown(() => sim.dispose());
  await t.rejects(sim.reboot(0x01234567, 1), { code: 'EINVAL', syscall: 'reboot' }, 'not a multikernel command');
  await t.rejects(sim.reboot(FORCE, 9), { code: 'ENOENT' }, 'force halt of an unknown instance');
  await t.rejects(sim.reboot(START, 9), { code: 'EINVAL' }, 'start of an unknown instance');
  await sim.hang(1);
  t.equal(await status(sim), 'active', 'a hung instance stays active');
  await t.rejects(sim.reboot(START, 1), { code: 'EBUSY' });
  const t0 = Date.now();
  await t.rejects(sim.reboot(HALT, 1), { code: 'ETIMEDOUT', syscall: 'reboot' }, 'a hung spawn never acknowledges');
  t.ok(Date.now() - t0 >= 25, 'after the halt timeout');
  t.equal(await status(sim), 'active');
  await t.rejects(sim.poweroffFromInside(1), RangeError, 'a hung spawn cannot power itself off');
  await sim.reboot(FORCE, 1);
  t.equal(await status(sim), 'loaded', 'force halt recovers it');
  await t.rejects(sim.panic(1), RangeError, 'only an active instance can panic');
  await sim.reboot(START, 1);
  await sim.panic(1);
  t.equal(await status(sim), 'loaded', 'a panic halts back to the pool');
  await sim.reboot(START, 1);
  await sim.poweroffFromInside(1);
  t.equal(await status(sim), 'loaded', 'poweroff inside the spawn');
  t.match((await sim.dmesg()).join('\n'), /Timeout waiting for operation 0x3002 on resource 1[^]*Force halting multikernel instance 1 via NMI[^]*halted, CPUs parking in pool[^]*halted, CPUs parking in pool$/);
});

t.test('a stock kernel has no multikernel support', async (t) => {
  const sim = new (await import('../../lib/system/simulated')).SimulatedSystem({ stockKernel: true });
  t.teardown(() => sim.dispose());
  t.notMatch((await sim.readFile('/proc/filesystems')).toString(), /multikernel/);
  t.match((await sim.readFile('/proc/filesystems')).toString(), /^nodev\tsysfs$/m);
  await t.rejects(sim.stat(M), { code: 'ENOENT' });
  t.same(await sim.readdir('/sys/fs'), []);
  await t.rejects(sim.mountMultikernel(), { code: 'ENODEV', syscall: 'mount' });
  await t.rejects(sim.umountMultikernel(), { code: 'EINVAL' });
  await t.rejects(sim.readFile('/proc/kimage'), { code: 'ENOENT' });
  await t.rejects(sim.openDevice('/dev/mktty'), { code: 'ENOENT' });
  const fd = await sim.openImageBytes('vmlinux', fakeElfVmlinux());
  await t.rejects(sim.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: '', flags: MK | kexecMkId(1) | NOINIT }), { code: 'EINVAL' });
  for (const cmd of [START, HALT, FORCE]) await t.rejects(sim.reboot(cmd, 1), { code: 'EINVAL' });
});

t.test('faults: stalls, clear, and the channels behind vsock', async (t) => {
  const sim = await setup({}, { instance: true });
  t.teardown(() => sim.dispose());
  sim.faults.add({ op: 'stat', times: 1, action: { stallMs: 30 } });
  const t0 = Date.now();
  await sim.stat(M);
  t.ok(Date.now() - t0 >= 25, 'stalled');
  sim.faults.add({ op: 'stat', id: 7, action: { errno: 'EIO' } });
  sim.faults.add({ op: 'stat', path: '/elsewhere', action: { errno: 'EIO' } });
  sim.faults.add({ op: 'stat', path: /^\/proc\//, times: 1, action: { errno: 'EACCES' } });
  sim.faults.add({ op: 'reboot', path: /./, action: { errno: 'EIO' } });
  await sim.stat(M);
  await t.rejects(sim.stat('/proc/iomem'), { code: 'EACCES' }, 'a path pattern');
  await t.rejects(sim.reboot(0x4d4b4c46, 1), { code: 'EINVAL' }, 'a path rule never matches a step without a path');
  t.equal(sim.faults.size, 3);
  sim.faults.clear();
  await sim.stat(M);
  const server = await sim.vsockListen({ port: 4000, multikernel: false });
  const client = await sim.vsockConnect({ cid: 1, port: 4000, multikernel: false });
  const accepted = await server.accept();
  t.equal(accepted.remotePort, client.localPort, 'vsock is served by the channels');
  client.destroy();
  accepted.destroy();
  await server.close();
});
