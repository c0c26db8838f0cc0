// Loads the test-only helper addon (test/native/helper), building it first when it is missing or
// older than its source. Parallel test files may get here at the same time: the build happens in
// a scratch copy under a lock directory and the result is renamed into place.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FdHandle, NativeBinding } from '../../lib/binding';

export interface TestHelper {
  /** socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC) */
  socketpair(): [number, number];
  close(fd: number): void;
  /**
   * Process-wide and irreversible (run it in a child process): a seccomp filter sends every
   * reboot(2), every kexec_file_load(2) and every flock(2) on fd FAKE_FD_BASE + n to a supervisor
   * thread, which answers reboot after rebootDelayMs with -rebootErrno (0: success),
   * kexec_file_load with -kexecErrno (noting its files for fakeKexecLog) and flock at once with
   * -n. None of them reaches the kernel.
   */
  fakeSyscalls(options: { rebootDelayMs: number; rebootErrno: number; kexecErrno: number }): void;
  /** The files (readlink of the fd arguments; '' for none) of every faked kexec_file_load. */
  fakeKexecLog(): { kernel: string; initrd: string }[];
  /** flock(FAKE_FD_BASE + 42): its errno, 42 once the fake answers. Check it before any reboot(2). */
  fakeProbe(): number;
}

/** CAP_SYS_BOOT in this process's effective set (a test that fakes reboot(2) runs without it). */
export function hasCapSysBoot(): boolean {
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`);
  return (capEff & (1n << 22n)) !== 0n;
}

export const FAKE_FD_BASE = 10000;

const DIR = path.join(__dirname, 'helper');
export const HELPER_PATH = path.join(DIR, 'build', 'Release', 'mk_test_helper.node');
const SOURCES = ['helper.c', 'binding.gyp'].map((f) => path.join(DIR, f));

function fresh(): boolean {
  try {
    const built = fs.statSync(HELPER_PATH).mtimeMs;
    return SOURCES.every((f) => fs.statSync(f).mtimeMs <= built);
  } catch {
    return false;
  }
}

function build(): void {
  const lock = path.join(DIR, '.building');
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`test helper: ${lock} is held for 2 minutes; remove it if stale`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
  }
  try {
    if (fresh()) return;
    const scratch = fs.mkdtempSync(path.join(DIR, '.scratch-'));
    try {
      for (const f of SOURCES) fs.copyFileSync(f, path.join(scratch, path.basename(f)));
      const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
      const args = [nodeGyp, 'rebuild'];
      // The headers of the node that runs the tests, when it has them next to it (/usr/bin/node
      // and /usr/include/node, or an official tarball): node-gyp must not need the network.
      const prefix = path.dirname(path.dirname(process.execPath));
      if (process.env.npm_config_nodedir === undefined && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
        args.push(`--nodedir=${prefix}`);
      }
      try {
        execFileSync(process.execPath, args, { cwd: scratch, stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (e) {
        throw new Error(`building the test helper addon failed:\n${String((e as { stderr?: Buffer }).stderr)}`);
      }
      fs.mkdirSync(path.dirname(HELPER_PATH), { recursive: true });
      fs.renameSync(path.join(scratch, 'build', 'Release', 'mk_test_helper.node'), HELPER_PATH);
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  } finally {
    fs.rmdirSync(lock);
  }
}

/** The helper addon, built on first need. */
export function loadTestHelper(): TestHelper {
  if (!fresh()) build();
  return require(HELPER_PATH) as TestHelper;
}

/** Two connected FdHandles of `binding` over an AF_UNIX socketpair from the helper. */
export function handlePair(binding: NativeBinding): [FdHandle, FdHandle] {
  const helper = loadTestHelper();
  const [x, y] = helper.socketpair();
  try {
    return [binding.dupFd(x), binding.dupFd(y)];
  } finally {
    helper.close(x);
    helper.close(y);
  }
}

/** `handle` with some methods replaced, for failures and fakes a socketpair cannot produce. */
export function patchHandle(handle: FdHandle, overrides: Partial<FdHandle>): FdHandle {
  return {
    get fd() {
      return handle.fd;
    },
    read: (buffer, offset, length) => handle.read(buffer, offset, length),
    write: (buffer, offset, length) => handle.write(buffer, offset, length),
    shutdownWrite: () => handle.shutdownWrite(),
    socketError: () => handle.socketError(),
    watch: (events, callback) => handle.watch(events, callback),
    unwatch: () => handle.unwatch(),
    close: () => handle.close(),
    ...overrides,
  };
}

/** Whether `fd` is an open file descriptor of this process. */
export function fdIsOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}
