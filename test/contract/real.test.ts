import t from 'tap';
import type { System } from '../../lib/system/system';
import { runLifecycleContract } from './lifecycle';
import { runContract, type ContractEnv } from './suite';

if (process.env.MULTIKERNEL_CONTRACT !== 'real') {
  t.plan(0, 'set MULTIKERNEL_CONTRACT=real (as root, in a multikernel guest, with MULTIKERNEL_SPAWN_KERNEL=<vmlinux> and optionally MULTIKERNEL_SPAWN_INITRD=<initramfs with kerf-init>) to run the contract against the running kernel');
} else {
  const image = process.env.MULTIKERNEL_SPAWN_KERNEL;
  if (!image) {
    t.fail('MULTIKERNEL_SPAWN_KERNEL must name the spawn kernel image (vmlinux on x86_64, Image on arm64)');
  } else {
    const env: ContractEnv = {
      kernelImage: { path: image },
      // an initramfs with kerf-init as /init enables the exec checks
      ...(process.env.MULTIKERNEL_SPAWN_INITRD ? { initrd: { path: process.env.MULTIKERNEL_SPAWN_INITRD } } : {}),
      ...(process.env.MULTIKERNEL_SPAWN_CMDLINE ? { cmdline: process.env.MULTIKERNEL_SPAWN_CMDLINE } : {}),
      ...(process.env.MULTIKERNEL_BOOT_TIMEOUT_MS ? { bootTimeoutMs: Number(process.env.MULTIKERNEL_BOOT_TIMEOUT_MS) } : {}),
    };
    const linux = async (): Promise<System> => new (await import('../../lib/system/linux')).LinuxSystem();
    // the System contract leaves the host without a pool and instances; the lifecycle contract then runs on it
    void t.test('the System contract', (t) => runContract(t, linux, env)).then(() => t.test('the lifecycle contract', async (t) => runLifecycleContract(t, await linux(), env)));
  }
}
