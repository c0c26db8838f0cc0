// Run under `capsh --drop=cap_sys_boot`: every kexec/reboot request must fail with EPERM, which
// the kernel checks before it looks at the (multikernel) flags. Prints one EPERM-RESULT line.
import { lib } from './lib.mjs';

const b = lib('binding').loadBinding();
const { openSync } = await import('node:fs');
const codes = {};
const fd = openSync(process.env.MKQEMU_KERNEL_IMAGE ?? '/boot/vmlinuz', 'r');
for (const [what, fn] of [
  ['kexecLoad', () => b.kexecLoad({ kernelFd: fd, initrdFd: -1, cmdline: 'x', id: 1, debug: false })],
  ['kexecUnload', () => b.kexecUnload(1)],
  ['rebootStart', async () => b.rebootStart(1)],
  ['rebootHalt', () => b.rebootHalt(1)],
  ['rebootHaltForce', async () => b.rebootHaltForce(1)],
]) {
  try {
    await fn();
    codes[what] = 'succeeded';
  } catch (e) {
    codes[what] = e.code;
  }
}
process.stdout.write(`EPERM-RESULT ${JSON.stringify(codes)}\n`);
