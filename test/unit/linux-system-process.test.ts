// LinuxSystem behaviour that needs a second process: flock contention between two LinuxSystem
// locks, a real short write (RLIMIT_FSIZE set with prlimit(1) makes write(2) return fewer
// bytes), and strace proof that writeFile issues exactly one write(2). All safe on this machine.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { MultikernelError } from '../../lib/errors';
import { LinuxSystem } from '../../lib/system/linux';

const ROOT = path.resolve(__dirname, '..', '..');
const LOADER = path.join(ROOT, 'node_modules/@tapjs/typescript/dist/esm/import.mjs');
const LINUX = path.join(ROOT, 'lib/system/linux/index.ts');
// Children run without tap's NODE_OPTIONS hooks and coverage: their V8 coverage of lib/*.ts,
// compiled separately, does not merge with the test process's. Coverage comes from this process.
const childEnv: NodeJS.ProcessEnv = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' };
delete childEnv.NODE_OPTIONS;
delete childEnv.NODE_V8_COVERAGE;

/** `node -e code` with the TypeScript loader, so the child can require lib/*.ts. */
function nodeArgs(code: string): string[] {
  return ['--import', LOADER, '-e', code];
}

function tempDir(t: tap.Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-proc-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A child process holding a LinuxSystem lock until it reads a line on stdin. */
async function lockHolder(t: tap.Test, file: string, exclusive: boolean): Promise<ChildProcessWithoutNullStreams> {
  const code = `
    const { LinuxSystem } = require(${JSON.stringify(LINUX)});
    (async () => {
      const handle = await new LinuxSystem().lock(${JSON.stringify(file)}, { exclusive: ${exclusive} });
      process.stdout.write('locked\\n');
      process.stdin.once('data', async () => {
        await handle.release();
        process.stdout.write('released\\n');
        process.exit(0);
      });
    })();`;
  const child = spawn(process.execPath, nodeArgs(code), { env: childEnv, cwd: ROOT });
  t.teardown(() => {
    if (child.exitCode === null) child.kill();
  });
  let out = '';
  child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  while (!out.includes('locked\n')) {
    await Promise.race([once(child.stdout, 'data'), once(child, 'exit').then(() => Promise.reject(new Error('lock holder died')))]);
  }
  return child;
}

const system = new LinuxSystem();

t.test('an exclusive lock held by another process', async (t) => {
  const file = path.join(tempDir(t), 'kerf.lock');
  const child = await lockHolder(t, file, true);

  const before = fs.readdirSync('/proc/self/fd').length;
  await t.rejects(system.lock(file, { wait: false }), { code: 'EWOULDBLOCK', syscall: 'flock', path: file });
  await t.rejects(system.lock(file, { wait: false, exclusive: false }), { code: 'EWOULDBLOCK' }, 'no shared lock either');
  const started = Date.now();
  await t.rejects(system.lock(file, { timeoutMs: 150 }), { code: 'ETIMEDOUT', syscall: 'flock', path: file });
  t.ok(Date.now() - started >= 140, 'waited for the timeout');
  const ac = new AbortController();
  const aborted = system.lock(file, { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('give up')), 50);
  await t.rejects(aborted, { message: 'give up' });
  t.equal(fs.readdirSync('/proc/self/fd').length, before, 'no fd left behind by the failures');

  // Now wait for real, and let the holder go.
  let got = false;
  const waiting = system.lock(file, { timeoutMs: 10_000 }).then((h) => {
    got = true;
    return h;
  });
  await new Promise((r) => setTimeout(r, 100));
  t.equal(got, false, 'still held');
  child.stdin.write('release\n');
  const handle = await waiting;
  t.equal(got, true);
  await once(child, 'exit');
  await handle.release();
  await handle.release();
  const again = await system.lock(file, { wait: false });
  await again.release();
});

t.test('shared locks coexist; an exclusive one waits for them', async (t) => {
  const file = path.join(tempDir(t), 'shared.lock');
  const child = await lockHolder(t, file, false);
  const shared = await system.lock(file, { exclusive: false, wait: false });
  await t.rejects(system.lock(file, { wait: false }), { code: 'EWOULDBLOCK' });
  await shared.release();
  child.stdin.write('release\n');
  await once(child, 'exit');
  const exclusive = await system.lock(file, { wait: false });
  await exclusive.release();
});

t.test('a lock is created 0600 and released when this process lets go', async (t) => {
  const file = path.join(tempDir(t), 'new.lock');
  const handle = await system.lock(file);
  t.equal(fs.statSync(file).mode & 0o777, 0o600);
  const probe = spawnSync('flock', ['-n', '-x', file, 'true']);
  t.equal(probe.status, 1, 'flock(1) in another process cannot take it');
  await handle.release();
  t.equal(spawnSync('flock', ['-n', '-x', file, 'true']).status, 0, 'free after release');
});

t.test('a short write(2) is ERR_MK_SHORT_WRITE and nothing is retried', async (t) => {
  const file = path.join(tempDir(t), 'kernfs-like');
  fs.writeFileSync(file, '');
  // RLIMIT_FSIZE of 1024 bytes on this very process (set from outside with prlimit(1)): the
  // kernel then accepts 1024 of 3000 bytes in one write(2). Node ignores SIGXFSZ, but tap's
  // signal-exit hook re-raises it unless the process has a listener of its own.
  const ignore = (): void => undefined;
  process.on('SIGXFSZ', ignore);
  const limit = (value: string): void => {
    const res = spawnSync('prlimit', ['--pid', String(process.pid), `--fsize=${value}:`], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`prlimit failed: ${res.stderr}`);
  };
  limit('1024'); // soft limit only ("1024:"), so it can be raised again without privileges
  let err: unknown;
  try {
    err = await system.writeFile(file, Buffer.alloc(3000, 0x61)).catch((e: unknown) => e);
  } finally {
    limit('unlimited');
    process.off('SIGXFSZ', ignore);
  }
  t.type(err, MultikernelError);
  t.match(err, {
    name: 'MultikernelError',
    code: 'ERR_MK_SHORT_WRITE',
    message: `short write to ${file}: the kernel took 1024 of 3000 bytes in one write(2)`,
    details: { path: file, written: 1024, expected: 3000 },
  });
  t.equal(fs.statSync(file).size, 1024, 'the rest was not written by a second call');
  t.equal(await system.writeFile(file, Buffer.alloc(3000, 0x62)), 3000, 'limit restored');
});

t.test('writeFile is exactly one write(2) on the file, without O_CREAT or O_TRUNC (strace)', async (t) => {
  if (spawnSync('strace', ['-o', '/dev/null', 'true']).status !== 0) {
    t.plan(0, 'strace cannot trace here (.ci/run installs it): the syscall-level check is skipped');
    return;
  }
  const dir = tempDir(t);
  const file = path.join(dir, 'overlay-new');
  fs.writeFileSync(file, '');
  const trace = path.join(dir, 'trace');
  const code = `
    const { LinuxSystem } = require(${JSON.stringify(LINUX)});
    new LinuxSystem().writeFile(${JSON.stringify(file)}, Buffer.alloc(300000, 0x62)).then((n) => console.log(n));`;
  const res = spawnSync(
    'strace',
    // -ff: one file per thread, so a call on a libuv pool thread is never split into <unfinished>/resumed lines.
    ['-ff', '-y', '-qq', '-e', 'trace=open,openat,write,writev,pwrite64,pwritev,pwritev2', '-o', trace, process.execPath, ...nodeArgs(code)],
    { env: childEnv, cwd: ROOT, encoding: 'utf8' },
  );
  t.equal(res.status, 0, res.stderr);
  t.equal(res.stdout.trim(), '300000');
  const lines = fs
    .readdirSync(dir)
    .filter((name) => name.startsWith('trace.'))
    .flatMap((name) => fs.readFileSync(path.join(dir, name), 'utf8').split('\n'));
  const opens = lines.filter((l) => l.includes(`"${file}"`));
  t.equal(opens.length, 1, opens.join('\n'));
  t.match(opens[0], /, O_WRONLY\|O_CLOEXEC\) = \d+</);
  t.notMatch(opens[0], /O_CREAT|O_TRUNC|O_APPEND/);
  const writes = lines.filter((l) => /^(p?writev?2?|pwrite64)\(/.test(l) && l.includes(`<${file}>`));
  t.equal(writes.length, 1, writes.join('\n'));
  t.match(writes[0], /= 300000$/);
});
