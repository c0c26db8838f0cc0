/**
 * The simulator's locks, with flock(2)'s meaning: shared or exclusive, try or wait (timeout,
 * AbortSignal), given up when the holder's process dies, never taken away from a live holder.
 * They serve the state lock of a state directory and SimulatedSystem.lock().
 *
 * - MemoryLocks: an in-memory simulated host; nothing touches the disk.
 * - FlockLocks: a state directory, when the native addon loads: flock(2) on <dir>/<hash>.lock.
 *   The files are never removed: unlinking a locked file would let a newcomer lock a fresh inode
 *   under the same name while the old holder still holds the unlinked one.
 * - FileLocks: the same directory without the addon (plain node:fs; described at the class).
 *
 * Which of the two a directory uses is fixed when it is created (state-dir.ts), so that processes
 * with and without the addon never lock the same directory in two different ways.
 */
/** node:crypto, loaded on first use (start-up of short mkctl commands) */
const crypto = (): typeof import('node:crypto') => require('node:crypto') as typeof import('node:crypto');
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeBinding } from '../../binding';
import { systemError } from '../../errors';

export interface LockRequest {
  exclusive: boolean;
  wait: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** path reported in errors */
  errorPath: string;
}

/** Returns the function that releases the lock (idempotent callers: call it once). */
export interface Locks {
  acquire(key: string, request: LockRequest): Promise<() => void>;
}

function wouldBlock(r: LockRequest): Error {
  return systemError('EWOULDBLOCK', 'flock', r.errorPath);
}

function timedOut(r: LockRequest): Error {
  return systemError('ETIMEDOUT', 'flock', r.errorPath);
}

/**
 * The file name of a lock: the first 20 hex digits of SHA-1 of its key. The state lock, which every
 * simulated call takes, has its name written out: loading node:crypto costs a short mkctl command
 * about 9 ms (test/simulated/state-locks.test.ts checks that the two agree).
 */
export function keyName(key: string): string {
  if (key === 'state') return STATE_KEY_NAME;
  return crypto().createHash('sha1').update(key).digest('hex').slice(0, 20);
}

export const STATE_KEY_NAME = 'aa4a5f8125f234182e2d';

// ---------------------------------------------------------------------------------- in memory

/** Locks of one in-memory host: a table in this process. */
export class MemoryLocks implements Locks {
  readonly #held = new Map<string, { exclusive: boolean; count: number }>();
  readonly #waiters = new Set<() => void>();

  async acquire(key: string, r: LockRequest): Promise<() => void> {
    const deadline = r.timeoutMs === undefined ? undefined : Date.now() + r.timeoutMs;
    for (;;) {
      r.signal?.throwIfAborted();
      const h = this.#held.get(key);
      if (h === undefined || (!h.exclusive && !r.exclusive)) {
        if (h) h.count += 1;
        else this.#held.set(key, { exclusive: r.exclusive, count: 1 });
        return () => this.#release(key);
      }
      if (!r.wait) throw wouldBlock(r);
      if (deadline !== undefined && Date.now() >= deadline) throw timedOut(r);
      await this.#change(deadline, r.signal);
    }
  }

  #release(key: string): void {
    const h = this.#held.get(key)!;
    if (--h.count === 0) this.#held.delete(key);
    for (const wake of [...this.#waiters]) wake();
  }

  /** Resolves at the next release, at the deadline, or when the signal aborts. */
  #change(deadline: number | undefined, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const timer = deadline === undefined ? undefined : setTimeout(wake, deadline - Date.now());
      const waiters = this.#waiters;
      function wake(): void {
        clearTimeout(timer);
        signal?.removeEventListener('abort', wake);
        waiters.delete(wake);
        resolve();
      }
      signal?.addEventListener('abort', wake);
      waiters.add(wake);
    });
  }
}

// ---------------------------------------------------------------------------------- flock(2)

export type FlockBinding = Pick<NativeBinding, 'flockTry' | 'flockWait' | 'flockUnlock'>;

export class FlockLocks implements Locks {
  constructor(
    readonly dir: string,
    private readonly binding: FlockBinding,
  ) {}

  async acquire(key: string, r: LockRequest): Promise<() => void> {
    r.signal?.throwIfAborted();
    const fd = fs.openSync(path.join(this.dir, `${keyName(key)}.lock`), fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
    try {
      await this.#take(fd, r);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    return () => {
      this.binding.flockUnlock(fd);
      fs.closeSync(fd);
    };
  }

  async #take(fd: number, r: LockRequest): Promise<void> {
    if (this.binding.flockTry(fd, r.exclusive)) return;
    if (!r.wait) throw wouldBlock(r);
    const pending = this.binding.flockWait(fd, r.exclusive, r.timeoutMs ?? -1);
    const cancel = (): void => pending.cancel();
    r.signal?.addEventListener('abort', cancel);
    const taken = await pending.promise.finally(() => r.signal?.removeEventListener('abort', cancel));
    // A cancelled wait resolves false (the addon lets go of a lock granted in the same instant).
    r.signal?.throwIfAborted();
    if (!taken) throw timedOut(r);
  }
}

// ---------------------------------------------------------------------------------- fallback

/**
 * Who holds a lock: "<pid>_<start time>_<pid namespace>_<boot id>", so that a dead holder is
 * recognised even after its pid was reused, and a holder that cannot be judged is left alone.
 */
let self: { id: string; pidns: string; boot: string } | undefined;

function whoAmI(): { id: string; pidns: string; boot: string } {
  if (!self) {
    const pidns = /\d+/.exec(fs.readlinkSync('/proc/self/ns/pid'))![0];
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
    self = { id: `${process.pid}_${procStat(process.pid)!.start}_${pidns}_${boot}`, pidns, boot };
  }
  return self;
}

/**
 * State letter and start time (field 22) of /proc/<pid>/stat; undefined when there is no such
 * process (ENOENT, or ESRCH when it exits while being read). hidepid cannot hide a holder: they
 * all run as this user (state-dir.ts refuses a directory that belongs to another).
 */
function procStat(pid: number): { state: string; start: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' '); // from field 3 on: comm may hold spaces
  return { state: fields[0]!, start: fields[19]! };
}

/**
 * True when the owner can no longer hold anything: it ran before this boot, or its process is
 * gone, a zombie, or a newer process with the same pid. An owner in another pid namespace cannot
 * be judged from here, and is never taken for dead. (No other user's process is involved: the
 * state directory is refused unless it belongs to this process's user, see state-dir.ts.)
 */
export function ownerGone(owner: string): boolean {
  const me = whoAmI();
  const [pid, start, pidns, boot] = owner.split('_');
  if (boot !== me.boot) return true;
  if (pidns !== me.pidns) return false;
  const stat = procStat(Number(pid));
  return stat === undefined || stat.start !== start || stat.state === 'Z';
}

const RELEASED = 'released';

/**
 * Locks from plain files, for a state directory when the addon does not load. No step depends on
 * time, so a slow or stopped holder is never taken for dead, and no removal can hit a live holder.
 *
 * Each key has a directory. Its exclusive part is a mutex whose holder is the owner of the
 * highest generation file g.<n>:
 * - g.<n> comes into being once, complete: link(2) of a finished temp file, which fails with
 *   EEXIST when the name exists, so of all the contenders for generation n exactly one wins.
 * - A contender links g.<n+1> only after reading g.<n> as over: "released" (its holder renamed
 *   that word over it) or owned by a process that is gone (ownerGone). Over is final, so a judgment
 *   cannot go stale; and the live holder of g.<n> is never over, however long it holds.
 * - The winner of g.<n+1> lists the directory once more: a higher generation means it linked from
 *   an outdated listing (its g.<n+1> had been removed as old) and it withdraws. Otherwise it holds,
 *   and removes the generations below its own. The highest file is thus never removed (only files
 *   below one's own are, and a withdrawing file is never the highest), which is what makes the
 *   second listing see any newer generation. A small directory is listed by one getdents64 call,
 *   and the kernel orders it against link and unlink in that directory: a consistent snapshot.
 * Shared holders are files r.<owner>.<nonce>, created under the mutex; an exclusive holder takes
 * the mutex, so no new reader can arrive, and waits until the live readers are gone. Files of
 * dead readers and temp files of dead owners have unique names that nobody creates again, so
 * removing them is safe. Waiting is polling (1 to 20 ms).
 */
export class FileLocks implements Locks {
  constructor(readonly dir: string) {}

  async acquire(key: string, r: LockRequest): Promise<() => void> {
    const dir = path.join(this.dir, keyName(key));
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const deadline = r.timeoutMs === undefined ? undefined : Date.now() + r.timeoutMs;
    const gen = await poll(() => this.#takeMutex(dir), r, deadline);
    if (!r.exclusive) {
      const reader = path.join(dir, `r.${whoAmI().id}.${crypto().randomBytes(8).toString('hex')}`);
      try {
        fs.closeSync(fs.openSync(reader, 'wx', 0o600));
      } finally {
        this.#releaseMutex(dir, gen);
      }
      return () => fs.rmSync(reader, { force: true });
    }
    try {
      await poll(() => (this.#readers(dir) === 0 ? true : undefined), r, deadline);
    } catch (e) {
      this.#releaseMutex(dir, gen);
      throw e;
    }
    return () => this.#releaseMutex(dir, gen);
  }

  /** One attempt: the generation now held, or undefined when a live holder has the mutex. */
  #takeMutex(dir: string): number | undefined {
    const top = highest(fs.readdirSync(dir));
    // A vanished g.<top> reads as over: whoever removed it holds a higher one, seen below.
    const text = top === 0 ? RELEASED : readOrUndefined(path.join(dir, `g.${top}`)) ?? RELEASED;
    if (text !== RELEASED && !ownerGone(text)) return undefined;
    const mine = top + 1;
    const file = path.join(dir, `g.${mine}`);
    const temp = this.#temp(dir, whoAmI().id);
    try {
      fs.linkSync(temp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      return undefined;
    } finally {
      fs.rmSync(temp, { force: true });
    }
    const names = fs.readdirSync(dir);
    if (highest(names) > mine) {
      fs.rmSync(file, { force: true });
      return undefined;
    }
    this.#sweep(dir, names, mine);
    return mine;
  }

  #releaseMutex(dir: string, gen: number): void {
    fs.renameSync(this.#temp(dir, RELEASED), path.join(dir, `g.${gen}`));
  }

  /** A finished file with this content, named after its (live) owner. */
  #temp(dir: string, text: string): string {
    const file = path.join(dir, `t.${whoAmI().id}.${crypto().randomBytes(8).toString('hex')}`);
    fs.writeFileSync(file, text, { flag: 'wx', mode: 0o600 });
    return file;
  }

  /** Under the mutex: removes older generations, and temp and reader files of dead owners. */
  #sweep(dir: string, names: string[], mine: number): void {
    for (const name of names) {
      const [kind, owner] = name.split('.');
      if (kind === 'g' ? Number(owner) < mine : ownerGone(owner ?? '')) fs.rmSync(path.join(dir, name), { force: true });
    }
  }

  /** Under the mutex: the number of live shared holders (the files of dead ones are removed). */
  #readers(dir: string): number {
    let live = 0;
    for (const name of fs.readdirSync(dir).filter((n) => n.startsWith('r.'))) {
      if (ownerGone(name.split('.')[1]!)) fs.rmSync(path.join(dir, name), { force: true });
      else live += 1;
    }
    return live;
  }
}

function highest(names: string[]): number {
  return Math.max(0, ...names.filter((n) => n.startsWith('g.')).map((n) => Number(n.slice(2))));
}

function readOrUndefined(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function poll<T>(attempt: () => T | undefined, r: LockRequest, deadline: number | undefined): Promise<T> {
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    r.signal?.throwIfAborted();
    const got = attempt();
    if (got !== undefined) return got;
    if (!r.wait) throw wouldBlock(r);
    if (deadline !== undefined && Date.now() >= deadline) throw timedOut(r);
    await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
  }
}
