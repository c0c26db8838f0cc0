// The no-support probe and explanation against the simulated kernel: a stock kernel (no
// multikernel code at all) versus a multikernel kernel whose own EINVAL/ENOENT must stay as is.
import t from 'tap';
import { MultikernelError, isSystemError } from '../../lib/errors';
import { explainNoSupport, probeMultikernelSupport } from '../../lib/support';
import { SimulatedSystem } from '../../lib/system/simulated/index';
import { KEXEC_FILE_NO_INITRAMFS, KEXEC_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL, kexecMkId } from '../../lib/uapi';

const LOAD_ID_1 = KEXEC_MULTIKERNEL | kexecMkId(1) | KEXEC_FILE_NO_INITRAMFS;

async function noSupport(t: tap.Test, promise: Promise<unknown>, operation: string, code: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, MultikernelError, operation);
  const mkErr = err as MultikernelError;
  t.equal(mkErr.code, 'ERR_MK_NO_SUPPORT');
  t.match(mkErr.message, `this kernel has no multikernel support: ${operation} returned ${code}; probed: `);
  t.match(mkErr.message, '/proc/filesystems has no "multikernel", /sys/fs/multikernel is missing, /proc/kimage is missing');
  t.ok(isSystemError(mkErr.cause, code), 'the kernel error is the cause');
  t.same(mkErr.details.operation, operation);
}

t.test('a simulated stock kernel: the probe finds nothing', async (t) => {
  const report = await probeMultikernelSupport(new SimulatedSystem({ stockKernel: true }));
  t.match(report, { supported: false, filesystemRegistered: false, mountPoint: false, mounted: false, kimage: false });
});

t.test('a simulated multikernel kernel: found, then mounted', async (t) => {
  const system = new SimulatedSystem();
  const before = await probeMultikernelSupport(system);
  t.match(before, { supported: true, filesystemRegistered: true, mountPoint: true, mounted: false, kimage: true });
  await system.mountMultikernel();
  const after = await probeMultikernelSupport(system);
  t.match(after, { supported: true, mounted: true });
  t.equal(after.findings[1], '/sys/fs/multikernel exists and is mounted');
});

t.test('every multikernel request on a stock kernel becomes ERR_MK_NO_SUPPORT', async (t) => {
  const system = new SimulatedSystem({ stockKernel: true });
  const kernelFd = await system.openImageBytes('vmlinux', new Uint8Array(64));
  await noSupport(
    t,
    explainNoSupport(system, 'kexec_file_load with KEXEC_MULTIKERNEL', () =>
      system.kexecFileLoad({ kernelFd, initrdFd: -1, cmdline: 'console=mktty0', flags: LOAD_ID_1 }),
    ),
    'kexec_file_load with KEXEC_MULTIKERNEL',
    'EINVAL',
  );
  await noSupport(
    t,
    explainNoSupport(system, 'reboot with LINUX_REBOOT_CMD_MULTIKERNEL', () => system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 1)),
    'reboot with LINUX_REBOOT_CMD_MULTIKERNEL',
    'EINVAL',
  );
  await noSupport(t, explainNoSupport(system, 'mount of the multikernel filesystem', () => system.mountMultikernel()), 'mount of the multikernel filesystem', 'ENODEV');
  await noSupport(
    t,
    explainNoSupport(system, 'listing instances', () => system.readdir('/sys/fs/multikernel/instances')),
    'listing instances',
    'ENOENT',
  );
  await system.closeImage(kernelFd);
});

t.test("a multikernel kernel's own errors pass through untouched", async (t) => {
  const system = new SimulatedSystem();
  const kernelFd = await system.openImageBytes('vmlinux', new Uint8Array(64));
  // No instance 1 exists: the multikernel kernel says ENOENT for the load and EINVAL for the start.
  const load = await explainNoSupport(system, 'kexec_file_load with KEXEC_MULTIKERNEL', () =>
    system.kexecFileLoad({ kernelFd, initrdFd: -1, cmdline: '', flags: LOAD_ID_1 }),
  ).catch((e: unknown) => e);
  t.ok(isSystemError(load, 'ENOENT'), 'ENOENT stays ENOENT');
  t.notOk(load instanceof MultikernelError);
  const start = await explainNoSupport(system, 'reboot with LINUX_REBOOT_CMD_MULTIKERNEL', () => system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, 1)).catch(
    (e: unknown) => e,
  );
  t.ok(isSystemError(start, 'EINVAL'), 'EINVAL stays EINVAL');
  t.match(start, { syscall: 'reboot' });
  const unmounted = await explainNoSupport(system, 'listing instances', () => system.readdir('/sys/fs/multikernel/instances')).catch(
    (e: unknown) => e,
  );
  t.ok(isSystemError(unmounted, 'ENOENT'), 'not mounted yet: a plain ENOENT, the kernel does support it');
  await system.closeImage(kernelFd);
});
