// lib/qemu without QEMU: the cpio writer, the /init script, ldd parsing, the initramfs, console
// parsing, the argument vector and the kernel cache reader.
import { EventEmitter } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { MultikernelError } from '../../lib/errors';
import {
  buildInitramfs,
  buildQemuArgs,
  hostQemuArch,
  kernelCmdline,
  MARKER,
  parseLdd,
  parseMemory,
  parseStatus,
  PHASE_LABELS,
  qemuArchFor,
  qemuBinaryFor,
  readKernelCache,
  renderInit,
  SerialParser,
  shellQuote,
  writeCpio,
} from '../../lib/qemu';
import { consoleFor, checkCpus, STATUS_PORT_NAME } from '../../lib/qemu/args';
import { binaryEntries } from '../../lib/qemu/initramfs';
import { normalizeArchivePath } from '../../lib/qemu/cpio';
import { RunRegistry, signalExitListeners, type Interruption, type ProcessLike } from '../../lib/qemu/cleanup';
import { HeadTail } from '../../lib/qemu/head-tail';

interface Member {
  name: string;
  mode: number;
  size: number;
  rdev: [number, number];
  data: Buffer;
}

/** A newc reader, independent of the writer, to check what the kernel would unpack. */
function readCpio(buf: Buffer): Member[] {
  const out: Member[] = [];
  let off = 0;
  const pad = (n: number): number => (n + 3) & ~3;
  for (;;) {
    if (buf.toString('ascii', off, off + 6) !== '070701') throw new Error(`bad magic at ${off}`);
    const field = (i: number): number => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    const dataStart = pad(off + 110 + nameSize);
    if (name === 'TRAILER!!!') return out;
    out.push({ name, mode: field(1), size, rdev: [field(9), field(10)], data: buf.subarray(dataStart, dataStart + size) });
    off = pad(dataStart + size);
  }
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'qemu-lib-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('cpio: every entry type, parents first, replacement, padding', async (t) => {
  const src = path.join(tmp, 'src.bin');
  writeFileSync(src, Buffer.from('abcde'));
  chmodSync(src, 0o750);
  const out = path.join(tmp, 'a.cpio');
  await writeCpio(out, [
    { type: 'file', path: '/usr/bin/tool', source: src },
    { type: 'file', path: 'etc/motd', data: 'old' },
    { type: 'file', path: 'etc/motd', data: 'hello', mode: 0o600 },
    { type: 'file', path: 'etc/raw', data: new Uint8Array([1, 2, 3]) },
    { type: 'file', path: 'etc/copy', source: src, mode: 0o644 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'char-device', path: 'dev/console', major: 5, minor: 1 },
    { type: 'char-device', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'dir', path: 'proc' },
    { type: 'dir', path: 'root', mode: 0o700 },
  ]);
  const m = readCpio(readFileSync(out));
  const names = m.map((e) => e.name);
  t.same(names.slice(0, 3), ['usr', 'usr/bin', 'usr/bin/tool'], 'parents before children');
  t.equal(names.filter((n) => n === 'etc/motd').length, 1, 'a later entry replaces an earlier one');
  const by = new Map(m.map((e) => [e.name, e]));
  t.equal(by.get('usr/bin/tool')!.data.toString(), 'abcde');
  t.equal(by.get('usr/bin/tool')!.mode, 0o100750, 'host mode kept');
  t.equal(by.get('etc/copy')!.mode, 0o100644, 'explicit mode wins');
  t.equal(by.get('etc/motd')!.data.toString(), 'hello');
  t.equal(by.get('etc/motd')!.mode, 0o100600);
  t.same([...by.get('etc/raw')!.data], [1, 2, 3]);
  t.equal(by.get('bin/sh')!.mode, 0o120777);
  t.equal(by.get('bin/sh')!.data.toString(), 'busybox');
  t.same(by.get('dev/console')!.rdev, [5, 1]);
  t.equal(by.get('dev/console')!.mode, 0o020600);
  t.equal(by.get('dev/null')!.mode, 0o020666);
  t.equal(by.get('proc')!.mode, 0o040755);
  t.equal(by.get('root')!.mode, 0o040700);
});

t.test('cpio: large files are copied in chunks', async (t) => {
  const big = Buffer.alloc((1 << 20) * 2 + 3);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  const src = path.join(tmp, 'big.bin');
  writeFileSync(src, big);
  const out = path.join(tmp, 'big.cpio');
  await writeCpio(out, [{ type: 'file', path: 'big', source: src }]);
  const m = readCpio(readFileSync(out));
  t.ok(m.find((e) => e.name === 'big')!.data.equals(big));
});

t.test('cpio: paths are checked; a missing source rejects and closes the archive', async (t) => {
  t.equal(normalizeArchivePath('//a//b/'), 'a/b');
  for (const bad of ['', '/', 'a/../b', './x']) t.throws(() => normalizeArchivePath(bad), RangeError, JSON.stringify(bad));
  await t.rejects(writeCpio(path.join(tmp, 'bad.cpio'), [{ type: 'file', path: 'x', source: path.join(tmp, 'nope') }]), { code: 'ENOENT' });
});

t.test('renderInit: x86_64 with modules, share and environment', async (t) => {
  const script = renderInit({
    arch: 'x86_64',
    modules: ['/lib/mkqemu/00-netfs.ko', "/lib/it's.ko"],
    shareMount: '/share',
    cwd: '/share',
    env: { FOO: "a b'c", NO_COLOR: '0' },
    command: ['node', '-e', 'console.log("x")'],
  });
  t.match(script, /^#!\/bin\/busybox sh\n/);
  t.match(script, "insmod '/lib/mkqemu/00-netfs.ko'");
  t.match(script, `insmod '/lib/it'\\''s.ko' || warn 'insmod failed:' '/lib/it'\\''s.ko'`);
  t.match(script, "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro share '/share'");
  t.match(script, "export FOO='a b'\\''c'");
  t.match(script, "export NO_COLOR='0'", 'the caller may override the preset environment');
  t.notMatch(script, "export NO_COLOR='1'");
  t.match(script, "set -- 'node' '-e' 'console.log(\"x\")'");
  t.match(script, 'dd of=/dev/port bs=1 seek=244 count=1', 'x86 reports through isa-debug-exit');
  t.match(script, 'mkstatus=/dev/ttyS1', 'x86: the status device is the second UART');
  t.match(script, `report() { status "exit $1";`, 'the exit status goes to the status device');
  t.match(script, `fail() { status "fail $*";`, 'so do setup failures');
  t.ok(script.indexOf(`${MARKER} run`) < script.indexOf('command "$@" </dev/null'));
  t.ok(script.indexOf('mkstatus=/dev/ttyS1') < script.indexOf('mount -t 9p'), 'the status device is known before anything can fail');
});

t.test('renderInit: aarch64 without share; bad input', async (t) => {
  const script = renderInit({ arch: 'aarch64', modules: [], cwd: '/', env: {}, command: ['true'] });
  t.notMatch(script, '/dev/port');
  t.match(script, `[ "$(cat "$p/name" 2>/dev/null)" = ${STATUS_PORT_NAME} ] && mkstatus="/dev/\${p##*/}"`, 'arm64: the virtio-serial port is found by name');
  t.notMatch(script, 'mount -t 9p');
  t.match(script, "export NO_COLOR='1'");
  t.throws(() => renderInit({ arch: 'aarch64', modules: [], cwd: '/', env: {}, command: [] }), RangeError);
  t.throws(() => renderInit({ arch: 'aarch64', modules: [], cwd: '/', env: { 'A-B': '1' }, command: ['x'] }), RangeError);
  t.equal(shellQuote(''), "''");
});

/**
 * The words of one generated shell line, decoded. Only the quoting the init uses for data is
 * understood: single quotes, backslash escapes and plain characters. A double quote, `$` or
 * backquote outside single quotes would make the shell expand something: that throws.
 */
function literalWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === ' ') {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated single quote in ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '\\') {
      word = (word ?? '') + line[++i]!;
    } else if (c === '"' || c === '$' || c === '`') {
      throw new Error(`${c} outside single quotes at ${i}: ${line}`);
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

t.test('renderInit: hostile paths reach the guest as data, never as shell code', async (t) => {
  const hostile = [
    '/srv/$(touch /pwned)',
    '/srv/`touch /pwned`',
    "/srv/'$(touch /pwned)'",
    '/srv/"$(touch /pwned)"',
    '/srv/\\$(touch /pwned)',
    "/srv/a'b\"c d  e;|&<>*?~{}!#",
  ];
  for (const p of hostile) {
    const script = renderInit({ arch: 'x86_64', modules: [`/lib/mkqemu/00-${p.slice(5)}.ko`], shareMount: p, cwd: p, env: {}, command: ['true'] });
    const line = (start: string): string[] => literalWords(script.split('\n').find((l) => l.startsWith(start))!);
    t.same(line('cd '), ['cd', p, '||', 'fail', 'no such guest directory', p], `cwd ${p}`);
    t.same(line('mkdir -p \''), ['mkdir', '-p', p, '&&', 'mount', '-t', '9p', '-o', 'trans=virtio,version=9p2000.L,msize=512000,ro', 'share', p, '||', 'fail', 'could not mount the 9p share on', p], `share ${p}`);
    const mod = `/lib/mkqemu/00-${p.slice(5)}.ko`;
    t.same(line('insmod '), ['insmod', mod, '||', 'warn', 'insmod failed:', mod], `module ${mod}`);
  }
  t.throws(() => literalWords("'open"), /unterminated/, 'the decoder itself refuses broken quoting');
});

t.test('renderInit: a newline or NUL in a guest path is refused up front', async (t) => {
  const base = { arch: 'x86_64' as const, modules: [], cwd: '/', env: {}, command: ['true'] };
  for (const bad of ['/a\nb', '/a\0b']) {
    const message = `guest paths must not contain a newline or NUL character, got ${JSON.stringify(bad)}`;
    t.throws(() => renderInit({ ...base, cwd: bad }), { name: 'RangeError', message });
    t.throws(() => renderInit({ ...base, shareMount: bad }), { name: 'RangeError', message });
    t.throws(() => renderInit({ ...base, modules: [bad] }), { name: 'RangeError', message });
  }
  t.doesNotThrow(() => renderInit({ ...base, env: { X: 'a\nb' }, command: ['echo', 'a\nb'] }), 'values and arguments may hold newlines: they are quoted');
});

t.test('parseLdd', async (t) => {
  const listing = [
    '\tlinux-vdso.so.1 (0x00007ffd5b9f2000)',
    '\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f0000000000)',
    '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6',
    '\t/lib64/ld-linux-x86-64.so.2 (0x00007f0000001000)',
    '',
  ].join('\n');
  t.same(parseLdd(listing), ['/lib/x86_64-linux-gnu/libdl.so.2', '/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2']);
  t.same(parseLdd('\tstatically linked\n'), []);
  t.throws(() => parseLdd('\tlibfoo.so.1 => not found\n'), { code: 'ERR_MK_QEMU', message: /libfoo\.so\.1 not found/ });
});

t.test('binaryEntries: dynamic, static, failing and missing ldd', async (t) => {
  const dynamic = await binaryEntries(process.execPath, '/usr/bin/node');
  t.equal(dynamic[0]!.path, '/usr/bin/node');
  t.ok(dynamic.some((e) => /libc\.so/.test(e.path)), 'libc comes along');
  const script = path.join(tmp, 'script.sh');
  writeFileSync(script, '#!/bin/sh\n');
  chmodSync(script, 0o755);
  t.same(await binaryEntries(script), [{ type: 'file', path: script, source: script, mode: 0o755 }], 'not a dynamic executable: just the file');
  await t.rejects(binaryEntries(path.join(tmp, 'absent')), { code: 'ERR_MK_QEMU', message: /ldd .*absent failed/ });
  const saved = process.env['PATH'];
  process.env['PATH'] = tmp;
  try {
    await t.rejects(binaryEntries(script), { code: 'ERR_MK_QEMU', message: /ldd is not installed/ });
  } finally {
    process.env['PATH'] = saved;
  }
});

t.test('buildInitramfs: busybox, node, binaries, modules, files and /init', async (t) => {
  const busybox = path.join(tmp, 'busybox');
  writeFileSync(busybox, 'BB');
  const mod = path.join(tmp, '9p.ko');
  writeFileSync(mod, 'KO');
  const extra = path.join(tmp, 'extra.txt');
  writeFileSync(extra, 'EXTRA');
  const out = path.join(tmp, 'initramfs.cpio');
  await buildInitramfs(out, {
    arch: 'x86_64',
    busybox,
    modules: [mod],
    binaries: [process.execPath],
    node: process.execPath,
    files: [{ source: extra, target: '/data/extra.txt', mode: 0o600 }, { source: extra, target: '/data/plain.txt' }],
    shareMount: '/share',
    cwd: '/share',
    env: {},
    command: ['node', '--version'],
  });
  const by = new Map(readCpio(readFileSync(out)).map((e) => [e.name, e]));
  t.equal(by.get('bin/busybox')!.data.toString(), 'BB');
  t.equal(by.get('lib/mkqemu/00-9p.ko')!.data.toString(), 'KO');
  t.equal(by.get('data/extra.txt')!.mode, 0o100600);
  t.ok(by.has('data/plain.txt'));
  t.ok(by.has('usr/bin/node'));
  t.ok(by.has(process.execPath.slice(1)), 'a binary lands at its host path');
  t.same(by.get('dev/console')!.rdev, [5, 1]);
  const init = by.get('init')!;
  t.equal(init.mode, 0o100755);
  t.match(init.data.toString(), "insmod '/lib/mkqemu/00-9p.ko'");
});

t.test('SerialParser: phases, warn, partial lines, tail; exit and fail markers decide nothing', async (t) => {
  const p = new SerialParser(3);
  t.equal(p.currentPhase, 'starting');
  t.same(p.push(''), []);
  t.same(p.push('SeaBIOS\r\nBooting from ROM...\r\n'), [{ kind: 'phase', phase: 'kernel' }]);
  t.same(p.push('[    0.000000] Linux version 6.12\n'), [], 'no phase twice');
  t.same(p.push(`${MARKER} in`), [], 'a partial line waits');
  t.same(p.push(`it\n${MARKER} warn insmod x failed\n`), [{ kind: 'phase', phase: 'init' }, { kind: 'warn', message: 'insmod x failed' }]);
  t.same(p.push(`${MARKER} run\n${MARKER} bogus\n`), [{ kind: 'phase', phase: 'command' }]);
  t.same(p.push(`${MARKER} init\n`), [], 'phases never go back');
  t.same(p.push(`${MARKER} exit 0\n${MARKER} fail no share\n`), [], 'the console is the command\'s too: its markers are not events');
  t.same(p.push(`noise ${MARKER} exit 3\npartial`), []);
  t.equal(p.currentPhase, 'command', 'done is noted by the host, not read from the console');
  t.equal(p.lastLines(), `${MARKER} exit 0\n${MARKER} fail no share\nnoise ${MARKER} exit 3\npartial`, 'the last 3 lines and the partial one');
  t.equal(PHASE_LABELS.kernel, 'kernel booting');
  const q = new SerialParser();
  q.push('[ok] started\n');
  t.equal(q.currentPhase, 'starting', 'only a kernel timestamp counts');
  q.push('[    1.500000] x\n');
  t.equal(q.currentPhase, 'kernel');
  t.equal(q.lastLines(), '[ok] started\n[    1.500000] x');
});

t.test('SerialParser: a console without newlines does not grow memory; long lines are clipped for messages', async (t) => {
  const p = new SerialParser(2);
  const chunk = 'x'.repeat(40 * 1024);
  p.push(chunk);
  p.push(chunk);
  p.push(`${chunk}${MARKER} run\n`);
  t.equal(p.currentPhase, 'command', 'the marker after the cut is still found');
  const tail = p.lastLines().split('\n');
  t.equal(tail.length, 2, 'the 80 KiB without a newline became a line of its own');
  t.equal(tail[0], `${'x'.repeat(1024)}… (${80 * 1024} characters)`);
  t.match(tail[1], /… \(\d+ characters\)$/);
  p.push('y'.repeat(2000));
  t.match(p.lastLines(), /y… \(2000 characters\)$/, 'the partial line is clipped too');
  const q = new SerialParser();
  q.push(`${'z'.repeat(70 * 1024)}\n${MARKER} run\n`);
  t.equal(q.currentPhase, 'command', 'markers on the lines after a long one still count');
});

t.test('HeadTail: keeps the head and the tail, counts what was dropped', async (t) => {
  const b = new HeadTail(4, 6);
  b.append('ab');
  t.equal(b.toString(), 'ab');
  b.append('cdefgh');
  t.equal(b.toString(), 'abcdefgh', 'nothing dropped while it fits');
  b.append('ij');
  b.append('');
  t.equal(b.dropped, 0);
  t.equal(b.toString(), 'abcdefghij');
  b.append('klmnopq');
  t.equal(b.dropped, 7);
  t.equal(b.toString(), 'abcd\n[mkqemu: 7 characters dropped here]\nlmnopq');
  b.append('0123456789');
  t.equal(b.dropped, 17, 'a chunk longer than the tail pushes out everything before it');
  t.equal(b.toString(), 'abcd\n[mkqemu: 17 characters dropped here]\n456789');
});

/** A stand-in for `process`: listeners, and kill() recorded instead of sent. */
class FakeProcess extends EventEmitter implements ProcessLike {
  readonly pid = 4242;
  readonly kills: [number, string | number | undefined][] = [];
  kill(pid: number, signal?: string | number): true {
    this.kills.push([pid, signal]);
    return true;
  }
}

t.test('RunRegistry: listens only while runs are active; exit and signals clean up', async (t) => {
  const proc = new FakeProcess();
  let polite = 0;
  const reg = new RunRegistry(proc, () => polite);
  const counts = (): number[] => ['exit', 'SIGINT', 'SIGTERM', 'SIGHUP'].map((e) => proc.listenerCount(e));
  const scratch = (name: string): string => {
    const d = path.join(tmp, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(d, 'initramfs.cpio'), 'x');
    return d;
  };
  const seen: Interruption[] = [];
  const run = (dir: string) => ({ scratch: dir, interrupt: (by: Interruption) => seen.push(by) });

  const a = run(scratch('reg-a'));
  const b = run(scratch('reg-b'));
  const releaseA = reg.add(a);
  const releaseB = reg.add(b);
  t.same(counts(), [1, 1, 1, 1], 'one listener per event, however many runs');
  releaseA();
  releaseA();
  t.same(counts(), [1, 1, 1, 1], 'still one run');
  releaseB();
  t.same(counts(), [0, 0, 0, 0], 'none once the last run ends');
  t.ok(existsSync(a.scratch), 'a normal end leaves the scratch directory to runQemu');

  reg.add(a);
  proc.emit('exit', 0);
  t.same(seen, ['exit']);
  t.notOk(existsSync(a.scratch), 'exit: scratch removed');
  t.same(counts(), [0, 0, 0, 0]);

  const c = run(scratch('reg-c'));
  reg.add(c);
  proc.emit('SIGTERM', 'SIGTERM');
  t.same(seen, ['exit', 'SIGTERM']);
  t.notOk(existsSync(c.scratch), 'SIGTERM: scratch removed');
  t.same(proc.kills, [[4242, 'SIGTERM']], 'nobody else listens: the signal is raised again');
  t.same(counts(), [0, 0, 0, 0]);

  const d = run(scratch('reg-d'));
  const releaseD = reg.add(d);
  const own = (): void => undefined;
  proc.on('SIGINT', own);
  proc.emit('SIGINT', 'SIGINT');
  t.same(seen, ['exit', 'SIGTERM', 'SIGINT']);
  t.notOk(existsSync(d.scratch), 'SIGINT: scratch removed');
  t.same(proc.kills, [[4242, 'SIGTERM']], 'the program listens for SIGINT itself: it decides, nothing is raised');
  t.equal(proc.listenerCount('SIGINT'), 1, 'only the program\'s own listener is left');
  releaseD();
  t.same(counts(), [0, 1, 0, 0]);

  // signal-exit's listener only re-raises when it is alone: count it as nobody, or neither acts
  polite = 1;
  const e = run(scratch('reg-e'));
  reg.add(e);
  proc.emit('SIGINT', 'SIGINT');
  t.notOk(existsSync(e.scratch));
  t.same(proc.kills, [[4242, 'SIGTERM'], [4242, 'SIGINT']], 'only signal-exit listens besides us: raised again, for it to handle');
  t.same(counts(), [0, 1, 0, 0]);
});

t.test('signalExitListeners: the counts signal-exit v4 and v3 keep', async (t) => {
  t.equal(signalExitListeners({}, {}), 0);
  t.equal(signalExitListeners({ [Symbol.for('signal-exit emitter')]: { count: 2 } }, { __signal_exit_emitter__: { count: 1 } }), 3);
  t.equal(signalExitListeners({ [Symbol.for('signal-exit emitter')]: { count: 'x' } }, { __signal_exit_emitter__: null }), 0);
  t.type(signalExitListeners(), 'number', 'this process');
});

t.test('parseStatus: what /init wrote to the status device', async (t) => {
  t.same(parseStatus(''), {});
  t.same(parseStatus('exit 3\r\n'), { exitCode: 3 }, 'CRLF from the tty');
  t.same(parseStatus('exit 0\nexit 255\n'), { exitCode: 255 }, 'the last exit line counts');
  t.same(parseStatus('fail no share\r\nexit 255\r\nfail later\n'), { failure: 'no share', exitCode: 255 }, 'the first fail line counts');
  t.same(parseStatus('exit 256\nexit -1\nexit 1x\nexit\nnoise\nexit 7'), { exitCode: 7 }, 'malformed lines and a cut last line');
});

t.test('args: architecture, memory, cpus, command line', async (t) => {
  t.equal(qemuArchFor('x64'), 'x86_64');
  t.equal(qemuArchFor('arm64'), 'aarch64');
  t.equal(qemuArchFor('ia32'), undefined);
  t.equal(hostQemuArch('arm64'), 'aarch64');
  t.throws(() => hostQemuArch('ia32'), RangeError);
  t.equal(hostQemuArch(), qemuArchFor(process.arch));
  t.equal(qemuBinaryFor('aarch64'), 'qemu-system-aarch64');
  t.equal(consoleFor('x86_64'), 'ttyS0');
  t.equal(consoleFor('aarch64'), 'ttyAMA0');
  t.equal(parseMemory('512'), 512);
  t.equal(parseMemory('512M'), 512);
  t.equal(parseMemory(' 2g '), 2048);
  t.equal(parseMemory(128), 128);
  for (const bad of ['1T', 'lots', '']) t.throws(() => parseMemory(bad), RangeError);
  for (const bad of [32, 1.5]) t.throws(() => parseMemory(bad), RangeError);
  t.throws(() => parseMemory('63M'), { message: 'memory must be at least 64 MiB, got 63 MiB' });
  t.equal(checkCpus(4), 4);
  for (const bad of [0, 65, 1.5]) t.throws(() => checkCpus(bad), RangeError);
  t.equal(kernelCmdline('x86_64', undefined), 'console=ttyS0 rdinit=/init panic=-1 quiet');
  t.equal(kernelCmdline('aarch64', '  '), 'console=ttyAMA0 rdinit=/init panic=-1 quiet');
  t.equal(kernelCmdline('x86_64', ' crashkernel=256M '), 'console=ttyS0 rdinit=/init panic=-1 quiet crashkernel=256M');
});

t.test('buildQemuArgs', async (t) => {
  const base = { cpus: 4, memoryMiB: 1024, kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0', status: '/s/status' };
  const x86 = buildQemuArgs({ ...base, arch: 'x86_64', share: '/repo' });
  t.same(x86, [
    '-machine', 'q35', '-accel', 'tcg',
    '-smp', '4', '-m', '1024M', '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', '/k', '-initrd', '/i', '-append', 'console=ttyS0',
    '-chardev', 'file,id=mkstatus,path=/s/status',
    '-serial', 'mon:stdio', '-serial', 'chardev:mkstatus',
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
    '-virtfs', 'local,path=/repo,mount_tag=share,security_model=none,readonly=on,multidevs=remap',
  ]);
  t.notOk(x86.includes('kvm'), 'never KVM');
  t.same(buildQemuArgs({ ...base, arch: 'x86_64', machine: 'pc' }).slice(0, 2), ['-machine', 'pc']);
  const arm = buildQemuArgs({ ...base, arch: 'aarch64' });
  t.same(arm.slice(0, 6), ['-machine', 'virt,gic-version=3', '-accel', 'tcg', '-cpu', 'max']);
  t.same(arm.slice(arm.indexOf('-chardev')), [
    '-chardev', 'file,id=mkstatus,path=/s/status',
    '-device', 'virtio-serial-pci,id=mkstatus-bus',
    '-device', `virtserialport,bus=mkstatus-bus.0,chardev=mkstatus,name=${STATUS_PORT_NAME}`,
  ], 'arm64: the status device is a virtio-serial port; no isa-debug-exit');
  t.notOk(arm.includes('-virtfs'));
  t.ok(buildQemuArgs({ ...base, arch: 'x86_64', status: '/a,b/status' }).includes('file,id=mkstatus,path=/a,,b/status'), 'a comma in the status path is doubled (QEMU option syntax)');
  t.throws(() => buildQemuArgs({ ...base, arch: 'x86_64', machine: 'virt' }), RangeError);
  t.throws(() => buildQemuArgs({ ...base, arch: 'aarch64', machine: 'q35' }), RangeError);
  t.throws(() => buildQemuArgs({ ...base, arch: 'x86_64', share: '/a,b' }), RangeError);
});

t.test('readKernelCache', async (t) => {
  const dir = path.join(tmp, 'cache');
  mkdirSync(path.join(dir, 'modules'), { recursive: true });
  writeFileSync(path.join(dir, 'kernel.env'), 'KERNEL_PACKAGE=linux-image-x\nKERNEL_RELEASE=6.12\n\nnoise\n');
  writeFileSync(path.join(dir, 'modules', 'order'), 'netfs\n9p\n');
  const c = await readKernelCache(dir);
  t.same(c, {
    dir,
    kernel: path.join(dir, 'vmlinuz'),
    busybox: path.join(dir, 'busybox'),
    modules: [path.join(dir, 'modules', 'netfs.ko'), path.join(dir, 'modules', '9p.ko')],
    info: { KERNEL_PACKAGE: 'linux-image-x', KERNEL_RELEASE: '6.12' },
  });
  const err = await readKernelCache(path.join(tmp, 'none')).catch((e: unknown) => e);
  t.ok(err instanceof MultikernelError);
  t.match(err, { code: 'ERR_MK_QEMU', message: /fetch-kernel\.sh/, details: { reason: 'no-kernel-cache' } });
});
