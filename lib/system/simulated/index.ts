/**
 * SimulatedSystem: the `System` interface over an in-memory multikernel kernel (kernel.ts) that
 * follows the kernel sources at the level of paths, bytes, flags and errno. The rules, their
 * sources and the fault-injection step names are listed in docs/kernel-interface.md.
 *
 * State lives in memory (nothing on disk), or in a state directory shared by several processes
 * (successive `mkctl` runs, a daemon and its clients): every call then takes the state lock, loads
 * the JSON state, acts, and saves it atomically (state-dir.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MultikernelError, errnoMessage, systemError } from '../../errors';
import { MULTIKERNEL_MOUNT_POINT } from '../../uapi';
import type {
  DeviceHandle,
  FileStat,
  KexecFileLoadArgs,
  LockHandle,
  LockOptions,
  System,
  VsockConnectOptions,
  VsockListenOptions,
  VsockServer,
  VsockStream,
} from '../system';
import type { SimChannels, SimInstanceInfo } from './channels';
import { FaultInjector } from './faults';
import { type ImageFile, Kernel, KErr, PAGE_SIZE } from './kernel';
import { type Locks, MemoryLocks } from './lockfile';
import * as render from './render';
import { DEFAULT_TOPOLOGY, HOST_DIRS, initialState, type SimState, type SimTopology } from './state';
import { StateDir } from './state-dir';
import { SimKernelLog } from './kmsg';
import { sysfsLookup } from './sysfs';

export type { SimCpu, SimTopology } from './state';
export { SimStateError, type SimStateErrorCode } from './state-dir';

export interface SimulatedSystemOptions {
  /**
   * share the simulated host with other processes through this directory (default: in memory).
   * Created with mode 0700; an existing one must belong to this user and be writable by no one
   * else (SimStateError ERR_MK_SIM_STATE_DIR otherwise).
   */
  stateDir?: string;
  /** CPUs (physical id, NUMA node, optionally package and core), RAM and NUMA nodes; used when the state is created */
  topology?: SimTopology;
  /** which kernel image format kexec accepts (default 'x86_64': ELF vmlinux; 'arm64': Image) */
  arch?: 'x86_64' | 'arm64';
  /** a kernel without multikernel support (no kernfs, no multikernel kexec/reboot) */
  stockKernel?: boolean;
  /** how long a graceful halt waits for a spawn that does not answer (default 30000) */
  haltTimeoutMs?: number;
  /** how long a resource change to a running instance waits for its ack (default 10000) */
  resourceAckTimeoutMs?: number;
  /** notify() resolves true, as under a supervisor that set $NOTIFY_SOCKET (default false) */
  notifyTarget?: boolean;
  /**
   * notify() also sends the state to the real $NOTIFY_SOCKET (sd_notify through the native addon)
   * and resolves with its answer (default false). The kernel is simulated, the supervisor is not:
   * `mkctl daemon --simulate` under systemd must still tell systemd it is ready, alive and
   * stopping, or systemd kills it for a missed READY=1 or watchdog ping.
   */
  forwardNotify?: boolean;
  /**
   * Host directories (of /run, /var/run, /tmp) this process may not write to, as for a user who
   * is not root: createExclusive and unlink there fail EACCES (default none). Per process: another
   * process on the same state directory has its own.
   */
  readOnlyHostDirs?: string[];
  /**
   * Render `overlays/tx_N/reason` (default false): a file no public overlay.c creates, which
   * kmorph reads when it exists. It holds `<ERRNO>: <message>` of the operation that failed the
   * transaction, or an empty line (docs/kernel-interface.md, "Overlays").
   */
  txReason?: boolean;
  /**
   * Forget applied transactions beyond this many, oldest first (default: keep them all, as the
   * kernel does: a tx_N stays until it is rolled back). Not a kernel rule: for long soak runs
   * (scripts/soak.ts), where the records of thousands of transactions would otherwise be what
   * grows.
   */
  keepAppliedTransactions?: number;
}

const M = MULTIKERNEL_MOUNT_POINT;

/** How many notify() states the simulated host keeps (the newest). */
export const NOTIFIED_KEPT = 100;

const KERNFS_FILE_MODE: Record<string, number> = { id: 0o444, status: 0o444, device_tree: 0o444, instance: 0o444, resources: 0o444, dtbo: 0o444 };
const TX_FILES = ['id', 'status', 'instance', 'resources', 'dtbo'];
const HOST_FILE_MODE = 0o644;
const INSTANCE_FILES = ['id', 'status', 'device_tree'];

type Node =
  | { kind: 'dir'; mode?: number; entries: () => string[]; symlink?: boolean }
  | { kind: 'file'; mode: number; size?: number; mtimeMs?: number; read?: () => Buffer; write?: (data: Uint8Array) => Promise<number> }
  | { kind: 'char'; mode: number };

/** the sequence number the next kernel log record gets */
function logEnd(s: SimState): number {
  return (s.dmesgDropped ?? 0) + s.dmesg.length;
}

/** The host directory holding `p`, when `p` is a file name directly in one. */
/**
 * Files of this machine's processes that the simulated kernel shows as they are (chosen: the
 * processes sharing a simulated host are this machine's, so /proc/PID/stat is the real one; the
 * library reads it, with the boot id, to tell whether the writer of a lock file it left still runs).
 */
const REAL_PROC = /^\/proc\/(?:self|\d+)\/stat$|^\/proc\/sys\/kernel\/random\/boot_id$/;

function realProcFile(p: string): Node | undefined {
  if (!REAL_PROC.test(p)) return undefined;
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(p);
  } catch {
    return undefined; // no such process: ENOENT, as procfs
  }
  return { kind: 'file', mode: 0o444, read: () => bytes };
}

function hostDirOf(p: string): string | undefined {
  const dir = path.posix.dirname(p);
  return dir in HOST_DIRS ? dir : undefined;
}

export class SimulatedSystem implements System {
  readonly kind = 'simulated' as const;
  /** make any step fail, stall or stop half way (docs/kernel-interface.md lists the step names) */
  readonly faults = new FaultInjector();

  readonly #opts: Required<Omit<SimulatedSystemOptions, 'stateDir' | 'topology' | 'readOnlyHostDirs' | 'keepAppliedTransactions'>> & Pick<SimulatedSystemOptions, 'keepAppliedTransactions'>;
  readonly #readOnlyHostDirs: ReadonlySet<string>;
  readonly #topology: SimTopology;
  #memState: SimState | undefined;
  readonly #stateDir: StateDir | undefined;
  readonly #locks: Locks;
  readonly #fds = new Map<number, ImageFile>();
  #nextFd = 3;
  #queue: Promise<unknown> = Promise.resolve();
  #channelsMade: SimChannels | undefined;
  /** kernel log readers waiting for a record */
  readonly #logWaiters = new Set<() => void>();
  /** with a state directory: wakes the waiting readers when another process saves the state */
  #logWatch: fs.FSWatcher | undefined;

  constructor(options: SimulatedSystemOptions = {}) {
    this.#opts = {
      arch: options.arch ?? 'x86_64',
      stockKernel: options.stockKernel ?? false,
      haltTimeoutMs: options.haltTimeoutMs ?? 30_000,
      resourceAckTimeoutMs: options.resourceAckTimeoutMs ?? 10_000,
      notifyTarget: options.notifyTarget ?? false,
      forwardNotify: options.forwardNotify ?? false,
      txReason: options.txReason ?? false,
      keepAppliedTransactions: options.keepAppliedTransactions,
    };
    this.#readOnlyHostDirs = new Set((options.readOnlyHostDirs ?? []).map((d) => path.posix.normalize(d).replace(/(.)\/$/, '$1')));
    this.#topology = options.topology ?? DEFAULT_TOPOLOGY;
    if (options.stateDir !== undefined) {
      this.#stateDir = new StateDir(options.stateDir);
      this.#locks = this.#stateDir.locks;
    } else {
      this.#memState = initialState(this.#topology);
      this.#locks = new MemoryLocks();
    }
  }

  /** The console, vsock and agent side, made on first use (a command that reads files needs none of it). */
  get #channels(): SimChannels {
    if (this.#channelsMade === undefined) {
      const { createSimChannels } = require('./channels-impl') as typeof import('./channels-impl');
      this.#channelsMade = createSimChannels({
        faults: this.faults,
        instanceById: async (id) => this.#withState(false, (k) => this.#info(k.s, id)),
      });
    }
    return this.#channelsMade;
  }

  #info(s: SimState, id: number): SimInstanceInfo | undefined {
    const i = s.instances.find((x) => x.id === id);
    return i && { id: i.id, name: i.name, status: i.status, hung: i.hung === true, cmdline: i.image?.cmdline ?? '' };
  }

  // ------------------------------------------------------------------ state handling

  /**
   * Runs `fn` on the current state, after this process's earlier calls (an in-process queue);
   * when `write`, under the cross-process lock of the state directory, saving the state
   * afterwards. Kernel errors become system errors of `syscall`. A call that only reads takes no
   * lock: state.json is replaced whole by rename (StateDir.save), so a reader finds the state
   * before a write or after it, as under the lock, and what a reading call changes is never
   * saved. (Each read took a flock pair before: 88 of them for one `mkctl status`.)
   */
  async #withState<T>(write: boolean, fn: (k: Kernel) => Promise<T> | T, syscall = 'sim', errPath?: string): Promise<T> {
    const run = async (): Promise<T> => {
      const dir = this.#stateDir;
      const release = dir && write ? await dir.lock() : () => undefined;
      try {
        const s = dir?.load(() => initialState(this.#topology)) ?? this.#memState!;
        const k = new Kernel(s, {
          faults: this.faults,
          arch: this.#opts.arch,
          stockKernel: this.#opts.stockKernel,
          haltTimeoutMs: this.#opts.haltTimeoutMs,
          resourceAckTimeoutMs: this.#opts.resourceAckTimeoutMs,
          ...(this.#opts.keepAppliedTransactions !== undefined ? { keepAppliedTransactions: this.#opts.keepAppliedTransactions } : {}),
          sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
          later: (step) => this.#withState(true, step),
          events: {
            started: (id) => this.#channels.instanceStarted(id),
            stopped: (id, how) => this.#channels.instanceStopped(id, how),
          },
        });
        const logged = logEnd(s);
        // A refused call may still have changed the state (a kernel does not roll back either).
        const outcome = await Promise.resolve()
          .then(() => fn(k))
          .then((value) => ({ value }), (error: unknown) => ({ error }));
        if (write) dir?.save(s);
        if (logEnd(s) !== logged) this.#wakeLogReaders();
        if ('error' in outcome) throw outcome.error instanceof KErr ? systemError(outcome.error.code, syscall, errPath) : outcome.error;
        return outcome.value;
      } finally {
        release();
      }
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  // ------------------------------------------------------------------ the file tree

  #lookup(k: Kernel, p: string): Node | undefined {
    const s = k.s;
    const stock = this.#opts.stockKernel;
    const fixed: Record<string, Node> = {
      '/proc/cpuinfo': { kind: 'file', mode: 0o444, read: () => Buffer.from(render.cpuinfo(s, this.#opts.arch)) },
      '/proc/iomem': { kind: 'file', mode: 0o400, read: () => Buffer.from(render.iomem(s)) },
      '/proc/filesystems': { kind: 'file', mode: 0o444, read: () => Buffer.from(render.filesystems(stock)) },
      '/sys/fs': { kind: 'dir', entries: () => (stock ? [] : ['multikernel']) },
    };
    if (fixed[p]) return fixed[p];
    const sys = sysfsLookup(s, this.#opts.arch, p);
    if (sys) return sys;
    const hostMode = HOST_DIRS[p];
    if (hostMode !== undefined) {
      return { kind: 'dir', mode: hostMode, entries: () => Object.keys(s.hostFiles).filter((f) => hostDirOf(f) === p).map((f) => path.posix.basename(f)) };
    }
    const hostFile = s.hostFiles[p];
    if (hostFile) return { kind: 'file', mode: HOST_FILE_MODE, mtimeMs: hostFile.createdMs, read: () => Buffer.from(hostFile.data ?? '', 'base64') };
    const real = realProcFile(p);
    if (real !== undefined) return real;
    if (stock) return undefined;
    if (p === '/proc/kimage') return { kind: 'file', mode: 0o444, read: () => Buffer.from(render.kimage(s)) };
    if (p === '/dev/mktty') return { kind: 'char', mode: 0o600 };
    if (p === M) return { kind: 'dir', entries: () => (s.mounted ? ['device_tree', 'instances', 'overlays'] : []) };
    if (!s.mounted || !p.startsWith(`${M}/`)) return undefined;
    const parts = p.slice(M.length + 1).split('/');
    if (parts.length === 1) {
      if (parts[0] === 'device_tree') {
        return { kind: 'file', mode: 0o644, size: 1024 * 1024, read: () => render.poolDtb(s), write: async (d) => k.writeBaseline(d) };
      }
      if (parts[0] === 'instances') return { kind: 'dir', entries: () => s.instances.map((i) => i.name) };
      if (parts[0] === 'overlays') return { kind: 'dir', entries: () => ['new', ...s.txs.map((t) => `tx_${t.id}`)] };
      return undefined;
    }
    if (parts[0] === 'instances') {
      const inst = k.instanceByName(parts[1]!);
      if (!inst) return undefined;
      if (parts.length === 2) return { kind: 'dir', entries: () => INSTANCE_FILES.slice() };
      if (parts.length > 3) return undefined;
      const reads: Record<string, () => Buffer> = {
        id: () => Buffer.from(`${inst.id}\n`),
        status: () => Buffer.from(`${inst.status}\n`),
        device_tree: () => render.instanceDtb(inst),
      };
      const read = reads[parts[2]!] as (() => Buffer) | undefined;
      return read && { kind: 'file', mode: KERNFS_FILE_MODE[parts[2]!]!, read };
    }
    if (parts[0] === 'overlays') {
      if (parts.length === 2 && parts[1] === 'new') {
        // No atomic_write_len: kernfs_fop_write_iter hands the handler at most PAGE_SIZE bytes
        // and write(2) returns what the handler returned, a short count (fs/kernfs/file.c).
        return { kind: 'file', mode: 0o200, write: async (d) => k.writeOverlay(d.subarray(0, PAGE_SIZE)) };
      }
      const tx = s.txs.find((t) => `tx_${t.id}` === parts[1]);
      if (!tx) return undefined;
      if (parts.length === 2) return { kind: 'dir', entries: () => (this.#opts.txReason ? [...TX_FILES, 'reason'] : TX_FILES.slice()) };
      if (parts.length > 3) return undefined;
      const reads: Record<string, () => Buffer> = {
        ...(this.#opts.txReason && { reason: () => Buffer.from(tx.reason === undefined ? '\n' : `${tx.reason}: ${errnoMessage(tx.reason)}\n`) }),
        id: () => Buffer.from(`${tx.id}\n`),
        status: () => Buffer.from(`${tx.status}\n`),
        instance: () => Buffer.from(`${tx.targetPath}\n`),
        resources: () => Buffer.from(`${tx.resources}\n`),
        dtbo: () => Buffer.from(tx.dtbo, 'base64'),
      };
      const read = reads[parts[2]!] as (() => Buffer) | undefined;
      return read && { kind: 'file', mode: 0o444, read };
    }
    return undefined;
  }

  async #fsCall<T>(op: string, syscall: string, p: string, write: boolean, fn: (k: Kernel, n: Node | undefined, p: string) => Promise<T> | T): Promise<T> {
    const norm = path.posix.normalize(p).replace(/(.)\/$/, '$1');
    await this.faults.hit(op, { path: norm, syscall });
    return this.#withState(
      write,
      (k) => fn(k, this.#lookup(k, norm), norm),
      syscall,
      p,
    );
  }

  // ------------------------------------------------------------------ System: files

  async readFile(p: string): Promise<Buffer> {
    const n = await this.#fsCall('read', 'open', p, false, (_k, n) => {
      if (!n) throw new KErr('ENOENT');
      if (n.kind === 'dir') throw new KErr('EISDIR');
      if (n.kind === 'char') return undefined;
      // kernfs files without a read op open fine for root and then fail the read (kernfs.c)
      if (!n.read) throw new KErr('EINVAL');
      return n.read();
    });
    return n ?? this.#onMktty((h) => h.read());
  }

  /** open /dev/mktty, one call, close (outside the state lock: the channels query the core) */
  async #onMktty<T>(fn: (h: DeviceHandle) => Promise<T>): Promise<T> {
    const h = await this.#channels.openMktty();
    try {
      return await fn(h);
    } finally {
      await h.close();
    }
  }

  async writeFile(p: string, data: Uint8Array): Promise<number> {
    const count = await this.#fsCall('write', 'write', p, true, async (_k, n, norm) => {
      if (!n) throw new KErr('ENOENT');
      if (n.kind === 'dir') throw new KErr('EISDIR');
      if (n.kind === 'char') return undefined;
      if (n.write) return n.write(data);
      // procfs/sysfs read-only files refuse the open for writing; kernfs files without a write op fail the write
      throw new KErr(norm.startsWith(`${M}/`) ? 'EINVAL' : 'EACCES');
    });
    const written = count ?? (await this.#onMktty((h) => h.write(data)));
    if (written !== data.length) {
      // As LinuxSystem: the rest is not sent, because these files take their data in one write.
      throw new MultikernelError(
        'ERR_MK_SHORT_WRITE',
        `short write to ${p}: the kernel took ${written} of ${data.length} bytes in one write(2); ` +
          'the rest was not sent, because this file must receive its data in a single write',
        { details: { path: p, written, expected: data.length } },
      );
    }
    return written;
  }

  async readdir(p: string): Promise<string[]> {
    return this.#fsCall('readdir', 'scandir', p, false, (_k, n) => {
      if (!n) throw new KErr('ENOENT');
      if (n.kind !== 'dir') throw new KErr('ENOTDIR');
      return n.entries();
    });
  }

  async mkdir(p: string): Promise<void> {
    return this.#fsCall('mkdir', 'mkdir', p, false, (k, n, norm) => {
      if (n) throw new KErr('EEXIST');
      const parent = this.#lookup(k, path.posix.dirname(norm));
      if (parent?.kind === 'dir' && norm.startsWith(`${M}/`)) throw new KErr('EPERM'); // mk_kernfs_mkdir
      throw new KErr(parent ? 'EACCES' : 'ENOENT');
    });
  }

  async rmdir(p: string): Promise<void> {
    return this.#fsCall('rmdir', 'rmdir', p, true, async (k, n, norm) => {
      if (!n) throw new KErr('ENOENT');
      if (n.kind !== 'dir') throw new KErr('ENOTDIR');
      if (norm === M) throw new KErr(k.s.mounted ? 'EBUSY' : 'EACCES');
      const tx = /^\/sys\/fs\/multikernel\/overlays\/tx_(\d+)$/.exec(norm);
      if (!tx) throw new KErr(norm.startsWith(`${M}/`) ? 'EPERM' : 'EACCES');
      await k.rmdirTx(k.s.txs.find((t) => t.id === Number(tx[1]))!);
    });
  }

  async stat(p: string): Promise<FileStat> {
    return this.#fsCall('stat', 'stat', p, false, (_k, n) => {
      if (!n) throw new KErr('ENOENT');
      // lstat(2), as LinuxSystem's: a link is reported as one
      if (n.kind === 'dir' && n.symlink) return { type: 'symlink', mode: 0o777, size: 0, mtimeMs: 0 };
      if (n.kind === 'dir') return { type: 'directory', mode: n.mode ?? 0o755, size: 0, mtimeMs: 0 };
      if (n.kind === 'char') return { type: 'char-device', mode: n.mode, size: 0, mtimeMs: 0 };
      return { type: 'file', mode: n.mode, size: n.size ?? 0, mtimeMs: n.mtimeMs ?? 0 };
    });
  }

  /**
   * Host files only: a file in /run, /var/run or /tmp, with `data` when given (VFS lookup_open; a
   * kernfs, sysfs or procfs directory has no ->create: EACCES).
   */
  async createExclusive(p: string, data?: Uint8Array): Promise<void> {
    return this.#fsCall('create', 'open', p, true, (k, n, norm) => {
      if (n) throw new KErr('EEXIST');
      const parent = this.#lookup(k, path.posix.dirname(norm));
      if (!parent) throw new KErr('ENOENT');
      if (parent.kind !== 'dir') throw new KErr('ENOTDIR');
      const dir = hostDirOf(norm);
      if (dir === undefined || this.#readOnlyHostDirs.has(dir)) throw new KErr('EACCES');
      k.s.hostFiles[norm] = { createdMs: Date.now(), ...(data !== undefined && data.length > 0 ? { data: Buffer.from(data).toString('base64') } : {}) };
    });
  }

  /** Host files only; kernfs has no ->unlink (vfs_unlink: EPERM); elsewhere EACCES (simplification). */
  async unlink(p: string): Promise<void> {
    return this.#fsCall('unlink', 'unlink', p, true, (k, n, norm) => {
      if (!n) throw new KErr('ENOENT');
      if (n.kind === 'dir') throw new KErr('EISDIR');
      const dir = hostDirOf(norm);
      if (!(norm in k.s.hostFiles)) throw new KErr(norm.startsWith(`${M}/`) ? 'EPERM' : 'EACCES');
      if (this.#readOnlyHostDirs.has(dir!)) throw new KErr('EACCES');
      delete k.s.hostFiles[norm];
    });
  }

  async openDevice(p: string): Promise<DeviceHandle> {
    await this.#fsCall('open.device', 'open', p, false, (_k, n) => {
      if (n?.kind !== 'char') throw new KErr(n ? 'ENXIO' : 'ENOENT');
    });
    return this.#channels.openMktty();
  }

  async openKernelLog(): Promise<DeviceHandle> {
    await this.faults.hit('open.kmsg', { path: '/dev/kmsg', syscall: 'open' });
    const end = await this.#withState(false, (k) => logEnd(k.s));
    return new SimKernelLog(
      {
        record: (seq) =>
          this.#withState(false, (k) => {
            const first = k.s.dmesgDropped ?? 0;
            return { first, text: k.s.dmesg[seq - first] };
          }),
        subscribe: (wake) => this.#subscribeLog(wake),
      },
      end,
    );
  }

  #subscribeLog(wake: () => void): () => void {
    this.#logWaiters.add(wake);
    if (this.#stateDir !== undefined && this.#logWatch === undefined) {
      // another process's log lines arrive with its save (a rename in the directory)
      this.#logWatch = fs.watch(this.#stateDir.dir, () => this.#wakeLogReaders());
      /* c8 ignore next 4 -- inotify failing on a watched directory (it was removed): drop the watch, the readers look again and subscribe anew */
      this.#logWatch.on('error', () => {
        this.#logWatch = undefined;
        this.#wakeLogReaders();
      });
    }
    return () => {
      this.#logWaiters.delete(wake);
      if (this.#logWaiters.size === 0) {
        this.#logWatch?.close();
        this.#logWatch = undefined;
      }
    };
  }

  #wakeLogReaders(): void {
    for (const wake of [...this.#logWaiters]) wake();
  }

  // ------------------------------------------------------------------ System: kexec and reboot

  async openImage(p: string): Promise<number> {
    await this.faults.hit('open.image', { path: p, syscall: 'open' });
    const bytes = await fs.promises.readFile(p);
    return this.#addFd(path.basename(p), bytes);
  }

  async openImageBytes(name: string, bytes: Uint8Array): Promise<number> {
    await this.faults.hit('open.image', { path: name, syscall: 'memfd_create' });
    return this.#addFd(name, new Uint8Array(bytes));
  }

  #addFd(name: string, bytes: Uint8Array): number {
    const fd = this.#nextFd++;
    this.#fds.set(fd, { name, bytes });
    return fd;
  }

  async closeImage(fd: number): Promise<void> {
    if (!this.#fds.delete(fd)) throw systemError('EBADF', 'close');
  }

  async kexecFileLoad(args: KexecFileLoadArgs): Promise<void> {
    return this.#withState(true, (k) => k.kexecFileLoad(args, this.#fds), 'kexec_file_load');
  }

  async reboot(cmd: number, mkId: number): Promise<void> {
    const after = await this.#withState(true, (k) => k.reboot(cmd, mkId), 'reboot');
    await after?.();
  }

  async mountMultikernel(): Promise<void> {
    await this.faults.hit('mount', { path: M, syscall: 'mount' });
    return this.#withState(true, (k) => {
      if (this.#opts.stockKernel) throw new KErr('ENODEV');
      if (k.s.mounted) throw new KErr('EBUSY');
      k.s.mounted = true;
    }, 'mount', M);
  }

  async umountMultikernel(): Promise<void> {
    await this.faults.hit('umount', { path: M, syscall: 'umount2' });
    return this.#withState(true, (k) => {
      if (!k.s.mounted) throw new KErr('EINVAL');
      k.s.mounted = false;
    }, 'umount2', M);
  }

  // ------------------------------------------------------------------ System: locks, channels, notify

  async lock(p: string, options: LockOptions = {}): Promise<LockHandle> {
    await this.faults.hit('lock', { path: p, syscall: 'flock' });
    const release = await this.#locks.acquire(`user:${p}`, {
      exclusive: options.exclusive ?? true,
      wait: options.wait ?? true,
      timeoutMs: options.timeoutMs,
      signal: options.signal,
      errorPath: p,
    });
    let held = true;
    return {
      release: async () => {
        if (held) release();
        held = false;
      },
    };
  }

  async vsockConnect(options: VsockConnectOptions): Promise<VsockStream> {
    return this.#channels.vsockConnect(options);
  }

  async vsockListen(options: VsockListenOptions): Promise<VsockServer> {
    return this.#channels.vsockListen(options);
  }

  async notify(state: string): Promise<boolean> {
    await this.faults.hit('notify', { syscall: 'sendmsg' });
    await this.#withState(true, (k) => {
      k.s.notified.push(state);
      // a daemon sends WATCHDOG=1 forever: the state file keeps the newest ones only
      if (k.s.notified.length > NOTIFIED_KEPT) k.s.notified.splice(0, k.s.notified.length - NOTIFIED_KEPT);
    });
    if (this.#opts.forwardNotify) return (await import('../../binding')).loadBinding().sdNotify(state);
    return this.#opts.notifyTarget;
  }

  // ------------------------------------------------------------------ control, beyond System

  /** The simulated kernel log, oldest first (the lines the real kernel prints to dmesg). */
  async dmesg(): Promise<string[]> {
    return this.#withState(false, (k) => k.s.dmesg.slice());
  }

  /** The states passed to notify(), oldest first (the newest NOTIFIED_KEPT). */
  async notified(): Promise<string[]> {
    return this.#withState(false, (k) => k.s.notified.slice());
  }

  /**
   * The spawn kernel panics. With panic_timeout -1, the spawn default, "reboot on panic" is the
   * halt to the pool (arch/x86/multikernel/spawn.c mk_spawn_reboot_init; arm64 the same): the
   * console shows the panic, the host gets MK_SYS_HALTED and the status becomes 'loaded' without
   * a halt from the host. The image stays loaded; vsock peers are sent nothing.
   */
  async panic(id: number): Promise<void> {
    await this.#withState(true, (k) => k.halted(this.#active(k, id)));
    this.#channels.instanceStopped(id, 'panic');
  }

  /**
   * The spawn kernel hangs (spins or wedges): the status stays 'active', the console and vsock
   * fall silent, nothing is answered (no vsock reset either), a graceful halt times out after
   * `haltTimeoutMs`, a start is refused EBUSY; a forced halt recovers it.
   */
  async hang(id: number): Promise<void> {
    await this.#withState(true, (k) => {
      this.#responsive(k, id).hung = true;
    });
    this.#channels.instanceHung(id);
  }

  /** The spawn runs poweroff: it reports MK_SYS_HALTED and the host marks it 'loaded'. */
  async poweroffFromInside(id: number): Promise<void> {
    await this.#withState(true, (k) => k.halted(this.#responsive(k, id)));
    this.#channels.instanceStopped(id, 'poweroff');
  }

  /** an active instance whose kernel still runs */
  #responsive(k: Kernel, id: number) {
    const inst = this.#active(k, id);
    if (inst.hung) throw new RangeError(`instance ${id} hangs: it can do nothing by itself`);
    return inst;
  }

  #active(k: Kernel, id: number) {
    const inst = k.instanceById(id);
    if (inst?.status !== 'active') throw new RangeError(`instance ${id} is not active`);
    return inst;
  }

  /** Closes the channels; a state directory is kept. */
  async dispose(): Promise<void> {
    await this.#channelsMade?.close();
    this.#fds.clear();
  }
}
