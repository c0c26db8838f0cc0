// The stock Debian 6.12 kernel (no multikernel support) under QEMU/TCG on x86_64: one boot runs
// test/qemu/guest/stock.mjs (kexec, reboot, kernfs, mount, EPERM, CPUs, flock, sd_notify) and
// test/qemu/guest/vsock.mjs (AF_VSOCK loopback streams) and test/qemu/guest/messaging.mjs (the
// library's channel and exec code on those streams) against the compiled library over 9p.
import t from 'tap';
import { addonFor, assertChecks, boot, buildHelper, COMMON_STOCK_CHECKS, fetchKernel, KEXEC_CHECKS, MESSAGING_CHECKS, missingPrerequisite, ROOT, STOCK_GUEST_COMMAND, VSOCK_CHECKS } from './harness';

const CPUS = 4;

// No arm64 capsh in the guest: the EPERM check runs on x86 only.
const STOCK_CHECKS = [...COMMON_STOCK_CHECKS, ...KEXEC_CHECKS, 'eperm-without-cap-sys-boot', 'stock-script-complete'];

t.test('stock Debian kernel, x86_64', async (t) => {
  const missing = await missingPrerequisite('x86_64');
  if (missing !== undefined) {
    t.plan(0, `QEMU lane skipped: ${missing}`);
    return;
  }
  if (addonFor('x86_64') === undefined) {
    t.fail('the native addon is not built (build/Release/multikernel.node): run `npm run build:native`');
    return;
  }
  const [kernel, helper] = await Promise.all([fetchKernel('amd64'), buildHelper()]);
  t.comment(`kernel ${kernel.info['KERNEL_PACKAGE']}`);
  const b = await boot('stock-x86', {
    arch: 'x86_64',
    kernel: kernel.kernel,
    busybox: kernel.busybox,
    modules: kernel.modules,
    cpus: CPUS,
    memory: '2G',
    share: ROOT,
    binaries: ['/usr/sbin/capsh'],
    files: [
      { source: kernel.kernel, target: '/boot/vmlinuz' },
      { source: helper, target: '/usr/local/bin/mkhelper', mode: 0o755 },
    ],
    env: { MKQEMU_ROOT: '/share', MKQEMU_CPUS: String(CPUS), MKQEMU_KERNEL_IMAGE: '/boot/vmlinuz', MKQEMU_ONLY: [...STOCK_CHECKS, ...VSOCK_CHECKS, ...MESSAGING_CHECKS].join(',') },
    command: STOCK_GUEST_COMMAND,
    timeoutMs: 420_000,
  });
  t.comment(`boot + tests: ${(b.result.durationMs / 1000).toFixed(1)} s; phases ${b.result.phases.map((p) => `${p.phase}@${(p.atMs / 1000).toFixed(1)}s`).join(' ')}`);
  assertChecks(t, b, [...STOCK_CHECKS, ...VSOCK_CHECKS, ...MESSAGING_CHECKS]);
  t.equal(b.result.exitCode, 0, 'the three guest scripts exit 0');
});
