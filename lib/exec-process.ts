/**
 * A command running in an instance, shaped like Node's ChildProcess: `stdin`, `stdout` and
 * `stderr` streams, `spawn`, `exit` and `close` events, an `exited` promise, `kill(signal)` and
 * `resize(cols, rows)`. It speaks the kerf exec protocol (lib/exec/client.ts) over one vsock
 * connection to the instance's kerf-init agent.
 *
 * Flow: stdin goes out within the agent's 64 KiB credit window (STDIN_ACK); when a consumer of
 * stdout or stderr stops reading, reading from the connection stops too, so output does not pile
 * up in this process. The multikernel transport has no flow control and the protocol no credit for
 * output, so it then waits in the host kernel's socket queue, which the agent keeps filling.
 */
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';
import { PassThrough, Readable, type Duplex, type Writable } from 'node:stream';
import { connectChannel } from './channels';
import { MultikernelError, isSystemError } from './errors';
import { ExecRemoteError, execOverStream, type ExecControl, type ExecEnv, type ExecRequest, type ExecResult } from './exec/client';
import { AGENT_PORT, CLIENT_PORTS } from './exec/protocol';
import type { System, VsockStream } from './system/system';

/** The settings of a command that `exec()` and `execFile()` share. */
export interface ExecSettings {
  /** merged over PATH, HOME and (with a tty) TERM, as kerf does; pairs keep their order */
  env?: ExecEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** run on a pty of this size (stdout and stderr arrive merged as stdout) */
  tty?: { rows: number; cols: number };
  /** aborting sends SIGTERM to the command and ends the session */
  signal?: AbortSignal;
  /**
   * with 64 KiB of stdin sent and no STDIN_ACK ever received, how long until the agent is taken
   * for an older kerf-init without STDIN_ACK (ERR_MK_EXEC_OLD_AGENT); default 5000 ms
   */
  stdinAckTimeoutMs?: number;
}

export interface ExecOptions extends ExecSettings {
  /** 'pipe' (default): `proc.stdin` is writable; 'ignore': /dev/null; or a stream or bytes to send */
  stdin?: 'pipe' | 'ignore' | Readable | Uint8Array;
}

/** The request of one session: the command, its settings, and what its stdin is (none: /dev/null). */
export function sessionRequest(argv: string[], settings: ExecSettings, stdin: Readable | Uint8Array | undefined): ExecRequest {
  return {
    argv,
    env: settings.env,
    cwd: settings.cwd,
    uid: settings.uid,
    gid: settings.gid,
    tty: settings.tty,
    stdin,
    signal: settings.signal,
    stdinAckTimeoutMs: settings.stdinAckTimeoutMs,
  };
}

export interface ExecFileOptions extends ExecSettings {
  /** bytes or a stream for the command's stdin (none: /dev/null) */
  stdin?: Readable | Uint8Array;
}

export interface ExecFileResult {
  stdout: Buffer;
  stderr: Buffer;
  /** the shell's status: exit code, 127 not found, 126 not executable, 128 + n for signal n */
  code: number;
  /** the signal number when the command was killed by one, else undefined */
  signal: number | undefined;
  /** the command's pid in the instance; 0 when it could not be started */
  pid: number;
}

/**
 * A connection to the kerf-init agent (vsock port 1023) of instance `id` (`name` for messages).
 * Like kerf's client, the local port is the first free one from 1023 down to 512 ("kerf-init
 * only trusts reserved ports, which only root can bind"), so exec needs root.
 */
export async function connectAgent(system: System, id: number, name: string, signal?: AbortSignal): Promise<VsockStream> {
  for (let localPort = CLIENT_PORTS.highest; localPort >= CLIENT_PORTS.lowest; localPort--) {
    try {
      return await connectChannel(system, id, name, AGENT_PORT, { localPort, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (isSystemError(err, 'EADDRINUSE')) continue;
      if (isSystemError(err, 'EACCES')) {
        throw new MultikernelError('ERR_MK_PERMISSION', "exec needs root: like kerf's own client it binds a reserved vsock port (1023 down to 512), which only root can bind", {
          cause: err,
        });
      }
      if (err instanceof MultikernelError && err.code === 'ERR_MK_CHANNEL_REFUSED') {
        throw new MultikernelError(
          'ERR_MK_EXEC_NO_AGENT',
          `no kerf-init agent listens on vsock port ${AGENT_PORT} in instance "${name}" (kerf 0.1's kerf-init has none): boot it with a newer kerf-init as /init, or use its console`,
          { cause: err, details: { name, id } },
        );
      }
      throw err;
    }
  }
  throw new MultikernelError('ERR_MK_RESOURCES', `no free local vsock port in 512..1023 to reach the kerf-init agent of "${name}"`);
}

/**
 * One command over a connection to the agent, which it then owns (it is destroyed at the end),
 * resolved like `child_process.execFile`: a command the agent could not start resolves with the
 * status a shell (and kerf) gives, 127 not found, 126 otherwise, and the reason on stderr.
 */
export async function execFileOverStream(stream: Duplex, argv: string[], options: ExecFileOptions = {}): Promise<ExecFileResult> {
  let r: ExecResult;
  try {
    r = await execOverStream(stream, sessionRequest(argv, options, options.stdin));
  } catch (err) {
    stream.destroy();
    if (err instanceof ExecRemoteError) return { stdout: Buffer.alloc(0), stderr: Buffer.from(`${err.message}\n`), code: err.exitCode, signal: undefined, pid: 0 };
    throw err;
  }
  stream.destroy();
  return { stdout: r.stdout, stderr: r.stderr, code: r.exitCode, signal: r.signal, pid: r.pid };
}

/** How often a running session checks that its instance is still `active`, ms. */
export const SESSION_CHECK_MS = 1000;

/**
 * A halted or crashed instance sends nothing to its peers (core.c: a halt parks the spawn's CPUs
 * without releasing a socket), so a session to it would wait forever. While `stream` is open, the
 * instance's status is read every `intervalMs`; once it is not `active` (or the instance is gone)
 * the stream is destroyed with an error saying so, and the session fails with
 * ERR_MK_EXEC_LOST_CONNECTION. A status that cannot be read for another reason is tried again.
 */
export function guardSession(stream: Duplex, what: string, status: () => Promise<string>, intervalMs = SESSION_CHECK_MS): void {
  const timer = setInterval(() => {
    status().then(
      (now) => {
        if (now !== 'active') stream.destroy(new Error(`${what} is ${now} now: it was halted, or its kernel crashed`));
      },
      (err: unknown) => {
        if (err instanceof MultikernelError && err.code === 'ERR_MK_INSTANCE_NOT_FOUND') stream.destroy(new Error(`${what} is gone (${err.message})`));
      },
    );
  }, intervalMs);
  stream.once('close', () => clearInterval(timer));
}

export interface ExecExit {
  /** the shell's status: exit code, 127 not found, 126 not executable, 128 + n for signal n */
  code: number;
  /** the signal number when the command was killed by one */
  signal: number | undefined;
}

function signalNumber(signal: NodeJS.Signals | number): number {
  if (typeof signal === 'number') {
    if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw new MultikernelError('ERR_MK_INVALID_SPEC', `no signal number ${signal}`);
    return signal;
  }
  const n = (osConstants.signals as Record<string, number | undefined>)[signal];
  if (n === undefined) throw new MultikernelError('ERR_MK_INVALID_SPEC', `no signal named ${String(signal)}`);
  return n;
}

function signalName(signo: number): NodeJS.Signals | null {
  const found = Object.entries(osConstants.signals).find(([, n]) => n === signo);
  return found ? (found[0] as NodeJS.Signals) : null;
}

export class ExecProcess extends EventEmitter {
  /** writable when started with stdin 'pipe' (the default), else null */
  readonly stdin: Writable | null;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** the command's pid in the instance, once it started */
  pid: number | undefined;
  exitCode: number | null = null;
  /** the name of the signal that killed the command, as ChildProcess has it ('SIGKILL') */
  signalCode: NodeJS.Signals | null = null;
  /** resolves when the command exits; rejects when it could not start (127/126 are in the error) or the connection was lost */
  readonly exited: Promise<ExecExit>;
  #control: ExecControl | undefined;

  /** Made by `instance.exec()` over a connection to the agent, which it then owns. */
  constructor(stream: Duplex, argv: string[], options: ExecOptions = {}) {
    super();
    const resume = (): void => this.#control?.resumeOutput();
    this.stdout = new Readable({ read: resume });
    this.stderr = new Readable({ read: resume });
    const pipe = options.stdin === undefined || options.stdin === 'pipe' ? new PassThrough() : undefined;
    this.stdin = pipe ?? null;
    const stdin = pipe ?? (options.stdin === 'ignore' ? undefined : (options.stdin as Readable | Uint8Array));
    this.exited = execOverStream(stream, {
      ...sessionRequest(argv, options, stdin),
      onControl: (control) => (this.#control = control),
      onStarted: (pid) => {
        this.pid = pid;
        this.emit('spawn');
      },
      onStdout: (chunk) => this.stdout.push(chunk),
      onStderr: (chunk) => this.stderr.push(chunk),
    }).then(
      (r: ExecResult) => {
        this.exitCode = r.exitCode;
        this.signalCode = r.signal === undefined ? null : signalName(r.signal);
        this.#end();
        this.emit('exit', r.exitCode, this.signalCode);
        this.emit('close', r.exitCode, this.signalCode);
        return { code: r.exitCode, signal: r.signal };
      },
      (err: unknown) => {
        stream.destroy();
        this.#end();
        if (err instanceof ExecRemoteError) this.exitCode = err.exitCode;
        // like a ChildProcess: 'error' only when someone listens, the promise always rejects
        if (this.listenerCount('error') > 0) this.emit('error', err);
        this.emit('close', this.exitCode, null);
        throw err;
      },
    );
    // an unawaited failure is reported through 'error' and 'close', not as an unhandled rejection
    this.exited.catch(() => undefined);
  }

  #end(): void {
    this.stdout.push(null);
    this.stderr.push(null);
    this.stdin?.destroy();
  }

  /** Sends `signal` (default SIGTERM) to the command; false when it has not started or has ended. */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    const signo = signalNumber(signal);
    if (this.pid === undefined || this.exitCode !== null) return false;
    this.#control!.signal(signo);
    return true;
  }

  /** Tells the command's pty its new size (with `tty`). */
  resize(cols: number, rows: number): void {
    for (const [what, v] of [['cols', cols], ['rows', rows]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 0xffff) throw new MultikernelError('ERR_MK_INVALID_SPEC', `${what} must be 1..65535, got ${v}`);
    }
    this.#control!.resize({ rows, cols });
  }
}
