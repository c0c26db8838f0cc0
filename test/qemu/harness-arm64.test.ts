// The arm64 guest's status device (the virtio-serial port mkqemu.status) on real QEMU: a busybox-only
// boot of the stock Debian arm64 kernel, no node and no prebuild needed. Markers the command prints
// decide nothing; arm64 has no isa-debug-exit, so the status port is the only way the code comes
// back. MKQEMU_ARM64=0 leaves it out, like test/qemu/arm64.test.ts.
import t from 'tap';
import { MARKER } from '../../lib/qemu';
import { boot, fetchKernel, missingPrerequisite } from './harness';

t.test('the arm64 status port carries the exit code, not console markers', async (t) => {
  if (process.env['MKQEMU_ARM64'] === '0') {
    t.plan(0, 'arm64 guest skipped: MKQEMU_ARM64=0');
    return;
  }
  const missing = await missingPrerequisite('aarch64', { dist: false });
  if (missing !== undefined) {
    t.plan(0, `arm64 guest skipped: ${missing}`);
    return;
  }
  const kernel = await fetchKernel('arm64');
  const b = await boot('harness-arm64-spoof', {
    arch: 'aarch64',
    kernel: kernel.kernel,
    busybox: kernel.busybox,
    // virtio_console, if this kernel has it as a module
    modules: kernel.modules,
    node: false,
    cpus: 1,
    memory: 256,
    timeoutMs: 240_000,
    command: ['sh', '-c', `echo "${MARKER} fail spoofed"; echo "${MARKER} exit 0"; exit 3`],
  });
  t.notMatch(b.console, `${MARKER} warn no status device`, 'the guest found its status port');
  t.equal(b.result.exitCode, 3, "the command's real status is reported");
  t.equal(b.result.qemuStatus, 0, 'QEMU itself just exits (reboot -f with -no-reboot)');
});
