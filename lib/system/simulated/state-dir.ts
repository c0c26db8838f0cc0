/**
 * The state directory of a simulated host shared between processes (successive `mkctl` runs, a
 * daemon and its clients). Every call takes the state lock, loads, acts, saves, releases:
 *
 *   <dir>/state.json        the SimState (mode 0600), replaced whole: a temp file with an
 *                           unguessable name created O_EXCL, fsync, rename, fsync of the directory
 *   <dir>/locks/protocol    "flock" or "files": how this directory is locked, fixed at creation
 *   <dir>/locks/...         the state lock and the locks of SimulatedSystem.lock() (lockfile.ts)
 *
 * The directory is created with mode 0700. An existing one is used as it is when it belongs to
 * this process's user and nobody else can write to it; otherwise it is refused, not chmod'ed: a
 * directory given by the user may be one whose mode matters to them ($HOME, a shared folder), and
 * anyone who can write there could replace the state or plant lock files. Read permission for
 * others is tolerated: the files in it are 0600.
 */
/** node:crypto, loaded when a state is first saved (a read-only mkctl command never needs it) */
const randomBytes = (n: number): Buffer => (require('node:crypto') as typeof import('node:crypto')).randomBytes(n);
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadBinding } from '../../binding';
import { FileLocks, type FlockBinding, FlockLocks, type Locks } from './lockfile';
import type { SimState } from './state';
import { type StateShapeError, checkStateShape } from './state-check';

/** The state version this code reads and writes (a type error here when the state's changes). */
const STATE_VERSION: SimState['version'] = 1;

/**
 * Set to "files" to use the lock files even where the native addon loads, as a host without the
 * addon does. For tests: it applies to directories created by such a process.
 */
export const FORCE_FILE_LOCKS_ENV = 'MULTIKERNEL_SIM_LOCKS';

export type SimStateErrorCode =
  /** state.json cannot be parsed, or is not a state object */
  | 'ERR_MK_SIM_STATE_CORRUPT'
  /** state.json has a version this code does not read */
  | 'ERR_MK_SIM_STATE_VERSION'
  /** the directory cannot be used safely or consistently (owner, permissions, lock protocol) */
  | 'ERR_MK_SIM_STATE_DIR';

/** A state directory or state file the simulator cannot use; the message says what to do. */
export class SimStateError extends Error {
  constructor(
    readonly code: SimStateErrorCode,
    /** the file or directory concerned */
    readonly path: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
  }
  override get name(): string {
    return 'SimStateError';
  }
}

const TEMP = /^\.state\.json\.[0-9a-f]+\.tmp$/;

export class StateDir {
  readonly statePath: string;
  readonly locks: Locks;
  /** the text of state.json the last load found well formed */
  #checked: string | undefined;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.statSync(dir);
    const uid = process.geteuid!();
    if (st.uid !== uid) {
      throw new SimStateError('ERR_MK_SIM_STATE_DIR', dir, `the simulator's state directory ${dir} belongs to uid ${st.uid}, not to this process's user (uid ${uid}), who could then find the state changed under them: use a directory of your own`);
    }
    if ((st.mode & 0o022) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new SimStateError('ERR_MK_SIM_STATE_DIR', dir, `the simulator's state directory ${dir} is writable by others (mode ${mode}), who could replace the state or block its lock: run chmod 700 ${dir}, or use a new directory (it is created with mode 0700)`);
    }
    this.statePath = path.join(dir, 'state.json');
    this.locks = openLocks(path.join(dir, 'locks'));
  }

  /** The state lock, exclusive, waiting as long as it takes. */
  lock(): Promise<() => void> {
    return this.locks.acquire('state', { exclusive: true, wait: true, errorPath: this.statePath });
  }

  /**
   * The saved state, or `fresh()` when there is none yet: under the state lock for a call that
   * writes; without it for one that only reads (save() replaces the file whole, by rename).
   */
  load(fresh: () => SimState): SimState {
    let text: string;
    try {
      text = fs.readFileSync(this.statePath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return fresh();
      throw e;
    }
    const remedy = 'remove it to start from an empty simulated host, or restore a backup';
    let state: unknown;
    try {
      state = JSON.parse(text);
    } catch (e) {
      throw new SimStateError('ERR_MK_SIM_STATE_CORRUPT', this.statePath, `the simulated host's state ${this.statePath} is not valid JSON (${(e as Error).message}; a truncated file?): ${remedy}`, { cause: e });
    }
    if (typeof state !== 'object' || state === null || Array.isArray(state)) {
      throw new SimStateError('ERR_MK_SIM_STATE_CORRUPT', this.statePath, `the simulated host's state ${this.statePath} is not a state object: ${remedy}`);
    }
    const version = (state as { version?: unknown }).version;
    if (version !== STATE_VERSION) {
      throw new SimStateError('ERR_MK_SIM_STATE_VERSION', this.statePath, `the simulated host's state ${this.statePath} has version ${JSON.stringify(version) ?? 'none'}, this multikernel reads version ${STATE_VERSION}: use the multikernel release that wrote it, or ${remedy}`);
    }
    // The same text as the last load passed: every simulated call loads the state, and most find
    // it unchanged.
    if (text !== this.#checked) {
      try {
        checkStateShape(state);
      } catch (e) {
        // (checkStateShape throws nothing but StateShapeError)
        throw new SimStateError('ERR_MK_SIM_STATE_CORRUPT', this.statePath, `the simulated host's state ${this.statePath} is not one this simulator wrote: ${(e as StateShapeError).message}: ${remedy}`, { cause: e });
      }
      this.#checked = text;
    }
    // Written before host files were modelled: the same version, with no host files.
    (state as Partial<SimState>).hostFiles ??= {};
    return state as SimState;
  }

  /**
   * Under the state lock: replaces state.json so that a reader, or a crash at any point, finds the
   * old state or the new one whole. Temp files left by a writer that died are removed first (none
   * can be in progress: writing takes the lock).
   */
  save(state: SimState): void {
    for (const name of fs.readdirSync(this.dir)) if (TEMP.test(name)) fs.rmSync(path.join(this.dir, name), { force: true });
    const temp = path.join(this.dir, `.state.json.${randomBytes(12).toString('hex')}.tmp`);
    const fd = fs.openSync(temp, 'wx', 0o600);
    try {
      fs.writeFileSync(fd, JSON.stringify(state));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, this.statePath);
    const dirFd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  }
}

/** flock(2) from the native addon, unless it does not load (or the test switch says so). */
function flockBinding(): FlockBinding | undefined {
  if (process.env[FORCE_FILE_LOCKS_ENV] === 'files') return undefined;
  try {
    return loadBinding();
  } catch {
    return undefined;
  }
}

/**
 * The locks of a directory, by the protocol recorded in it; the first process records its own.
 * A process with the addon follows a directory created with lock files; one without cannot take
 * part in flock(2), and is refused rather than left to lock alone.
 */
function openLocks(dir: string): Locks {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const binding = flockBinding();
  const file = path.join(dir, 'protocol');
  if (!fs.existsSync(file)) {
    const temp = path.join(dir, `.protocol.${randomBytes(12).toString('hex')}`);
    fs.writeFileSync(temp, binding ? 'flock\n' : 'files\n', { flag: 'wx', mode: 0o600 });
    try {
      fs.linkSync(temp, file); // complete when it appears; EEXIST when another process was first
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      fs.rmSync(temp, { force: true });
    }
  }
  const protocol = fs.readFileSync(file, 'utf8').trim();
  if (protocol === 'files') return new FileLocks(dir);
  if (protocol === 'flock' && binding) return new FlockLocks(dir, binding);
  const reason =
    protocol === 'flock'
      ? 'is locked with flock(2) by the processes that use it, and this one cannot load the native addon: run it from the same multikernel installation, or give it a state directory of its own'
      : `names an unknown lock protocol ${JSON.stringify(protocol)}: remove the state directory`;
  throw new SimStateError('ERR_MK_SIM_STATE_DIR', file, `${file} ${reason}`);
}
