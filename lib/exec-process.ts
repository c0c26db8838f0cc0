/**
 * A command running in an instance, shaped like Node's ChildProcess: `stdin`, `stdout` and
 * `stderr` streams, `spawn`, `exit` and `close` events, an `exited` promise, `kill(signal)` and
 * `resize(cols, rows)`. It speaks the kerf exec protocol (lib/exec/client.ts) over one vsock
 * connection to the instance's kerf-init agent.
 *
 * Flow: stdin goes out within the agent's 64 KiB credit window (STDIN_ACK); when a consumer of
 * stdout or stderr stops reading, reading from the connection stops too, so output waits in the
 * transport instead of piling up in this process.
 */
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';
import { PassThrough, Readable, type Duplex, type Writable } from 'node:stream';
import { MultikernelError } from './errors';
import { ExecRemoteError, execOverStream, type ExecControl, type ExecEnv, type ExecRequest, type ExecResult } from './exec/client';

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
