/**
 * Boots a kernel under QEMU (TCG), runs one command in a generated initramfs and returns the
 * command's exit code. Scratch files and the QEMU process are cleaned up on every path: normal
 * end, error, timeout, abort, an exception thrown by a callback, and the Node process ending
 * underneath (process.exit(), an uncaught exception, SIGINT, SIGTERM, SIGHUP: see cleanup.ts).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { MultikernelError } from '../errors';
import { buildQemuArgs, checkCpus, hostQemuArch, kernelCmdline, parseMemory, qemuArchFor, qemuBinaryFor, type QemuArch } from './args';
import { type ActiveRun, type Interruption, RunRegistry } from './cleanup';
import { HeadTail } from './head-tail';
import { buildInitramfs, checkGuestPaths } from './initramfs';
import { parseStatus, type QemuPhase, SerialParser } from './serial';

export interface QemuFile {
  /** host path */
  source: string;
  /** absolute guest path */
  target: string;
  mode?: number;
}

export interface QemuOptions {
  /** kernel image (x86 bzImage, arm64 Image) */
  kernel: string;
  /** static busybox for the guest's architecture */
  busybox: string;
  /** argv of the guest command, e.g. ['node', '/share/test/qemu/guest/basic.mjs'] */
  command: readonly string[];
  /** default: the host's architecture */
  arch?: QemuArch;
  /** x86_64: 'q35' (default) or 'pc'; aarch64: 'virt,gic-version=3' (default) */
  machine?: string;
  /** default 2 */
  cpus?: number;
  /** MiB as a number, or '512M' / '2G'; default 1024 */
  memory?: number | string;
  /** appended to `console=… rdinit=/init panic=-1 quiet` */
  append?: string;
  /** .ko files (host paths) to insmod in order before the share is mounted */
  modules?: readonly string[];
  /** environment of the guest command (NO_COLOR=1, PATH, HOME and TERM=dumb are preset) */
  env?: Readonly<Record<string, string>>;
  /** host directory shared read-only over 9p (needs the 9p modules or a kernel with 9p built in) */
  share?: string;
  /** where the share is mounted in the guest; default '/share' */
  shareMount?: string;
  /** working directory of the command; default the share mount, or '/' without a share */
  cwd?: string;
  /**
   * node binary for /usr/bin/node (its ldd libraries come along). Default: this process's node
   * when the guest has the host's architecture, otherwise none. `false`: no node.
   */
  node?: string | false;
  /** host executables copied to the same guest path with their ldd libraries (e.g. /usr/sbin/capsh) */
  binaries?: readonly string[];
  /** further files for the initramfs */
  files?: readonly QemuFile[];
  /** kill QEMU after this long; default 300000 */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** serial console text as it arrives (all of it); an exception thrown here stops the run and is its rejection */
  onOutput?: (text: string) => void;
  onPhase?: (phase: QemuPhase, elapsedMs: number) => void;
  /** default `qemu-system-<arch>` from PATH */
  qemuBinary?: string;
  /** parent of the scratch directory; default os.tmpdir() */
  tmpDir?: string;
  /**
   * characters of console kept in `QemuResult.output`: the first and the last half of them
   * (default 2 Mi); `onOutput` sees everything
   */
  outputLimit?: number;
}

export interface QemuResult {
  /** the guest command's exit status (0..255) */
  exitCode: number;
  /**
   * the serial console; beyond `outputLimit` characters its head and tail, with a line
   * `[mkqemu: N characters dropped here]` between them
   */
  output: string;
  /** characters of console left out of `output` */
  outputDropped: number;
  /** milliseconds from the start of runQemu to each phase */
  phases: { phase: QemuPhase; atMs: number }[];
  durationMs: number;
  /** QEMU's own exit status */
  qemuStatus: number | null;
  /** the argument vector QEMU ran with (scratch paths are gone by now) */
  qemuArgs: string[];
}

export type QemuFailure = 'timeout' | 'aborted' | 'spawn' | 'guest-setup' | 'no-exit-code';

const DEFAULT_OUTPUT_LIMIT = 2 * 1024 * 1024;
/** QEMU's stderr is a few lines, unless something goes badly wrong */
const STDERR_LIMIT = 64 * 1024;

/** Runs of this process, for cleanup when the process ends underneath them. */
const registry = new RunRegistry();

/** One run in progress, as cleanup.ts sees it. */
class Run implements ActiveRun {
  interruptedBy: Interruption | undefined;
  /** set while QEMU runs: stops it */
  onInterrupt: (() => void) | undefined;

  constructor(readonly scratch: string) {}

  interrupt(by: Interruption): void {
    this.interruptedBy ??= by;
    this.onInterrupt?.();
  }
}

function failure(reason: QemuFailure, message: string, details: Record<string, unknown>, cause?: unknown): MultikernelError {
  return new MultikernelError('ERR_MK_QEMU', message, { details: { reason, ...details }, ...(cause === undefined ? {} : { cause }) });
}

/** Boots, runs `options.command`, resolves with its exit code; rejects with ERR_MK_QEMU. */
export async function runQemu(options: QemuOptions): Promise<QemuResult> {
  const started = Date.now();
  const arch = options.arch ?? hostQemuArch();
  if (options.command.length === 0) throw new RangeError('command must name the program to run in the guest');
  const cpus = checkCpus(options.cpus ?? 2);
  const memoryMiB = parseMemory(options.memory ?? 1024);
  const timeoutMs = options.timeoutMs ?? 300_000;
  if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${timeoutMs}`);
  const outputLimit = options.outputLimit ?? DEFAULT_OUTPUT_LIMIT;
  if (!Number.isSafeInteger(outputLimit) || outputLimit < 2) throw new RangeError(`outputLimit must be a whole number >= 2, got ${outputLimit}`);
  const shareMount = options.shareMount ?? '/share';
  for (const p of [shareMount, ...(options.cwd === undefined ? [] : [options.cwd])]) {
    if (!p.startsWith('/')) throw new RangeError(`guest paths must be absolute, got ${JSON.stringify(p)}`);
  }
  // the /init script names these (modules by their file name): refuse what it cannot carry now
  checkGuestPaths([shareMount, ...(options.cwd === undefined ? [] : [options.cwd]), ...(options.modules ?? []).map((m) => path.basename(m))]);
  const node = options.node === false ? undefined : (options.node ?? (qemuArchFor(process.arch) === arch ? process.execPath : undefined));
  options.signal?.throwIfAborted();

  const phases: QemuResult['phases'] = [];
  const notePhase = (phase: QemuPhase): void => {
    const atMs = Date.now() - started;
    phases.push({ phase, atMs });
    options.onPhase?.(phase, atMs);
  };
  notePhase('starting');

  const scratch = await mkdtemp(path.join(options.tmpDir ?? os.tmpdir(), 'mkqemu-'));
  const run = new Run(scratch);
  const release = registry.add(run);
  try {
    const initrd = path.join(scratch, 'initramfs.cpio');
    const statusFile = path.join(scratch, 'status');
    try {
      await buildInitramfs(initrd, {
        arch,
        busybox: options.busybox,
        modules: options.modules ?? [],
        binaries: options.binaries ?? [],
        files: options.files ?? [],
        ...(node === undefined ? {} : { node }),
        ...(options.share === undefined ? {} : { shareMount }),
        cwd: options.cwd ?? (options.share === undefined ? '/' : shareMount),
        env: options.env ?? {},
        command: options.command,
      });
    } catch (e) {
      // the scratch directory may have been removed under the writer: say why
      throw run.interruptedBy === undefined ? e : interrupted(run.interruptedBy, 'starting', {}, e);
    }
    // interrupted or aborted while the initramfs was written: no QEMU to start
    if (run.interruptedBy !== undefined) throw interrupted(run.interruptedBy, 'starting', {});
    if (options.signal?.aborted === true) throw failure('aborted', 'QEMU run aborted during "starting"', { phase: 'starting' }, options.signal.reason);
    const qemuArgs = buildQemuArgs({
      arch,
      ...(options.machine === undefined ? {} : { machine: options.machine }),
      cpus,
      memoryMiB,
      kernel: options.kernel,
      initrd,
      cmdline: kernelCmdline(arch, options.append),
      ...(options.share === undefined ? {} : { share: path.resolve(options.share) }),
      status: statusFile,
    });
    return await supervise({ binary: options.qemuBinary ?? qemuBinaryFor(arch), qemuArgs, arch, statusFile, timeoutMs, outputLimit, options, run, started, phases, notePhase });
  } finally {
    release();
    await rm(scratch, { recursive: true, force: true });
  }
}

function interrupted(by: Interruption, phase: QemuPhase, details: Record<string, unknown>, cause?: unknown): MultikernelError {
  return failure('aborted', `QEMU run interrupted by ${by} during "${phase}"; it was killed`, { phase, ...details }, cause ?? new Error(`received ${by}`));
}

interface Supervision {
  binary: string;
  qemuArgs: string[];
  arch: QemuArch;
  /** where QEMU writes what /init sends to its status device */
  statusFile: string;
  timeoutMs: number;
  outputLimit: number;
  options: QemuOptions;
  run: Run;
  started: number;
  phases: QemuResult['phases'];
  notePhase: (phase: QemuPhase) => void;
}

/** The status device's text; none when QEMU never opened the file. */
function readStatus(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function supervise({ binary, qemuArgs, arch, statusFile, timeoutMs, outputLimit, options, run, started, phases, notePhase }: Supervision): Promise<QemuResult> {
  return new Promise((resolve, reject) => {
    const parser = new SerialParser();
    const output = new HeadTail(Math.floor(outputLimit / 2), Math.ceil(outputLimit / 2));
    const stderr = new HeadTail(STDERR_LIMIT / 2, STDERR_LIMIT / 2);
    let stopReason: 'timeout' | 'aborted' | 'interrupted' | 'callback' | undefined;
    let callbackError: unknown;
    let spawnError: Error | undefined;

    const child = spawn(binary, qemuArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stop = (reason: NonNullable<typeof stopReason>): void => {
      stopReason ??= reason;
      child.kill('SIGKILL');
    };
    run.onInterrupt = () => stop('interrupted');
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    const onAbort = (): void => stop('aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    /** the caller's callbacks: what they throw ends the run, as its rejection */
    const call = (fn: () => void): boolean => {
      try {
        fn();
        return true;
      } catch (e) {
        if (stopReason === undefined) callbackError = e;
        stop('callback');
        return false;
      }
    };

    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      if (stopReason === 'callback') return;
      output.append(text);
      if (options.onOutput !== undefined && !call(() => options.onOutput!(text))) return;
      for (const ev of parser.push(text)) {
        if (ev.kind === 'phase' && !call(() => notePhase(ev.phase))) return;
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr.append(text);
    });
    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('close', (qemuStatus, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      run.onInterrupt = undefined;
      const elapsed = Date.now() - started;
      const qemuStderr = stderr.toString().trim();
      const details = { phase: parser.currentPhase, qemuStatus, signal, stderr: qemuStderr, consoleTail: parser.lastLines(), elapsedMs: elapsed };
      if (spawnError !== undefined) {
        const missing = (spawnError as NodeJS.ErrnoException).code === 'ENOENT';
        reject(failure('spawn', missing ? `${binary} is not installed (Debian: apt-get install qemu-system-${binary.endsWith('x86_64') ? 'x86' : 'arm'})` : `could not start ${binary}: ${spawnError.message}`, details, spawnError));
        return;
      }
      if (stopReason === 'timeout') {
        reject(failure('timeout', `QEMU timed out after ${timeoutMs} ms during "${parser.currentPhase}"; it was killed`, details));
        return;
      }
      if (stopReason === 'aborted') {
        reject(failure('aborted', `QEMU run aborted during "${parser.currentPhase}"; it was killed`, details, options.signal?.reason));
        return;
      }
      if (stopReason === 'interrupted') {
        reject(interrupted(run.interruptedBy!, parser.currentPhase, details));
        return;
      }
      if (stopReason === 'callback') {
        reject(callbackError);
        return;
      }
      // Only /init writes the status device; the console is shared with the command, whose
      // output may contain anything, markers included.
      const guest = parseStatus(readStatus(statusFile));
      if (guest.failure !== undefined) {
        reject(failure('guest-setup', `guest setup failed: ${guest.failure}`, details));
        return;
      }
      let exitCode = guest.exitCode;
      // Without a status line (the status device missing in the guest), x86 still has
      // isa-debug-exit: QEMU exits with 2*code+1. It only counts once the command ran and never
      // as a success: QEMU's own errors exit 1 too.
      if (exitCode === undefined && arch === 'x86_64' && parser.currentPhase === 'command' && qemuStatus !== null && qemuStatus % 2 === 1 && qemuStatus >= 3) exitCode = (qemuStatus - 1) / 2;
      if (exitCode === undefined) {
        const why = qemuStderr !== '' ? `QEMU said: ${qemuStderr}` : `last console lines:\n${parser.lastLines()}`;
        reject(failure('no-exit-code', `the guest ended without reporting an exit code (QEMU status ${qemuStatus}, phase "${parser.currentPhase}"); ${why}`, details));
        return;
      }
      if (!call(() => notePhase('done'))) {
        reject(callbackError);
        return;
      }
      resolve({ exitCode, output: output.toString(), outputDropped: output.dropped, phases, durationMs: elapsed, qemuStatus, qemuArgs });
    });
  });
}
