// The addon's blocking calls run on threads of their own, not on libuv's pool (issue 8): a
// graceful halt and kexec_file_load, each under a seccomp fake in a child process without
// CAP_SYS_BOOT (fixtures/blocking-child.cjs; neither system call reaches the kernel). Lock waits
// are in flock.test.ts, terminate() during any of them in teardown.test.ts.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { HELPER_PATH, loadTestHelper } from './helper';

const fixture = path.join(__dirname, 'fixtures', 'blocking-child.cjs');
const capsh = ['/usr/sbin/capsh', '/sbin/capsh', '/usr/bin/capsh'].find((p) => existsSync(p));
const root = process.getuid?.() === 0;
const skip = root && capsh === undefined ? 'capsh is not installed: the fakes of reboot(2) and kexec_file_load(2) only run without CAP_SYS_BOOT' : false;

function child(name: string): unknown {
  loadTestHelper();
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  delete env.NODE_V8_COVERAGE;
  const args = [fixture, HELPER_PATH, name];
  const result = root
    ? spawnSync(capsh as string, ['--drop=cap_sys_boot', '--', '-c', 'exec "$0" "$@"', process.execPath, ...args], { env, encoding: 'utf8', timeout: 120_000 })
    : spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 120_000 });
  if (result.status !== 0) throw new Error(`the child failed (${result.status ?? result.signal}): ${result.stderr}`);
  return JSON.parse(result.stdout);
}

t.test('a graceful halt does not take a thread of the pool', { skip }, async (t) => {
  const r = child('halt') as { readFileMs: number; haltsMs: number; results: unknown[] };
  t.comment(`6 halts of 1 s each: readFile after ${r.readFileMs} ms, all halts after ${r.haltsMs} ms`);
  t.ok(r.readFileMs < 800, `an fs call does not wait for the halts (${r.readFileMs} ms)`);
  t.ok(r.haltsMs >= 900 && r.haltsMs < 1900, `the halts wait side by side, not 4 at a time (${r.haltsMs} ms)`);
  t.same(r.results, Array(6).fill({ message: 'EBUSY: resource busy or locked, reboot', code: 'EBUSY', errno: -16, syscall: 'reboot' }), "each rejects with the kernel's errno");
});

t.test('kexec_file_load gets the image it was given, even if the caller closes its fds at once', { skip }, async (t) => {
  const r = child('kexec') as { reused: boolean; error: unknown; unload: string | null; log: { kernel: string; initrd: string }[]; fdsLeft: number };
  t.ok(r.reused, "the caller's fd numbers went to other files before the call ran");
  t.same(r.log, [
    { kernel: '/memfd:image-given (deleted)', initrd: '/memfd:initrd-given (deleted)' },
    { kernel: '', initrd: '' },
  ], 'the system call saw the files given, then an unload without files');
  t.same(r.error, { message: 'ENOEXEC: exec format error, kexec_file_load', code: 'ENOEXEC', syscall: 'kexec_file_load' });
  t.equal(r.unload, 'ENOEXEC');
  t.equal(r.fdsLeft, 0, 'the duplicates were closed');
});
