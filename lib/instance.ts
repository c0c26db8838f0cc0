/**
 * An instance: a kernel of its own on CPUs and memory lent by the pool. Every verb reads the
 * kernel's status first and refuses with a typed error that says what to do, acts through one
 * system call or one overlay transaction, then reads the status again: the kernel is the truth,
 * nothing is cached across calls (docs/kernel-interface.md, "Instance states").
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { connectChannel, probeLiveness, type ConnectOptions, type Liveness, type ProbeOptions } from './channels';
import type { ConsoleStream } from './console';
import type { ExecFileOptions, ExecFileResult, ExecOptions, ExecProcess } from './exec-process';
import { MultikernelError, isSystemError } from './errors';
import { MK_INSTANCES, PROC_KIMAGE, instanceDir, parseKimage, type KimageRow } from './kernfs';
import { parseInstance, type InstanceTree, type TreeDevice } from './model/trees';
import type { OverlayOp } from './model/overlay';
import { allInstanceRegions, pciIds } from './readback';
import { selectCpus, wholePieces, type CpuCandidate } from './select';
import { explainNoSupport } from './support';
import type { System, VsockStream } from './system/system';
import type { HostArch } from './topology';
import type { TxResult } from './transaction';
import {
  COMMAND_LINE_SIZE,
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_UNLOAD,
  KEXEC_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
  kexecMkId,
} from './uapi';
import { formatBytes, parseBytes } from './units';

/** What `instances/<name>/status` reads. `empty` and `failed` exist in the kernel headers but no newest code path sets them. */
export type InstanceStatus = 'ready' | 'loaded' | 'active' | 'empty' | 'failed';

export type { ExecFileOptions, ExecFileResult } from './exec-process';

export interface InstanceInfo {
  name: string;
  id: number;
  status: InstanceStatus;
  /** physical ids */
  cpus: number[];
  memoryBytes: bigint;
  /** the instance's memory regions as /proc/iomem shows them (empty when it is unreadable) */
  memory: { base: bigint; size: bigint }[];
  devices: TreeDevice[];
  /** the loaded image as /proc/kimage shows it */
  image?: KimageRow;
}

export interface LoadOptions {
  /** initramfs: a path or the bytes */
  initrd?: string | Uint8Array;
  /** kernel command line (default "console=mktty0") */
  cmdline?: string;
  /**
   * Run as root, kernel and initrd files (and their directories) that a non-root user could have
   * written are refused, since whatever they hold runs with the machine's memory. true skips this.
   */
  trustFiles?: boolean;
  signal?: AbortSignal;
}

export interface StopOptions {
  /** halt by force when the graceful halt fails or times out (default false) */
  force?: boolean;
  /**
   * With `force`: how long to give the graceful halt before forcing, ms (default: the kernel's
   * own 30 s). Without `force` it only bounds how long this call waits.
   */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface StopResult {
  how: 'graceful' | 'forced';
}

export interface WaitOptions {
  timeoutMs?: number;
  /** how often the status is read (the kernel sends no change notification), ms; default 100 */
  intervalMs?: number;
  signal?: AbortSignal;
}

/**
 * A live change to an instance: the target state. CPUs by count (free pool CPUs are added, the
 * highest-numbered are given back) or by exact physical ids; memory by total size (the kernel
 * adds a new region or removes whole regions only); devices by the full list of PCI addresses.
 */
export interface InstanceUpdate {
  cpus?: number | { physical: number[] };
  memory?: bigint | number | string;
  devices?: string[];
}

/** What an Instance needs from its Host (lib/host.ts). */
export interface InstanceHost {
  readonly system: System;
  /** which images load: x86_64 and arm64 ones are checked and converted; others go to the kernel as given */
  readonly arch: HostArch;
  applyOverlay(ops: OverlayOp[], description: string, signal?: AbortSignal): Promise<TxResult>;
  /** one transaction whose operations `plan` makes under the writers' locks (none: nothing written) */
  applyPlannedOverlay(plan: () => Promise<OverlayOp[]>, description: string, signal?: AbortSignal): Promise<TxResult | undefined>;
  freePoolCpus(): Promise<CpuCandidate[]>;
  /** this process is about to ask for `to` (so a watcher reports the change as `requested`) */
  requested(id: number, to: InstanceStatus): void;
}

/** x86 memory_block_size: memory added to or removed from a running instance must be aligned to it. */
export const ACTIVE_MEMORY_ALIGN = 128n * 1024n * 1024n;

type Verb = 'load' | 'start' | 'stop' | 'unload' | 'delete' | 'update' | 'connect to' | 'exec in';

/** verbs that need a running instance: refused with ERR_MK_INSTANCE_NOT_ACTIVE otherwise */
const NEED_ACTIVE: readonly Verb[] = ['stop', 'connect to', 'exec in'];

const ADVICE: Record<Verb, Partial<Record<InstanceStatus, string>>> = {
  load: { active: 'it runs: stop() and unload() it first', loaded: 'a kernel is loaded already: unload() it first' },
  start: { active: 'it runs already', ready: 'no kernel is loaded: load() one first' },
  stop: { loaded: 'it is not running (halted, crashed or powered off: its kernel is still loaded)', ready: 'it is not running and has no kernel loaded' },
  unload: { active: 'it runs: stop() it first', ready: 'no kernel is loaded' },
  delete: { active: 'it runs: stop() and unload() it first, or delete({ force: true })', loaded: 'a kernel is loaded: unload() it first, or delete({ force: true })' },
  update: {},
  'connect to': { loaded: 'it is not running: start() it first', ready: 'it is not running: load() and start() it first' },
  'exec in': { loaded: 'it is not running: start() it first', ready: 'it is not running: load() and start() it first' },
};

function stateError(name: string, status: InstanceStatus, verb: Verb): MultikernelError {
  const code =
    NEED_ACTIVE.includes(verb)
      ? 'ERR_MK_INSTANCE_NOT_ACTIVE'
      : status === 'active'
        ? 'ERR_MK_INSTANCE_ACTIVE'
        : status === 'loaded'
          ? 'ERR_MK_INSTANCE_LOADED'
          : 'ERR_MK_INSTANCE_NOT_LOADED';
  const advice = ADVICE[verb][status] ?? `the kernel reports the status "${status}"`;
  return new MultikernelError(code, `cannot ${verb} instance "${name}" (status ${status}): ${advice}`, { details: { name, status, verb } });
}

function checkArgv(argv: unknown): void {
  if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string')) {
    throw new MultikernelError('ERR_MK_INVALID_SPEC', 'argv must be a non-empty array of strings');
  }
}

export function notFound(name: string, why = 'no such instance'): MultikernelError {
  return new MultikernelError('ERR_MK_INSTANCE_NOT_FOUND', `instance "${name}": ${why}`, { details: { name } });
}

async function text(system: System, path: string): Promise<string> {
  return (await system.readFile(path)).toString('utf8').trim();
}

/** Refuses, for root, a file or directory on its path that a non-root user could have written. */
async function checkTrusted(path: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  let p = path;
  for (;;) {
    const st = await fs.promises.stat(p);
    const sticky = st.isDirectory() && (st.mode & 0o1000) !== 0;
    if (st.uid !== 0 || ((st.mode & 0o022) !== 0 && !(sticky && p !== path))) {
      throw new MultikernelError(
        'ERR_MK_IMAGE',
        `refusing ${path}: ${p} is ${st.uid !== 0 ? `owned by uid ${st.uid}` : 'writable by group or others'}, so a non-root user could have put any code there; ` +
          'move the file to a root-owned directory, or pass trustFiles: true',
        { details: { path, offending: p, uid: st.uid, mode: st.mode } },
      );
    }
    const parent = p.slice(0, p.lastIndexOf('/')) || '/';
    if (parent === p) return;
    p = parent;
  }
}

async function readImage(what: string, source: string | Uint8Array, trust: boolean): Promise<Uint8Array> {
  if (typeof source !== 'string') return source;
  const given = nodePath.resolve(source);
  try {
    // the file a symlink names is what is checked and read, so swapping the link changes nothing
    const path = await fs.promises.realpath(given);
    if (!trust) await checkTrusted(path);
    return await fs.promises.readFile(path);
  } catch (err) {
    if (err instanceof MultikernelError) throw err;
    throw new MultikernelError('ERR_MK_IMAGE', `cannot read the ${what} ${given}: ${(err as Error).message}`, { cause: err, details: { path: given } });
  }
}

/** What to do about an errno kexec_file_load returned for this instance. */
function loadAdvice(err: unknown, name: string): unknown {
  if (!isSystemError(err)) return err;
  const advice: Record<string, string> = {
    EPERM:
      'the kernel refused the load: it needs CAP_SYS_BOOT in the initial user namespace, kexec_load_disabled must be 0, and under lockdown or ' +
      'kexec signature enforcement (secure boot, CONFIG_KEXEC_SIG_FORCE) only a signed image loads: check /sys/kernel/security/lockdown and sign the image',
    EKEYREJECTED: 'the image signature was rejected: sign it with a key the kernel trusts (its built-in or machine keyring), or boot without signature enforcement',
    ENOEXEC: 'no kexec loader of this kernel recognises the image: pass the ELF vmlinux (x86_64) or Image (arm64) built for multikernel',
    ENOMEM: 'the instance memory is too small for the image and its initrd: give it more memory (update({ memory }))',
    EBUSY: 'another kexec load or start runs, or the instance holds an image already: retry, or unload() first',
  };
  const what = advice[err.code];
  if (what === undefined) return err;
  const code = err.code === 'EPERM' ? 'ERR_MK_PERMISSION' : err.code === 'EBUSY' ? 'ERR_MK_INSTANCE_LOADED' : err.code === 'ENOMEM' ? 'ERR_MK_RESOURCES' : 'ERR_MK_IMAGE';
  return new MultikernelError(code, `loading a kernel into instance "${name}" failed with ${err.code}: ${what}`, { cause: err, details: { errno: err.code } });
}

export class Instance {
  readonly #host: InstanceHost;
  /** the name under /sys/fs/multikernel/instances */
  readonly name: string;
  /** the kernel's id (1..2047): the KEXEC_MK_ID and reboot argument, and the vsock CID */
  readonly id: number;

  /** Instances come from a Host: `host.instance(name)`, `host.instances()`, `host.createInstance(spec)`. */
  constructor(host: InstanceHost, name: string, id: number) {
    this.#host = host;
    this.name = name;
    this.id = id;
  }

  get #system(): System {
    return this.#host.system;
  }

  /** The status now, read from the kernel. ERR_MK_INSTANCE_NOT_FOUND when it is gone or was re-created under another id. */
  async status(): Promise<InstanceStatus> {
    let id: number;
    let status: string;
    try {
      id = Number(await text(this.#system, `${instanceDir(this.name)}/id`));
      status = await text(this.#system, `${instanceDir(this.name)}/status`);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw notFound(this.name, 'it no longer exists');
      throw err;
    }
    if (id !== this.id) throw notFound(this.name, `it was deleted and created again (id ${this.id} is now ${id}): get it again with host.instance()`);
    return status as InstanceStatus;
  }

  /** Everything the kernel shows of the instance, read now. */
  async info(): Promise<InstanceInfo> {
    const status = await this.status();
    const tree: InstanceTree = parseInstance(await this.#system.readFile(`${instanceDir(this.name)}/device_tree`));
    const kimage = await this.#system.readFile(PROC_KIMAGE).then((b) => parseKimage(b.toString('utf8')), () => []);
    const image = kimage.find((r) => r.id === this.id);
    return {
      name: this.name,
      id: this.id,
      status,
      cpus: tree.cpus,
      memoryBytes: tree.memoryBytes,
      memory: (await allInstanceRegions(this.#system)).filter((r) => r.id === this.id).map(({ base, size }) => ({ base, size })),
      devices: tree.devices,
      ...(image && status !== 'ready' ? { image } : {}),
    };
  }

  /**
   * The instance's device tree blob as the kernel renders it (`instances/<name>/device_tree`):
   * what `info()` parses, for tools that show or keep it (`mkctl dump`; printDts() of
   * `multikernel/fdt` turns it into DTS). ERR_MK_INSTANCE_NOT_FOUND when the instance is gone.
   */
  async deviceTree(): Promise<Buffer> {
    await this.status();
    return this.#system.readFile(`${instanceDir(this.name)}/device_tree`);
  }

  async #expect(verb: Verb, ...allowed: InstanceStatus[]): Promise<InstanceStatus> {
    const status = await this.status();
    if (!allowed.includes(status)) throw stateError(this.name, status, verb);
    return status;
  }

  /** After a call: the status must be `want`; otherwise the kernel did something else and says so. */
  async #confirm(verb: Verb, want: InstanceStatus): Promise<void> {
    const now = await this.status();
    if (now !== want) {
      throw new MultikernelError('ERR_MK_TX_FAILED', `after ${verb}, instance "${this.name}" is "${now}", not "${want}": re-read it and check dmesg`, {
        details: { name: this.name, verb, status: now, expected: want },
      });
    }
  }

  /**
   * Loads a kernel (status ready → loaded). On x86_64 a bzImage is turned into its ELF vmlinux in
   * memory; on arm64 an Image or Image.gz is taken. File descriptors are closed whatever happens.
   */
  async load(kernel: string | Uint8Array, options: LoadOptions = {}): Promise<void> {
    const cmdline = options.cmdline ?? 'console=mktty0';
    if (Buffer.byteLength(cmdline) >= COMMAND_LINE_SIZE) {
      throw new MultikernelError('ERR_MK_INVALID_SPEC', `the command line is ${Buffer.byteLength(cmdline)} bytes; the kernel takes at most ${COMMAND_LINE_SIZE - 1}`);
    }
    if (cmdline.includes('\0')) throw new MultikernelError('ERR_MK_INVALID_SPEC', 'the command line contains a NUL byte');
    options.signal?.throwIfAborted();
    await this.#expect('load', 'ready');
    const trust = options.trustFiles === true;
    const arch = this.#host.arch;
    const bytes = await readImage('kernel', kernel, trust);
    // riscv64 and unknown hosts: no conversion here, the kernel's own loader decides (ENOEXEC)
    const image = arch === 'x86_64' || arch === 'arm64' ? (await (await import('./image')).prepareKernelImage(bytes, { arch })).bytes : bytes;
    const initrd = options.initrd === undefined ? undefined : await readImage('initrd', options.initrd, trust);
    const fds: number[] = [];
    try {
      const kernelFd = await this.#system.openImageBytes(`${this.name}-kernel`, image);
      fds.push(kernelFd);
      const initrdFd = initrd === undefined ? -1 : await this.#system.openImageBytes(`${this.name}-initrd`, initrd);
      if (initrdFd !== -1) fds.push(initrdFd);
      const flags = KEXEC_MULTIKERNEL | kexecMkId(this.id) | (initrdFd === -1 ? KEXEC_FILE_NO_INITRAMFS : 0);
      this.#host.requested(this.id, 'loaded');
      await explainNoSupport(this.#system, 'kexec_file_load with KEXEC_MULTIKERNEL', () => this.#system.kexecFileLoad({ kernelFd, initrdFd, cmdline, flags })).catch(
        (err: unknown) => {
          throw loadAdvice(err, this.name);
        },
      );
    } finally {
      await Promise.allSettled(fds.map((fd) => this.#system.closeImage(fd)));
    }
    await this.#confirm('load', 'loaded');
  }

  /**
   * Boots the loaded kernel (loaded → active). The call returns once the boot is kicked off.
   * With `console: true` the console is opened and selected first and returned, so that it holds
   * the whole boot log from the first line.
   */
  async start(options: { console: true; signal?: AbortSignal }): Promise<ConsoleStream>;
  async start(options?: { console?: false; signal?: AbortSignal }): Promise<void>;
  async start(options: { console?: boolean; signal?: AbortSignal } = {}): Promise<ConsoleStream | void> {
    options.signal?.throwIfAborted();
    await this.#expect('start', 'loaded');
    const tty = options.console === true ? await (await import('./console')).openConsole(this.#system, this.id) : undefined;
    try {
      this.#host.requested(this.id, 'active');
      await this.#system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, this.id);
      await this.#confirm('start', 'active');
    } catch (err) {
      tty?.destroy();
      throw err;
    }
    return tty;
  }

  /**
   * The instance's console, selected for it. The kernel sends the output to the newest opened
   * console of an instance: opening a second one silences the first (see lib/console.ts).
   */
  async console(): Promise<ConsoleStream> {
    await this.status();
    return (await import('./console')).openConsole(this.#system, this.id);
  }

  /**
   * Whether the instance's kernel runs: `alive` (a connect to a port nobody uses is answered with
   * a reset), `hung` (no answer within attempts x attemptMs, 5 x 100 ms by default), `stopped`
   * (its status is not `active`: halted, crashed back to the pool, or never started).
   */
  async probe(options: ProbeOptions = {}): Promise<Liveness> {
    if ((await this.status()) !== 'active') return 'stopped';
    return probeLiveness(this.#system, this.id, options);
  }

  /** A byte stream to `port` in the instance (the multikernel vsock transport; the CID is the id). */
  async connect(port: number, options: ConnectOptions = {}): Promise<VsockStream> {
    options.signal?.throwIfAborted();
    await this.#expect('connect to', 'active');
    return connectChannel(this.#system, this.id, this.name, port, options);
  }

  /**
   * Starts a command through the instance's kerf-init agent and resolves, once connected, with a
   * ChildProcess-like ExecProcess: stdin/stdout/stderr streams, `spawn`, `exit` and `close` events,
   * `exited`, `kill(signal)`, `resize(cols, rows)`. Needs root, as execFile.
   */
  async exec(argv: string[], options: ExecOptions = {}): Promise<ExecProcess> {
    checkArgv(argv);
    options.signal?.throwIfAborted();
    await this.#expect('exec in', 'active');
    const { ExecProcess } = await import('./exec-process');
    return new ExecProcess(await this.#session(options.signal), argv, options);
  }

  /**
   * Runs a command through the instance's kerf-init agent (vsock port 1023) and resolves with its
   * output and exit code (127 not found, 126 not executable, 128 + n killed by signal n), like
   * `child_process.execFile`. Like kerf's client, it binds the first free local port from 1023
   * down to 512 ("kerf-init only trusts reserved ports, which only root can bind"), so it needs root.
   */
  async execFile(argv: string[], options: ExecFileOptions = {}): Promise<ExecFileResult> {
    checkArgv(argv);
    options.signal?.throwIfAborted();
    await this.#expect('exec in', 'active');
    return (await import('./exec-process')).execFileOverStream(await this.#session(options.signal), argv, options);
  }

  /** A connection to the agent that ends when the instance stops (its kernel would not say). */
  async #session(signal: AbortSignal | undefined): Promise<VsockStream> {
    const { connectAgent, guardSession } = await import('./exec-process');
    const stream = await connectAgent(this.#system, this.id, this.name, signal);
    guardSession(stream, `instance "${this.name}"`, () => this.status());
    return stream;
  }

  /**
   * Halts the instance (active → loaded; the image stays loaded, so start() boots it again).
   * Graceful first: the spawn kernel is asked to power off, and the kernel waits up to 30 s for
   * it. With `force`, a graceful halt that fails, times out or is aborted is followed by a forced
   * halt (an NMI to the instance's CPUs).
   */
  async stop(options: StopOptions = {}): Promise<StopResult> {
    options.signal?.throwIfAborted();
    await this.#expect('stop', 'active');
    this.#host.requested(this.id, 'loaded');
    if (options.force === true && options.timeoutMs === 0) return this.#forceHalt();
    const graceful = this.#system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, this.id);
    let failure: unknown;
    const limit = new AbortController();
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => limit.abort(new MultikernelError('ERR_MK_HALT_TIMEOUT', 'stop timed out')), options.timeoutMs);
    const onAbort = () => limit.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await new Promise<void>((resolve, reject) => {
        graceful.then(resolve, reject);
        limit.signal.addEventListener('abort', () => reject(limit.signal.reason), { once: true });
      });
    } catch (err) {
      failure = err;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    }
    if (failure === undefined) {
      await this.#confirm('stop', 'loaded');
      return { how: 'graceful' };
    }
    // the graceful call may still be waiting in the kernel: its outcome no longer matters
    graceful.catch(() => undefined);
    if (!options.force) {
      if (isSystemError(failure, 'ETIMEDOUT') || (failure instanceof MultikernelError && failure.code === 'ERR_MK_HALT_TIMEOUT')) {
        throw new MultikernelError(
          'ERR_MK_HALT_TIMEOUT',
          `instance "${this.name}" did not answer the graceful halt${options.timeoutMs === undefined ? ' within the kernel\'s 30 s' : ` within ${options.timeoutMs} ms`}: ` +
            'its kernel may hang; stop({ force: true }) halts it by force',
          { cause: failure, details: { name: this.name } },
        );
      }
      throw failure;
    }
    return this.#forceHalt();
  }

  async #forceHalt(): Promise<StopResult> {
    // The kernel allows it from active and loaded, so a graceful halt that finished meanwhile is fine.
    await this.#system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, this.id);
    await this.#confirm('stop', 'loaded');
    return { how: 'forced' };
  }

  /** stop() when running, then start(): the loaded kernel boots again. */
  async restart(options: StopOptions = {}): Promise<StopResult | undefined> {
    const stopped = (await this.status()) === 'active' ? await this.stop(options) : undefined;
    await this.start({ signal: options.signal });
    return stopped;
  }

  /** Frees the loaded kernel (loaded → ready). The kernel itself would unload a running instance: this refuses. */
  async unload(options: { signal?: AbortSignal } = {}): Promise<void> {
    options.signal?.throwIfAborted();
    await this.#expect('unload', 'loaded');
    this.#host.requested(this.id, 'ready');
    await this.#system.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(this.id) });
    await this.#confirm('unload', 'ready');
  }

  /**
   * Removes the instance; its CPUs, memory and devices go back to the pool. Only from `ready`;
   * `force` stops (forced) and unloads it first.
   */
  async delete(options: { force?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    options.signal?.throwIfAborted();
    let status = await this.status();
    if (options.force === true && status === 'active') {
      await this.stop({ force: true, timeoutMs: 0, signal: options.signal });
      status = 'loaded';
    }
    if (options.force === true && status === 'loaded') await this.unload({ signal: options.signal });
    else if (status !== 'ready') throw stateError(this.name, status, 'delete');
    const gone = () =>
      this.status().then(
        () => false,
        (err: unknown) => err instanceof MultikernelError && err.code === 'ERR_MK_INSTANCE_NOT_FOUND',
      );
    try {
      await this.#host.applyOverlay([{ op: 'instance-remove', name: this.name }], `delete ${this.name}`, options.signal);
    } catch (err) {
      // The kernel is the truth: a transaction reported failed after the instance went is a delete done.
      if (await gone()) return;
      throw err;
    }
    if (!(await gone())) throw new MultikernelError('ERR_MK_TX_FAILED', `instance "${this.name}" is still listed after its removal applied: re-read ${MK_INSTANCES}`);
  }

  /**
   * Changes CPUs, memory and devices, live when the instance runs, in one transaction. The
   * kernel asks a running spawn to take or release each resource and waits for its answer; a
   * refusal rolls the whole transaction back.
   */
  async update(change: InstanceUpdate, options: { signal?: AbortSignal } = {}): Promise<void> {
    // what can be refused without the locks is refused before them
    await this.#expect('update', 'ready', 'loaded', 'active');
    const want = change.cpus;
    if (typeof want === 'number' && (!Number.isSafeInteger(want) || want < 1)) throw new MultikernelError('ERR_MK_INVALID_SPEC', `cpus must be a positive count, got ${want}`);
    const memory = change.memory === undefined ? undefined : parseBytes(change.memory, 'memory');
    // Read and chosen under the writers' locks (as createInstance): another writer that takes
    // them cannot take the same free CPUs, or stop the instance, between the reading and the write.
    await this.#host.applyPlannedOverlay(async () => this.#updateOps(change, memory), `update ${this.name}`, options.signal);
  }

  /** The operations of update(), from what the kernel shows now. */
  async #updateOps(change: InstanceUpdate, memory: bigint | undefined): Promise<OverlayOp[]> {
    const status = await this.#expect('update', 'ready', 'loaded', 'active');
    const info = await this.info();
    const ops: OverlayOp[] = [];
    const target = { instance: this.name };
    if (change.cpus !== undefined) {
      const want = change.cpus;
      if (typeof want === 'number') {
        if (want > info.cpus.length) {
          const add = selectCpus(`instance "${this.name}" cpus`, want - info.cpus.length, await this.#host.freePoolCpus());
          ops.push(...add.map((id) => ({ op: 'cpu-add' as const, target, id })));
        } else {
          // give back the last ones; the first CPU boots the instance
          ops.push(...info.cpus.slice(want).map((id) => ({ op: 'cpu-remove' as const, target, id })));
        }
      } else {
        const ids = want.physical;
        const free = (await this.#host.freePoolCpus()).filter((c) => !info.cpus.includes(c.physicalId));
        const add = ids.filter((id) => !info.cpus.includes(id));
        if (add.length > 0) selectCpus(`instance "${this.name}" cpus`, { physical: add }, free);
        ops.push(...info.cpus.filter((id) => !ids.includes(id)).map((id) => ({ op: 'cpu-remove' as const, target, id })));
        ops.push(...add.map((id) => ({ op: 'cpu-add' as const, target, id })));
      }
    }
    if (memory !== undefined) ops.push(...(await this.#memoryOps(memory, info, status)));
    if (change.devices !== undefined) {
      const held = pciIds(info.devices);
      const want = change.devices.map((d) => d.toLowerCase());
      ops.push(...held.filter((d) => !want.includes(d)).map((pciId) => ({ op: 'device-remove' as const, target, pciId })));
      ops.push(...want.filter((d) => !held.includes(d)).map((pciId) => ({ op: 'device-add' as const, target, pciId })));
    }
    return ops;
  }

  async #memoryOps(want: bigint, info: InstanceInfo, status: InstanceStatus): Promise<OverlayOp[]> {
    const target = { instance: this.name };
    const have = info.memoryBytes;
    if (status === 'active' && (want - have) % ACTIVE_MEMORY_ALIGN !== 0n) {
      throw new MultikernelError(
        'ERR_MK_INVALID_SPEC',
        `instance "${this.name}" runs: its memory changes in steps of ${formatBytes(ACTIVE_MEMORY_ALIGN)} (memory_block_size); ${formatBytes(have)} to ${formatBytes(want)} is not one`,
      );
    }
    if (want > have) return [{ op: 'memory-add', target, base: 0n, size: want - have }];
    if (want === have) return [];
    // The kernel removes whole regions only (mem.c mk_instance_remove_memory_region): find a
    // set of regions, newest first, whose sizes add up to exactly the difference.
    const regions = info.memory;
    // never the first region: it holds the image
    const remove = wholePieces(regions.slice(1), have - want);
    if (remove === undefined) {
      throw new MultikernelError(
        'ERR_MK_INVALID_SPEC',
        `instance "${this.name}" can only give back whole memory regions (the kernel has no partial removal) and not its first one; ` +
          `its regions are ${regions.map((r) => formatBytes(r.size)).join(', ') || 'unknown (/proc/iomem is unreadable)'}: ` +
          `${formatBytes(want)} cannot be reached from ${formatBytes(have)}`,
        { details: { regions, want, have } },
      );
    }
    return remove.map((r) => ({ op: 'memory-remove' as const, target, base: r.base, size: r.size }));
  }

  /**
   * Waits until the status is `want` ('gone': the instance no longer exists). The kernel sends no
   * change notifications, so this reads the status every `intervalMs`.
   */
  async waitFor(want: InstanceStatus | 'gone', options: WaitOptions = {}): Promise<void> {
    const interval = options.intervalMs ?? 100;
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    let last = '';
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        last = await this.status();
      } catch (err) {
        if (!(err instanceof MultikernelError && err.code === 'ERR_MK_INSTANCE_NOT_FOUND')) throw err;
        last = 'gone';
      }
      if (last === want) return;
      if (last === 'gone') throw notFound(this.name, `it is gone while waiting for "${want}"`);
      if (Date.now() + interval > deadline) {
        throw new MultikernelError('ERR_MK_TIMEOUT', `instance "${this.name}" is still "${last}" after ${options.timeoutMs} ms of waiting for "${want}"`, {
          details: { name: this.name, status: last, want },
        });
      }
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          clearTimeout(timer);
          reject(options.signal!.reason);
        };
        const timer = setTimeout(() => {
          options.signal?.removeEventListener('abort', onAbort);
          resolve();
        }, interval);
        options.signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
  }
}
