// runQemu against a fake qemu-system binary (a node script written at test time): exit codes
// from the console marker and from the QEMU status, failures, timeout, abort, and cleanup of the
// scratch directory on every path.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { signalExitListeners } from '../../lib/qemu/cleanup';
import { once } from 'node:events';
import { MultikernelError } from '../../lib/errors';
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
if (process.env.FAKE_QEMU_PID) fs.writeFileSync(process.env.FAKE_QEMU_PID, String(process.pid));
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
  case 'stderr-flood': process.stderr.write('qemu: ' + 'e'.repeat(200 * 1024) + ' END\\n', () => process.exit(1)); break;
  case 'silent': out('Kernel panic - not syncing\\n'); process.exit(0);
  case 'fail': out(M + ' init\\n' + M + ' fail could not mount the 9p share\\n' + M + ' exit 255\\n'); status('fail could not mount the 9p share\\r\\nexit 255\\r\\n'); process.exit(255);
  // the command prints the success marker, then fails
  case 'spoof-pass': out(M + ' init\\n' + M + ' run\\n' + M + ' exit 0\\n'); status('exit 1\\r\\n'); process.exit(3);
  // the command prints a setup-failure marker (and an exit marker), then succeeds
  case 'spoof-fail': out(M + ' init\\n' + M + ' run\\n' + M + ' fail could not mount the 9p share\\n' + M + ' exit 255\\n'); status('exit 0\\r\\n'); process.exit(1);
  case 'hang': out('Booting from ROM...\\n'); setInterval(() => {}, 1000); break;
  // a helper process that shares the console pipe and outlives QEMU
  case 'helper': require('child_process').spawn('sh', ['-c', 'sleep 0.3; echo late'], { stdio: ['ignore', 'inherit', 'inherit'] }); out('Booting from ROM...\\n'); setInterval(() => {}, 1000); break;
  case 'flood': {
    out(M + ' init\\n' + M + ' run\\n');
    for (let i = 0; i < 20000; i++) out('line ' + i + '\\n');
    status('exit 0\\n');
    process.stdout.end(() => process.exit(1));
    break;
  }
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

/** Whether process `pid` has ended (a zombie waiting for its reaper counts as ended). */
async function gone(pid: number, ms = 5000): Promise<boolean> {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await new Promise((r) => setTimeout(r, 50))) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return true;
    }
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return true;
  }
  return false;
}


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

t.test('the console is bounded: head and tail kept, the drop counted; onOutput sees everything', async (t) => {
  let seen = '';
  const r = await runQemu(options('flood', { outputLimit: 1000, onOutput: (s) => (seen += s) }));
  t.equal(r.exitCode, 0);
  t.equal(seen.length, r.output.length - `\n[mkqemu: ${r.outputDropped} characters dropped here]\n`.length + r.outputDropped, 'kept + dropped = all');
  t.ok(r.outputDropped > 40_000);
  t.ok(r.output.startsWith(`${MARKER} init\n${MARKER} run\nline 0\n`), 'the head is the start');
  t.ok(r.output.endsWith('line 19999\n'), 'the tail is the end');
  t.match(r.output, `\n[mkqemu: ${r.outputDropped} characters dropped here]\n`);
  t.ok(r.output.length < 1100);
  const unbounded = await runQemu(options('flood'));
  t.equal(unbounded.outputDropped, 0, 'the default limit holds a normal console');
  t.ok(unbounded.output.endsWith('line 19999\n'));
  await t.rejects(runQemu(options('ok', { outputLimit: 1 })), RangeError);
});

t.test('QEMU stderr is bounded in what a failure reports', async (t) => {
  const err = (await runQemu(options('stderr-flood')).catch((e: unknown) => e)) as MultikernelError;
  t.match(err, { code: 'ERR_MK_QEMU', details: { reason: 'no-exit-code' } });
  t.match(err.message, /QEMU said: qemu: e+\n\[mkqemu: \d+ characters dropped here\]\ne+ END$/);
  t.ok(err.message.length < 70 * 1024, `message of ${err.message.length} characters`);
  t.equal((err.details['stderr'] as string).length, err.message.length - err.message.indexOf('qemu: e'));
});

t.test('an exception thrown by onOutput or onPhase ends the run as its rejection; QEMU is killed', async (t) => {
  const pidFile = path.join(tmp, 'qemu.pid');
  process.env['FAKE_QEMU_PID'] = pidFile;
  try {
    const boom = new Error('boom in onOutput');
    await t.rejects(runQemu(options('hang', { onOutput: () => {
      throw boom;
    } })), boom);
    t.ok(await gone(Number(readFileSync(pidFile, 'utf8'))), 'the fake QEMU is dead');
    let calls = 0;
    await t.rejects(runQemu(options('helper', { onOutput: () => {
      calls++;
      throw boom;
    } })), boom);
    t.equal(calls, 1, 'a callback that threw is not called again for console text that comes after');
    let outputs = 0;
    await t.rejects(runQemu(options('hang', { onOutput: () => void outputs++, onPhase: (p) => {
      if (p === 'kernel') throw new Error('boom in onPhase');
    } })), { message: 'boom in onPhase' });
    t.ok(await gone(Number(readFileSync(pidFile, 'utf8'))));
    await t.rejects(runQemu(options('ok', { onPhase: (p) => {
      if (p === 'done') throw new Error('boom at done');
    } })), { message: 'boom at done' });
  } finally {
    delete process.env['FAKE_QEMU_PID'];
  }
  t.same(scratchLeft(), []);
});

t.test('an abort while the initramfs is written stops before QEMU starts', async (t) => {
  const ac = new AbortController();
  const started: string[] = [];
  await t.rejects(runQemu(options('ok', { signal: ac.signal, onPhase: (p) => {
    started.push(p);
    if (p === 'starting') ac.abort(new Error('changed my mind'));
  } })), { code: 'ERR_MK_QEMU', message: 'QEMU run aborted during "starting"', details: { reason: 'aborted', phase: 'starting' }, cause: { message: 'changed my mind' } });
  t.same(started, ['starting']);
  t.same(scratchLeft(), []);
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

t.test('a signal in this process interrupts a run (here the program listens itself, so it lives on)', async (t) => {
  // a listener of our own: without it the signal would be raised again for real
  const keep = (): void => undefined;
  process.on('SIGHUP', keep);
  t.teardown(() => void process.removeListener('SIGHUP', keep));
  if (process.listenerCount('SIGHUP') <= signalExitListeners()) {
    t.fail('SIGHUP listeners do not outnumber signal-exit\'s: emitting it would end this process');
    return;
  }
  const parent = mkdtempSync(path.join(tmp, 'sighup-'));
  const hup = (): boolean => process.emit('SIGHUP', 'SIGHUP');

  // while QEMU runs
  await t.rejects(runQemu(options('hang', { tmpDir: parent, onPhase: (p) => p === 'kernel' && hup() })), {
    code: 'ERR_MK_QEMU',
    message: 'QEMU run interrupted by SIGHUP during "kernel"; it was killed',
    details: { reason: 'aborted', phase: 'kernel', signal: 'SIGKILL' },
    cause: { message: 'received SIGHUP' },
  });

  // while the initramfs is written: busybox is a FIFO, so the writer waits until we open it
  const fifo = path.join(tmp, 'busybox.fifo');
  execFileSync('mkfifo', [fifo]);
  const whileBuilding = async (extra: Partial<QemuOptions>): Promise<unknown> => {
    const p = runQemu(options('ok', { tmpDir: parent, busybox: fifo, ...extra })).catch((e: unknown) => e);
    // the archive is open (so the run is registered) and waits for busybox
    while (!readdirSync(parent).some((d) => existsSync(path.join(parent, d, 'initramfs.cpio')))) await new Promise((r) => setTimeout(r, 10));
    hup();
    t.same(readdirSync(parent), [], 'the scratch directory is removed at once');
    await (await open(fifo, 'w')).close();
    return p;
  };
  t.match(await whileBuilding({}), { code: 'ERR_MK_QEMU', message: 'QEMU run interrupted by SIGHUP during "starting"; it was killed', details: { reason: 'aborted', phase: 'starting' } }, 'no QEMU is started');
  t.match(await whileBuilding({ files: [{ source: path.join(tmp, 'absent'), target: '/x' }] }), { message: /interrupted by SIGHUP during "starting"/, cause: { code: 'ENOENT' } }, 'an error of the interrupted writer is the cause');
  t.same(readdirSync(parent), []);
});

const ROOT = path.resolve(__dirname, '..', '..');
const LOADER = path.join(ROOT, 'node_modules/@tapjs/typescript/dist/esm/import.mjs');
// Children run without tap's NODE_OPTIONS hooks and coverage (their V8 coverage of lib/*.ts does
// not merge with this process's); cleanup.ts is covered here with a stand-in process.
const childEnv: NodeJS.ProcessEnv = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' };
delete childEnv['NODE_OPTIONS'];
delete childEnv['NODE_V8_COVERAGE'];

/**
 * A child node process running runQemu against the hanging fake; once QEMU is up, `end` ends the
 * child: a signal from outside, an unrelated uncaught exception, or process.exit().
 */
async function childRun(t: Test, end: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'throw' | 'exit'): Promise<{ code: number | null; signal: NodeJS.Signals | null; scratch: string[]; qemuGone: boolean; stdout: string }> {
  const dir = mkdtempSync(path.join(tmp, `child-${end}-`));
  const pidFile = path.join(dir, 'qemu.pid');
  const code = `
    const { runQemu } = require(${JSON.stringify(path.join(ROOT, 'lib', 'qemu', 'index.ts'))});
    runQemu(${JSON.stringify({ ...options('hang'), tmpDir: dir, timeoutMs: 60_000 })
      .slice(0, -1)}, onPhase: (p) => {
        if (p !== 'kernel') return;
        process.stdout.write('running\\n');
        if (${JSON.stringify(end)} === 'throw') setImmediate(() => { throw new Error('unrelated'); });
        if (${JSON.stringify(end)} === 'exit') process.exit(3);
      } }).then(() => console.log('resolved'), (e) => console.log('rejected', e.message));`;
  const child = spawn(process.execPath, ['--import', LOADER, '-e', code], { env: { ...childEnv, FAKE_QEMU_PID: pidFile }, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (stdout.includes('running\n') && end.startsWith('SIG') && child.exitCode === null) child.kill(end as NodeJS.Signals);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [exitCode, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  const qemuPid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : undefined;
  const qemuGone = qemuPid === undefined ? false : await gone(qemuPid);
  if (qemuPid !== undefined && !qemuGone) process.kill(qemuPid, 'SIGKILL');
  t.ok(stdout.includes('running\n'), `the child got QEMU running (stderr: ${stderr.slice(0, 2000)})`);
  return { code: exitCode, signal, scratch: readdirSync(dir).filter((n) => n.startsWith('mkqemu-')), qemuGone, stdout };
}

t.test('the process ending underneath a run leaves no scratch directory and no QEMU', async (t) => {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const r = await childRun(t, sig);
    t.equal(r.signal, sig, `${sig}: the child still ends by ${sig} (re-raised) ${r.code} ${r.stdout}`);
    t.same(r.scratch, [], `${sig}: no scratch directory`);
    t.ok(r.qemuGone, `${sig}: QEMU was killed`);
  }
  const thrown = await childRun(t, 'throw');
  t.equal(thrown.code, 1, 'an uncaught exception: exit status 1');
  t.same(thrown.scratch, [], 'uncaught exception: no scratch directory');
  t.ok(thrown.qemuGone, 'uncaught exception: QEMU was killed');
  const exited = await childRun(t, 'exit');
  t.equal(exited.code, 3, 'process.exit(3)');
  t.same(exited.scratch, [], 'process.exit: no scratch directory');
  t.ok(exited.qemuGone, 'process.exit: QEMU was killed');
});

t.test('no scratch directory is left behind by any of the runs above', async (t) => {
  t.same(scratchLeft(), []);
});
