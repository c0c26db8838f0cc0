// runQemu against a fake qemu-system binary (a node script written at test time): exit codes
// from the console marker and from the QEMU status, failures, timeout, abort, and cleanup of the
// scratch directory on every path.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { MARKER, runQemu, type QemuOptions } from '../../lib/qemu';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'qemu-run-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const fake = path.join(tmp, 'fake-qemu');
writeFileSync(
  fake,
  `#!${process.execPath}
const fs = require('fs');
const argv = process.argv.slice(2);
const append = argv[argv.indexOf('-append') + 1];
const initrd = argv[argv.indexOf('-initrd') + 1];
if (process.env.FAKE_QEMU_RECORD) fs.writeFileSync(process.env.FAKE_QEMU_RECORD, JSON.stringify({ argv, initrdSize: fs.statSync(initrd).size }));
const mode = /fake=(\\S+)/.exec(append)[1];
const M = ${JSON.stringify(MARKER)};
const out = (s) => process.stdout.write(s);
// what /init writes to the status device lands in the -chardev file, as with QEMU
const chardev = argv[argv.indexOf('-chardev') + 1] ?? '';
const statusFile = /(?:^|,)path=(.*)$/.exec(chardev)?.[1].replaceAll(',,', ',');
const status = (s) => statusFile && fs.writeFileSync(statusFile, s);
switch (mode) {
  case 'ok': out('SeaBIOS\\r\\nBooting from ROM...\\r\\n' + M + ' init\\n' + M + ' run\\nhello\\n'); setTimeout(() => { status('exit 3\\r\\n'); out(M + ' exit 3\\n'); process.exit(7); }, 50); break;
  case 'status': out(M + ' init\\n' + M + ' run\\n'); process.exit(11);
  case 'status-zero': out(M + ' init\\n' + M + ' run\\n'); process.exit(1);
  case 'stderr': process.stderr.write('qemu: could not load kernel\\n'); process.exit(1);
  case 'silent': out('Kernel panic - not syncing\\n'); process.exit(0);
  case 'fail': out(M + ' init\\n' + M + ' fail could not mount the 9p share\\n' + M + ' exit 255\\n'); status('fail could not mount the 9p share\\r\\nexit 255\\r\\n'); process.exit(255);
  // the command prints the success marker, then fails
  case 'spoof-pass': out(M + ' init\\n' + M + ' run\\n' + M + ' exit 0\\n'); status('exit 1\\r\\n'); process.exit(3);
  // the command prints a setup-failure marker (and an exit marker), then succeeds
  case 'spoof-fail': out(M + ' init\\n' + M + ' run\\n' + M + ' fail could not mount the 9p share\\n' + M + ' exit 255\\n'); status('exit 0\\r\\n'); process.exit(1);
  case 'hang': out('Booting from ROM...\\n'); setInterval(() => {}, 1000); break;
}
`,
);
chmodSync(fake, 0o755);
const record = path.join(tmp, 'record.json');
process.env['FAKE_QEMU_RECORD'] = record;

const busybox = path.join(tmp, 'busybox');
writeFileSync(busybox, 'BB');
const scratchParent = path.join(tmp, 'scratch');
mkdirSync(scratchParent);

function options(mode: string, extra: Partial<QemuOptions> = {}): QemuOptions {
  return { kernel: '/k', busybox, command: ['true'], qemuBinary: fake, append: `fake=${mode}`, tmpDir: scratchParent, node: false, ...extra };
}

const scratchLeft = (): string[] => readdirSync(scratchParent);


t.test('exit code from the console marker; phases; output; arguments', async (t) => {
  const phases: string[] = [];
  let console = '';
  const r = await runQemu(
    options('ok', {
      cpus: 3,
      memory: '2G',
      share: tmp,
      env: { A: '1' },
      onOutput: (s) => (console += s),
      onPhase: (p) => phases.push(p),
    }),
  );
  t.equal(r.exitCode, 3);
  t.equal(r.qemuStatus, 7);
  t.same(phases, ['starting', 'kernel', 'init', 'command', 'done']);
  t.same(r.phases.map((p) => p.phase), phases);
  t.equal(r.output, console);
  t.match(r.output, 'hello');
  t.ok(r.durationMs >= 0);
  const rec = JSON.parse(readFileSync(record, 'utf8')) as { argv: string[]; initrdSize: number };
  t.same(rec.argv, r.qemuArgs);
  t.ok(rec.initrdSize > 0, 'the initramfs existed while QEMU ran');
  t.match(r.qemuArgs.join(' '), /-smp 3 -m 2048M/);
  t.match(r.qemuArgs.join(' '), `path=${tmp},mount_tag=share`);
  t.match(r.qemuArgs[r.qemuArgs.indexOf('-append') + 1]!, /^console=ttyS0 .*fake=ok$/);
});

t.test('the status device decides, not markers the command prints on the console', async (t) => {
  const printedPass = await runQemu(options('spoof-pass'));
  t.equal(printedPass.exitCode, 1, 'a command that prints the exit-0 marker and then fails reads as a failure');
  t.match(printedPass.output, `${MARKER} exit 0`);
  const printedFail = await runQemu(options('spoof-fail'));
  t.equal(printedFail.exitCode, 0, 'a command that prints a fail marker and then succeeds reads as a success');
  t.equal(printedFail.phases.at(-1)!.phase, 'done');
});

t.test('x86 without a status line: the isa-debug-exit status, never as a success', async (t) => {
  const r = await runQemu(options('status', { arch: 'x86_64', cwd: '/tmp' }));
  t.equal(r.exitCode, 5);
  await t.rejects(runQemu(options('status-zero', { arch: 'x86_64' })), { code: 'ERR_MK_QEMU', details: { reason: 'no-exit-code', qemuStatus: 1, phase: 'command' } }, 'status 1 is also what QEMU exits with on its own errors');
  await t.rejects(runQemu(options('status', { arch: 'aarch64', node: false })), { code: 'ERR_MK_QEMU', details: { reason: 'no-exit-code', qemuStatus: 11 } }, 'arm64 has no isa-debug-exit');
});

t.test('default node: the host node for the host architecture, none for another', async (t) => {
  const withNode = await runQemu(options('ok', { node: undefined, arch: 'x86_64' }));
  const without = await runQemu(options('ok', { node: undefined, arch: 'aarch64' }));
  t.equal(withNode.exitCode, 3);
  t.equal(without.exitCode, 3);
  t.match(without.qemuArgs.join(' '), /-machine virt,gic-version=3 .*console=ttyAMA0/);
});

t.test('no exit code: QEMU stderr or the console tail in the message', async (t) => {
  await t.rejects(runQemu(options('stderr')), { code: 'ERR_MK_QEMU', message: /QEMU said: qemu: could not load kernel/, details: { reason: 'no-exit-code', qemuStatus: 1 } });
  await t.rejects(runQemu(options('silent')), { code: 'ERR_MK_QEMU', message: /last console lines:\nKernel panic/, details: { reason: 'no-exit-code', phase: 'starting' } });
});

t.test('guest setup failure', async (t) => {
  await t.rejects(runQemu(options('fail')), { code: 'ERR_MK_QEMU', message: 'guest setup failed: could not mount the 9p share', details: { reason: 'guest-setup' } });
});

t.test('timeout kills QEMU', async (t) => {
  const t0 = Date.now();
  // the phase depends on how fast the fake starts on a loaded machine
  await t.rejects(runQemu(options('hang', { timeoutMs: 4000 })), { code: 'ERR_MK_QEMU', message: /^QEMU timed out after 4000 ms during "(starting|kernel)"; it was killed$/, details: { reason: 'timeout', signal: 'SIGKILL' } });
  t.ok(Date.now() - t0 < 20_000);
});

t.test('abort kills QEMU; an aborted signal stops before anything starts', async (t) => {
  const ac = new AbortController();
  const p = runQemu(options('hang', { signal: ac.signal, onPhase: (phase) => phase === 'kernel' && ac.abort(new Error('stop')) }));
  await t.rejects(p, { code: 'ERR_MK_QEMU', details: { reason: 'aborted' }, cause: { message: 'stop' } });
  await t.rejects(runQemu(options('ok', { signal: AbortSignal.abort(new Error('early')) })), { message: 'early' });
});

t.test('spawn failures', async (t) => {
  await t.rejects(runQemu(options('ok', { qemuBinary: path.join(tmp, 'qemu-system-x86_64') })), { code: 'ERR_MK_QEMU', message: /is not installed \(Debian: apt-get install qemu-system-x86\)/, details: { reason: 'spawn' } });
  await t.rejects(runQemu(options('ok', { arch: 'aarch64', qemuBinary: path.join(tmp, 'qemu-system-aarch64') })), { message: /apt-get install qemu-system-arm/ });
  await t.rejects(runQemu(options('ok', { qemuBinary: busybox })), { code: 'ERR_MK_QEMU', message: /could not start .*busybox: spawn .* EACCES/, details: { reason: 'spawn' } });
});

t.test('invalid options reject before anything is created', async (t) => {
  await t.rejects(runQemu(options('ok', { command: [] })), RangeError);
  await t.rejects(runQemu(options('ok', { timeoutMs: 0 })), RangeError);
  await t.rejects(runQemu(options('ok', { shareMount: 'share' })), RangeError);
  await t.rejects(runQemu(options('ok', { cwd: 'x' })), RangeError);
  await t.rejects(runQemu(options('ok', { cwd: '/a\nb' })), { name: 'RangeError', message: /must not contain a newline/ });
  await t.rejects(runQemu(options('ok', { shareMount: '/a\nb' })), { name: 'RangeError', message: /must not contain a newline/ });
  await t.rejects(runQemu(options('ok', { modules: [path.join(tmp, 'x\n.ko')] })), { name: 'RangeError', message: /must not contain a newline/ });
  await t.rejects(runQemu(options('ok', { cpus: 0 })), RangeError);
  await t.rejects(runQemu(options('ok', { memory: 'x' })), RangeError);
  await t.rejects(runQemu(options('ok', { busybox: path.join(tmp, 'absent') })), { code: 'ENOENT' });
  t.notOk(existsSync(path.join(tmp, 'absent')));
});

t.test('defaults: scratch in the OS temp dir, qemu-system-<arch> from PATH', async (t) => {
  const { tmpDir: _ignored, qemuBinary: _fake, ...rest } = options('status');
  const bin = path.join(tmp, 'bin');
  mkdirSync(bin);
  symlinkSync(fake, path.join(bin, 'qemu-system-x86_64'));
  const saved = process.env['PATH'];
  process.env['PATH'] = `${bin}:${saved}`;
  const before = readdirSync(os.tmpdir()).filter((n) => n.startsWith('mkqemu-')).length;
  let r;
  try {
    r = await runQemu({ ...rest, arch: 'x86_64', machine: 'pc', timeoutMs: 60_000 });
  } finally {
    process.env['PATH'] = saved;
  }
  t.equal(r.exitCode, 5);
  t.equal(r.qemuArgs[1], 'pc');
  t.ok(readdirSync(os.tmpdir()).filter((n) => n.startsWith('mkqemu-')).length <= before, 'nothing left in the temp dir');
});

t.test('no scratch directory is left behind by any of the runs above', async (t) => {
  t.same(scratchLeft(), []);
});
