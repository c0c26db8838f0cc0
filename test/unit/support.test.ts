import t from 'tap';
import { MultikernelError, systemError } from '../../lib/errors';
import { explainNoSupport, isStockKernelAnswer, probeMultikernelSupport } from '../../lib/support';
import type { FileStat, System } from '../../lib/system/system';

const STOCK_FILESYSTEMS = 'nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n';
const MK_FILESYSTEMS = `${STOCK_FILESYSTEMS}nodev\tmultikernel\n`;

/** A System that only knows a few files and directories; every other method is unused here. */
function fakeSystem(files: Record<string, string | null>, dirs: string[] = []): System & { reads: string[] } {
  const reads: string[] = [];
  const unused = async (): Promise<never> => {
    throw new Error('not used by the support probe');
  };
  return {
    kind: 'simulated',
    reads,
    async readFile(path: string) {
      reads.push(path);
      const content = files[path];
      if (content === undefined) throw systemError('ENOENT', 'open', path);
      if (content === null) throw systemError('EACCES', 'open', path);
      return Buffer.from(content);
    },
    async stat(path: string): Promise<FileStat> {
      reads.push(path);
      if (dirs.includes(path)) return { type: 'directory', mode: 0o755, size: 0, mtimeMs: 0 };
      if (files[path] !== undefined) return { type: 'file', mode: 0o444, size: 4096, mtimeMs: 0 };
      throw systemError('ENOENT', 'stat', path);
    },
    writeFile: unused,
    readdir: unused,
    mkdir: unused,
    rmdir: unused,
    createExclusive: unused,
    unlink: unused,
    openDevice: unused,
    openKernelLog: unused,
    openImage: unused,
    openImageBytes: unused,
    closeImage: unused,
    kexecFileLoad: unused,
    reboot: unused,
    mountMultikernel: unused,
    umountMultikernel: unused,
    lock: unused,
    vsockConnect: unused,
    vsockListen: unused,
    notify: unused,
  };
}

const stock = (): ReturnType<typeof fakeSystem> => fakeSystem({ '/proc/filesystems': STOCK_FILESYSTEMS });
const multikernel = (mounted: boolean): ReturnType<typeof fakeSystem> =>
  fakeSystem(
    {
      '/proc/filesystems': MK_FILESYSTEMS,
      '/proc/kimage': 'MK_ID  Type        Start Address   Segments  Mode  Cmdline\n',
      ...(mounted ? { '/sys/fs/multikernel/device_tree': '' } : {}),
    },
    ['/sys/fs/multikernel'],
  );

t.test('probe of a stock kernel finds nothing and says what it looked at', async (t) => {
  const report = await probeMultikernelSupport(stock());
  t.same(report, {
    supported: false,
    filesystemRegistered: false,
    mountPoint: false,
    mounted: false,
    kimage: false,
    findings: ['/proc/filesystems has no "multikernel"', '/sys/fs/multikernel is missing', '/proc/kimage is missing'],
  });
});

t.test('probe of a multikernel kernel, mounted or not', async (t) => {
  const mounted = await probeMultikernelSupport(multikernel(true));
  t.equal(mounted.supported, true);
  t.equal(mounted.filesystemRegistered, true);
  t.equal(mounted.mounted, true);
  t.equal(mounted.kimage, true);
  t.same(mounted.findings, [
    '/proc/filesystems lists "multikernel"',
    '/sys/fs/multikernel exists and is mounted',
    '/proc/kimage is present',
  ]);
  const unmounted = await probeMultikernelSupport(multikernel(false));
  t.equal(unmounted.supported, true);
  t.equal(unmounted.mountPoint, true);
  t.equal(unmounted.mounted, false);
  t.equal(unmounted.findings[1], '/sys/fs/multikernel exists but is not mounted');
});

t.test('any single surface counts as support', async (t) => {
  const onlyFs = await probeMultikernelSupport(fakeSystem({ '/proc/filesystems': MK_FILESYSTEMS }));
  t.equal(onlyFs.supported, true);
  const onlyKimage = await probeMultikernelSupport(fakeSystem({ '/proc/filesystems': STOCK_FILESYSTEMS, '/proc/kimage': '' }));
  t.equal(onlyKimage.supported, true);
  const onlyDir = await probeMultikernelSupport(fakeSystem({ '/proc/filesystems': STOCK_FILESYSTEMS }, ['/sys/fs/multikernel']));
  t.equal(onlyDir.supported, true);
});

t.test('a filesystem named like multikernel is not multikernel', async (t) => {
  const report = await probeMultikernelSupport(fakeSystem({ '/proc/filesystems': 'nodev\tmultikernelfs\nnodev\tnotmultikernel\n' }));
  t.equal(report.filesystemRegistered, false);
});

t.test('an unreadable /proc/filesystems is reported, not thrown', async (t) => {
  const missing = await probeMultikernelSupport(fakeSystem({}));
  t.equal(missing.filesystemRegistered, null);
  t.equal(missing.supported, false);
  t.equal(missing.findings[0], '/proc/filesystems could not be read (ENOENT)');
  const odd = fakeSystem({});
  odd.readFile = async () => {
    throw new Error('boom');
  };
  const report = await probeMultikernelSupport(odd);
  t.equal(report.findings[0], '/proc/filesystems could not be read (Error: boom)');
});

t.test('which errors are a stock kernel answering a multikernel request', async (t) => {
  t.ok(isStockKernelAnswer(systemError('EINVAL', 'kexec_file_load')));
  t.ok(isStockKernelAnswer(systemError('EINVAL', 'reboot')));
  t.ok(isStockKernelAnswer(systemError('ENODEV', 'mount', '/sys/fs/multikernel')));
  t.ok(isStockKernelAnswer(systemError('ENOENT', 'mount', '/sys/fs/multikernel')));
  t.ok(isStockKernelAnswer(systemError('ENOENT', 'umount', '/sys/fs/multikernel')));
  t.ok(isStockKernelAnswer(systemError('ENOENT', 'open', '/sys/fs/multikernel/overlays/new')));
  t.ok(isStockKernelAnswer(systemError('ENOENT', 'scandir', '/sys/fs/multikernel')));
  t.ok(isStockKernelAnswer(systemError('ENOENT', 'open', '/proc/kimage')));
  t.ok(isStockKernelAnswer(systemError('ENOPROTOOPT', 'setsockopt')));
  t.ok(isStockKernelAnswer(systemError('ENOSYS', 'kexec_file_load')), 'no CONFIG_KEXEC_FILE at all');

  t.notOk(isStockKernelAnswer(systemError('EINVAL', 'write', '/sys/fs/multikernel/device_tree')), 'a kernfs EINVAL is real');
  t.notOk(isStockKernelAnswer(systemError('ENOENT', 'open', '/boot/vmlinux')), 'a missing image is just missing');
  t.notOk(isStockKernelAnswer(systemError('ENOENT', 'open', '/sys/fs/multikernelx')));
  t.notOk(isStockKernelAnswer(systemError('ENOENT', 'open')));
  t.notOk(isStockKernelAnswer(systemError('EPERM', 'kexec_file_load')), 'EPERM is a permission problem');
  t.notOk(isStockKernelAnswer(systemError('ENODEV', 'open', '/dev/mktty')));
  t.notOk(isStockKernelAnswer(systemError('ENOPROTOOPT', 'getsockopt')));
  t.notOk(isStockKernelAnswer(systemError('ENOSYS', 'reboot')));
  t.notOk(isStockKernelAnswer(new Error('EINVAL')));
  t.notOk(isStockKernelAnswer(undefined));
});

t.test('explainNoSupport on a stock kernel gives one typed error', async (t) => {
  const system = stock();
  const original = systemError('EINVAL', 'kexec_file_load');
  const err = await explainNoSupport(system, 'kexec_file_load with KEXEC_MULTIKERNEL', async () => {
    throw original;
  }).catch((e: unknown) => e);
  t.type(err, MultikernelError);
  const mkErr = err as MultikernelError;
  t.equal(mkErr.code, 'ERR_MK_NO_SUPPORT');
  t.match(
    mkErr.message,
    'this kernel has no multikernel support: kexec_file_load with KEXEC_MULTIKERNEL returned EINVAL; ' +
      'probed: /proc/filesystems has no "multikernel", /sys/fs/multikernel is missing, /proc/kimage is missing',
  );
  t.match(mkErr.message, /CONFIG_MULTIKERNEL/);
  t.equal(mkErr.cause, original);
  t.equal(mkErr.details.operation, 'kexec_file_load with KEXEC_MULTIKERNEL');
  t.match(mkErr.details.probes, { supported: false, filesystemRegistered: false, mountPoint: false });
  t.ok(system.reads.includes('/proc/filesystems'), 'it probed');
});

t.test('explainNoSupport for mount and missing kernfs paths on a stock kernel', async (t) => {
  await t.rejects(
    explainNoSupport(stock(), 'mount of the multikernel filesystem', async () => {
      throw systemError('ENODEV', 'mount', '/sys/fs/multikernel');
    }),
    { code: 'ERR_MK_NO_SUPPORT', message: /mount of the multikernel filesystem returned ENODEV/ },
  );
  await t.rejects(
    explainNoSupport(stock(), 'reading instances', async () => {
      throw systemError('ENOENT', 'scandir', '/sys/fs/multikernel/instances');
    }),
    { code: 'ERR_MK_NO_SUPPORT', message: /reading instances returned ENOENT/ },
  );
});

t.test('a multikernel kernel keeps its own errno', async (t) => {
  const original = systemError('EINVAL', 'kexec_file_load');
  const system = multikernel(true);
  const err = await explainNoSupport(system, 'kexec_file_load with KEXEC_MULTIKERNEL', async () => {
    throw original;
  }).catch((e: unknown) => e);
  t.equal(err, original, 'the very same error object');
  t.ok(system.reads.length > 0, 'it did probe');
});

t.test('errors that say nothing about support are rethrown without probing', async (t) => {
  const system = stock();
  const original = systemError('ENOENT', 'open', '/boot/vmlinux');
  const err = await explainNoSupport(system, 'opening the kernel image', async () => {
    throw original;
  }).catch((e: unknown) => e);
  t.equal(err, original);
  t.same(system.reads, [], 'no probe');
  const plain = new TypeError('bad argument');
  t.equal(await explainNoSupport(system, 'x', async () => Promise.reject(plain)).catch((e: unknown) => e), plain);
});

t.test('success passes the value through', async (t) => {
  const system = stock();
  t.equal(await explainNoSupport(system, 'x', async () => 42), 42);
  t.same(system.reads, []);
});
