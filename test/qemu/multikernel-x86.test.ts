// A real multikernel kernel, when the user supplies one (the project never carries or builds
// kernel sources): boots MULTIKERNEL_KERNEL with enough CPUs and memory and runs the contract
// suite (test/contract/real.test.ts, MULTIKERNEL_CONTRACT=real) inside, against LinuxSystem.
//
//   MULTIKERNEL_KERNEL=<bzImage>           the multikernel host kernel (9p + virtio built in, or
//   MULTIKERNEL_KERNEL_MODULES=<a.ko:b.ko> the modules to load for 9p, in order)
//   MULTIKERNEL_SPAWN_KERNEL=<vmlinux>     the image the suite loads into instances
//   MULTIKERNEL_SPAWN_CMDLINE, MULTIKERNEL_APPEND, MULTIKERNEL_CPUS (6), MULTIKERNEL_MEMORY (4G)
import { existsSync } from 'node:fs';
import t from 'tap';
import { boot, fetchKernel, missingPrerequisite, ROOT } from './harness';

const kernel = process.env['MULTIKERNEL_KERNEL'];
const spawnKernel = process.env['MULTIKERNEL_SPAWN_KERNEL'];

t.test('contract suite inside a multikernel kernel, x86_64', async (t) => {
  if (kernel === undefined || kernel === '') {
    t.plan(0, 'skipped: set MULTIKERNEL_KERNEL (a multikernel host kernel image) and MULTIKERNEL_SPAWN_KERNEL (the instance image) to run the contract suite inside QEMU; see docs/qemu.md');
    return;
  }
  if (spawnKernel === undefined || spawnKernel === '') {
    t.fail('MULTIKERNEL_KERNEL is set but MULTIKERNEL_SPAWN_KERNEL is not: the contract suite needs an image to load into instances');
    return;
  }
  for (const f of [kernel, spawnKernel]) if (!existsSync(f)) t.fail(`${f} does not exist`);
  const missing = await missingPrerequisite('x86_64');
  if (missing !== undefined) {
    t.fail(`MULTIKERNEL_KERNEL is set but the lane cannot run: ${missing}`);
    return;
  }
  const stock = await fetchKernel('amd64'); // for busybox only
  const modules = (process.env['MULTIKERNEL_KERNEL_MODULES'] ?? '').split(':').filter((m) => m !== '');
  const b = await boot('multikernel-x86', {
    arch: 'x86_64',
    kernel,
    busybox: stock.busybox,
    modules,
    cpus: Number(process.env['MULTIKERNEL_CPUS'] ?? '6'),
    memory: process.env['MULTIKERNEL_MEMORY'] ?? '4G',
    ...(process.env['MULTIKERNEL_APPEND'] ? { append: process.env['MULTIKERNEL_APPEND'] } : {}),
    share: ROOT,
    files: [{ source: spawnKernel, target: '/boot/spawn-kernel' }],
    env: {
      MULTIKERNEL_CONTRACT: 'real',
      MULTIKERNEL_SPAWN_KERNEL: '/boot/spawn-kernel',
      ...(process.env['MULTIKERNEL_SPAWN_CMDLINE'] ? { MULTIKERNEL_SPAWN_CMDLINE: process.env['MULTIKERNEL_SPAWN_CMDLINE'] } : {}),
      // the share is read-only: run the tap test file directly with tap's TypeScript loader
      // instead of the tap runner (which writes .tap/ into the project)
      TS_NODE_TRANSPILE_ONLY: '1',
    },
    command: ['node', '--import=file:///share/node_modules/@tapjs/typescript/dist/esm/import.mjs', 'test/contract/real.test.ts'],
    timeoutMs: 900_000,
  });
  const notOk = b.console.split('\n').filter((l) => /^\s*not ok \d+/.test(l));
  t.comment(`guest run ${(b.result.durationMs / 1000).toFixed(1)} s, console in ${b.log}`);
  t.same(notOk, [], 'no failing contract assertions');
  t.match(b.console, /^\s*ok \d+/m, 'the contract suite ran');
  t.equal(b.result.exitCode, 0, 'test/contract/real.test.ts exits 0 inside the multikernel guest');
});
