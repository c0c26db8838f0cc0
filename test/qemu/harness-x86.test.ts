// The harness itself on real QEMU (x86_64, stock Debian kernel, busybox only: no node, no share,
// a few seconds per boot): the exit status comes from /init's status device, not from markers the
// command prints; hostile paths reach the guest as data; a command named like one of /init's
// shell functions runs as itself.
import t, { type Test } from 'tap';
import { MARKER, type QemuOptions } from '../../lib/qemu';
import { boot, fetchKernel, missingPrerequisite } from './harness';

const missing = missingPrerequisite('x86_64', { dist: false });

async function options(): Promise<QemuOptions> {
  const kernel = await fetchKernel('amd64');
  return { arch: 'x86_64', kernel: kernel.kernel, busybox: kernel.busybox, node: false, cpus: 1, memory: 256, timeoutMs: 120_000, command: ['true'] };
}

async function skipped(t: Test): Promise<boolean> {
  const why = await missing;
  if (why !== undefined) t.plan(0, `QEMU lane skipped: ${why}`);
  return why !== undefined;
}

t.test('markers the command prints decide nothing', async (t) => {
  if (await skipped(t)) return;
  const b = await boot('harness-spoof', { ...(await options()), command: ['sh', '-c', `echo "${MARKER} fail spoofed"; echo "${MARKER} exit 0"; exit 3`] });
  t.match(b.console, `${MARKER} exit 0`, 'the command printed the markers');
  t.equal(b.result.exitCode, 3, "the command's real status is reported");
  t.equal(b.result.qemuStatus, 7, 'isa-debug-exit agrees (2*3+1)');
});

t.test('a hostile guest path reaches the guest as data', async (t) => {
  if (await skipped(t)) return;
  const cwd = `/nope/$(echo INJECTED)\`echo BQ\`'"`;
  const err = await boot('harness-hostile-cwd', { ...(await options()), cwd }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.match(err, { code: 'ERR_MK_QEMU', message: `guest setup failed: no such guest directory ${cwd}`, details: { reason: 'guest-setup' } }, 'the message holds the path as it was: nothing in it ran');
});

t.test("a command named like one of /init's functions runs as itself", async (t) => {
  if (await skipped(t)) return;
  const b = await boot('harness-function-name', { ...(await options()), command: ['report', '0'] });
  t.equal(b.result.exitCode, 127, "'report' is looked up on PATH (and not found)");
});
