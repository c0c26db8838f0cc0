// Argument abuse of the dangerous entry points (kexec, reboot, mount): every call here has an
// invalid argument and must fail with TypeError/RangeError before any system call. They run in
// a child process without CAP_SYS_BOOT and CAP_SYS_ADMIN, so that a validation bug could only
// end in EPERM, never in a real kexec, reboot or mount on this machine.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

const fixture = path.join(__dirname, 'fixtures', 'dangerous-abuse.cjs');
const capsh = ['/usr/sbin/capsh', '/sbin/capsh', '/usr/bin/capsh'].find((p) => existsSync(p));
const ASYNC = new Set(['kexecLoad', 'kexecUnload', 'rebootHalt']);

interface Report {
  sysBoot: boolean;
  sysAdmin: boolean;
  results: {
    fn: string;
    args?: string[];
    kind?: 'resolved' | 'rejected' | 'returned' | 'threw';
    errorName?: string;
    code?: string;
    message?: string;
    promiseStyle?: boolean;
    sync?: boolean;
  }[];
}

if (capsh === undefined) {
  t.plan(0, 'capsh is not installed: the dangerous entry points are only abused without CAP_SYS_BOOT/CAP_SYS_ADMIN');
} else {
  t.test('invalid arguments to kexec/reboot/mount fail before any system call', async (t) => {
    // Without root there is nothing to drop (and capsh could not drop it): run the fixture as is.
    const root = process.getuid?.() === 0;
    const child = root
      ? spawnSync(capsh, ['--drop=cap_sys_boot,cap_sys_admin', '--', '-c', 'exec "$0" "$@"', process.execPath, fixture], {
          encoding: 'utf8',
          timeout: 60_000,
        })
      : spawnSync(process.execPath, [fixture], { encoding: 'utf8', timeout: 60_000 });
    t.equal(child.signal, null, 'the child was not killed by a signal');
    t.equal(child.status, 0, `the child exited cleanly (stderr: ${child.stderr})`);
    const report = JSON.parse(child.stdout) as Report;
    t.equal(report.sysBoot, false, 'the child has no CAP_SYS_BOOT');
    t.equal(report.sysAdmin, false, 'the child has no CAP_SYS_ADMIN');
    const calls = report.results.filter((r) => r.promiseStyle !== true);
    t.equal(calls.length, 38, 'every abusive call was made');
    for (const r of calls) {
      const what = `${r.fn}(${(r.args ?? []).join(', ')})`;
      t.equal(r.kind, ASYNC.has(r.fn) ? 'rejected' : 'threw', `${what} failed the documented way`);
      t.ok(r.errorName === 'TypeError' || r.errorName === 'RangeError', `${what}: ${r.errorName} ${r.message}`);
      t.ok(r.code === 'ERR_INVALID_ARG_TYPE' || r.code === 'ERR_INVALID_ARG_VALUE' || r.code === 'ERR_OUT_OF_RANGE', `${what}: code ${r.code}`);
    }
    for (const r of report.results.filter((r) => r.promiseStyle === true)) {
      t.equal(r.sync, false, `${r.fn} rejects instead of throwing synchronously`);
    }
  });
}
