// One errno table (lib/errors.ts) for the real addon and the simulator (issue 8): every Linux
// errno has its name, number and Node-style message, and the errnos docs/kernel-interface.md
// names come out of the real addon's error path exactly so. That path is driven by a seccomp
// fake (test/native/helper fakeSyscalls) in a child process: flock(2) on fd FAKE_FD_BASE + n
// fails with errno n without reaching the kernel, and flockUnlock reports it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { errnoError, errnoMessage, errnoName, errnoNumber, systemError } from '../../lib/errors';
import { FAKE_FD_BASE, HELPER_PATH, loadTestHelper } from './helper';

const ROOT = path.resolve(__dirname, '..', '..');
// Linux numbers its errnos 1..133 (asm-generic, as on x64 and arm64); 41 and 58 are unused.
const LINUX_ERRNOS = Array.from({ length: 133 }, (_, i) => i + 1).filter((n) => n !== 41 && n !== 58);

/** The errno names docs/kernel-interface.md uses (words that are errno names, not other E-words). */
function documentedErrnos(): string[] {
  const text = fs.readFileSync(path.join(ROOT, 'docs', 'kernel-interface.md'), 'utf8');
  return [...new Set(text.match(/\bE[A-Z0-9]{2,}\b/g) ?? [])].filter((word) => errnoNumber(word) !== undefined).sort();
}

t.test('lib/errors.ts names every Linux errno, as Node does where Node can', async (t) => {
  const nodeMap = getSystemErrorMap();
  for (const n of LINUX_ERRNOS) {
    const name = errnoName(n);
    t.ok(name !== undefined && /^E[A-Z0-9]+$/.test(name), `${n} has a name (${name})`);
    t.equal(errnoNumber(name as string), n, `${name} is ${n}`);
    const message = errnoMessage(name as string);
    t.ok(message !== undefined && message.length > 0 && message === message.replace(/^[A-Z](?=[a-z])/, (c) => c.toLowerCase()), `${name}: '${message}'`);
    const node = nodeMap.get(-n);
    if (node !== undefined) t.same([name, message], node, `${name} as Node names and describes it`);
  }
  for (const [name, n] of Object.entries(osConstants.errno as Record<string, number>)) {
    t.equal(errnoNumber(name), n, `os.constants.errno.${name}`);
  }
  // the ones the issue named, which libuv's table lacks
  t.same(
    ['ENOEXEC', 'ENOKEY', 'EKEYEXPIRED', 'EKEYREVOKED', 'EKEYREJECTED', 'EBADMSG'].map((name) => [name, errnoNumber(name), errnoMessage(name)]),
    [
      ['ENOEXEC', 8, 'exec format error'],
      ['ENOKEY', 126, 'required key not available'],
      ['EKEYEXPIRED', 127, 'key has expired'],
      ['EKEYREVOKED', 128, 'key has been revoked'],
      ['EKEYREJECTED', 129, 'key was rejected by service'],
      ['EBADMSG', 74, 'bad message'],
    ],
  );
  t.same([errnoName(11), errnoName(95), errnoName(35)], ['EAGAIN', 'ENOTSUP', 'EDEADLK'], "a number's name is Node's");
  t.same([errnoNumber('EWOULDBLOCK'), errnoNumber('EOPNOTSUPP'), errnoNumber('EDEADLOCK')], [11, 95, 35], 'aliases have numbers too');
  t.equal(errnoName(0), undefined);
  t.equal(errnoName(4095), undefined, 'libuv codes are not errnos');
  t.equal(errnoNumber('EOF'), undefined, "libuv's EOF is not an errno");
  t.equal(errnoMessage('ENOTANERRNO'), undefined);
});

t.test('systemError and errnoError build the same Node-shaped errors', async (t) => {
  const byName = systemError('ENOEXEC', 'kexec_file_load');
  const byNumber = errnoError(8, 'kexec_file_load');
  for (const e of [byName, byNumber]) {
    t.same({ message: e.message, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path }, {
      message: 'ENOEXEC: exec format error, kexec_file_load',
      code: 'ENOEXEC',
      errno: -8,
      syscall: 'kexec_file_load',
      path: undefined,
    });
  }
  t.notOk('path' in byNumber, 'no path property without a path');
  t.match(errnoError(126, 'open', '/dev/mktty1'), { message: "ENOKEY: required key not available, open '/dev/mktty1'", path: '/dev/mktty1' });
  t.match(errnoError(11, 'read'), { code: 'EAGAIN', message: 'EAGAIN: resource temporarily unavailable, read' });
  t.match(systemError('EWOULDBLOCK', 'flock'), { code: 'EWOULDBLOCK', errno: -11, message: 'EWOULDBLOCK: resource temporarily unavailable, flock' });
  t.match(errnoError(200, 'ioctl'), { code: 'UNKNOWN', errno: -200, message: 'UNKNOWN: unknown error, ioctl' }, 'a number no table knows');
  t.throws(() => systemError('ENOTANERRNO', 'x'), RangeError);
});

const documented = documentedErrnos();

t.test('the errnos docs/kernel-interface.md names, from the real addon', async (t) => {
  t.ok(documented.length >= 20, `the document names ${documented.length} errnos: ${documented.join(' ')}`);
  t.ok(documented.includes('ENOEXEC'), 'ENOEXEC among them');
  loadTestHelper(); // build it here, not in the child
  const numbers = [...new Set([...documented.map((name) => errnoNumber(name) as number), ...LINUX_ERRNOS])].filter((n) => n !== 4); // EINTR is retried
  const child = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'errno-child.cjs'), HELPER_PATH, String(FAKE_FD_BASE), JSON.stringify(numbers)], {
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '', NODE_V8_COVERAGE: '' },
    timeout: 120_000,
  });
  t.equal(child.status, 0, `the child ran (stderr: ${child.stderr})`);
  const results = JSON.parse(child.stdout) as Record<string, { message: string; code: string; errno: number; syscall: string; keys: string[] }>;
  for (const n of numbers) {
    const expected = errnoError(n, 'flock');
    t.same(results[n], { message: expected.message, code: expected.code, errno: -n, syscall: 'flock', keys: ['code', 'errno', 'syscall'] }, `errno ${n} (${expected.code})`);
  }
  for (const name of documented) {
    const n = errnoNumber(name) as number;
    t.equal(results[n]?.code, errnoName(n), `${name} comes out as ${errnoName(n)}: ${results[n]?.message}`);
  }
});
