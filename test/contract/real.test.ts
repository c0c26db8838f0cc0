import t from 'tap';
import type { System } from '../../lib/system/system';
import { runContract } from './suite';

if (process.env.MULTIKERNEL_CONTRACT !== 'real') {
  t.plan(0, 'set MULTIKERNEL_CONTRACT=real (as root, in a multikernel guest, with MULTIKERNEL_SPAWN_KERNEL=<vmlinux> and optionally MULTIKERNEL_SPAWN_INITRD=<initramfs with kerf-init>) to run the contract against the running kernel');
} else {
  const image = process.env.MULTIKERNEL_SPAWN_KERNEL;
  if (!image) {
    t.fail('MULTIKERNEL_SPAWN_KERNEL must name the spawn kernel image (vmlinux on x86_64, Image on arm64)');
  } else {
    void runContract(
      t,
      async (): Promise<System> => {
        const { LinuxSystem } = await import('../../lib/system/linux');
        return new LinuxSystem();
      },
      {
        kernelImage: { path: image },
        // an initramfs with kerf-init as /init enables the exec checks
        ...(process.env.MULTIKERNEL_SPAWN_INITRD ? { initrd: { path: process.env.MULTIKERNEL_SPAWN_INITRD } } : {}),
        ...(process.env.MULTIKERNEL_SPAWN_CMDLINE ? { cmdline: process.env.MULTIKERNEL_SPAWN_CMDLINE } : {}),
        ...(process.env.MULTIKERNEL_BOOT_TIMEOUT_MS ? { bootTimeoutMs: Number(process.env.MULTIKERNEL_BOOT_TIMEOUT_MS) } : {}),
      },
    );
  }
}
