import t from 'tap';
import type { System } from '../../lib/system/system';
import { runContract } from './suite';

if (process.env.MULTIKERNEL_CONTRACT !== 'real') {
  t.plan(0, 'set MULTIKERNEL_CONTRACT=real (as root, in a multikernel guest, with MULTIKERNEL_SPAWN_KERNEL=<vmlinux>) to run the contract against the running kernel');
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
        ...(process.env.MULTIKERNEL_SPAWN_CMDLINE ? { cmdline: process.env.MULTIKERNEL_SPAWN_CMDLINE } : {}),
      },
    );
  }
}
