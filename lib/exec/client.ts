/**
 * Host side of a kerf exec session over an already connected stream (a vsock connection to the
 * instance's kerf-init on port 1023): send OPEN, wait for STARTED, forward stdin within the
 * STDIN_ACK credit window, collect STDOUT/STDERR until EXIT.
 * Source: kerf `src/kerf/exec/client.py` and `main.py` (the Python client this mirrors).
 */
import type { Duplex, Readable } from 'node:stream';
import { constants as osConstants } from 'node:os';
import { MultikernelError } from '../errors';
import {
  FrameDecoder,
  FrameType,
  MAX_PAYLOAD,
  OPEN_FLAG_STDIN,
  OPEN_FLAG_TTY,
  OPEN_FLAG_USER,
  STDIN_WINDOW,
  decodeError,
  decodeExit,
  decodeStarted,
  decodeStdinAck,
  encodeFrame,
  encodeOpen,
  encodeResize,
  encodeSignal,
  errnoName,
  errorExitCode,
  shellStatus,
} from './protocol';

/** kerf's default PATH for exec'd commands (client.py DEFAULT_PATH). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The signal sent to the remote command when the caller aborts. */
export const ABORT_SIGNAL = osConstants.signals.SIGTERM;

/**
 * Default ExecRequest.stdinAckTimeoutMs. kerf-init with STDIN_ACK acknowledges the first stdin
 * bytes as soon as they are in the command's (empty) pipe, so silence this long means an agent
 * without it (docs/kernel-interface.md, "The host client").
 */
export const STDIN_ACK_TIMEOUT_MS = 5000;

export interface ExecRequest {
  argv: string[];
  /**
   * Merged over PATH, HOME and (with a tty) TERM, in that order, like kerf's build_env
   * (`src/kerf/exec/client.py`): a key given again keeps its place. Pairs keep the caller's order;
   * a plain object lists integer-like keys first (JavaScript's property order). A key that is
   * empty or holds `=` or NUL is refused before anything is sent.
   */
  env?: ExecEnv;
  /** default '/' */
  cwd?: string;
  /** giving uid or gid sets the USER flag; the missing one of the two defaults to 0 */
  uid?: number;
  gid?: number;
  groups?: number[];
  /** run the command on a pty of this size (stdout and stderr then arrive merged as stdout) */
  tty?: { rows: number; cols: number };
  /** forwarded as the command's stdin (sets the STDIN flag); without it stdin is /dev/null */
  stdin?: Readable | Uint8Array;
  /** aborting sends SIGNAL(SIGTERM) when the command has started, then closes the connection */
  signal?: AbortSignal;
  /** called with the remote pid when STARTED arrives */
  onStarted?: (pid: number) => void;
  /**
   * stream stdout to this callback instead of collecting it; returning false pauses reading from
   * the connection (and so, through the transport, the command's output) until
   * `control.resumeOutput()`
   */
  onStdout?: (chunk: Buffer) => boolean | void;
  /** stream stderr to this callback instead of collecting it; false pauses as for stdout */
  onStderr?: (chunk: Buffer) => boolean | void;
  /** called once, before OPEN is sent, with the session's controls */
  onControl?: (control: ExecControl) => void;
  /**
   * With 64 KiB of stdin unacknowledged and no STDIN_ACK ever received, how long to wait (while
   * reading from the connection) before deciding the agent is an older kerf-init without
   * STDIN_ACK and failing with ERR_MK_EXEC_OLD_AGENT. Default STDIN_ACK_TIMEOUT_MS (5 s).
   */
  stdinAckTimeoutMs?: number;
}

/** What a caller can do to a running session. */
export interface ExecControl {
  /** SIGNAL frame to the command (ignored before STARTED and after the end) */
  signal(signo: number): void;
  /** RESIZE frame: the pty's new size (meaningful with `tty`) */
  resize(size: { rows: number; cols: number }): void;
  /** reading from the connection resumes after an onStdout/onStderr returned false */
  resumeOutput(): void;
}

/** Environment entries: an object, or pairs in the order they are to be sent. */
export type ExecEnv = Record<string, string> | ReadonlyArray<readonly [string, string]>;

/**
 * The environment OPEN carries, as kerf's client builds it: PATH, HOME (/root for root, else /,
 * kerf's fallback when the instance's passwd is not at hand), TERM with a tty (the caller's own
 * $TERM, else xterm), then the caller's entries.
 */
export function buildEnv(request: Pick<ExecRequest, 'env' | 'uid' | 'tty'>): string[] {
  const env = new Map<string, string>([
    ['PATH', DEFAULT_PATH],
    ['HOME', request.uid === undefined || request.uid === 0 ? '/root' : '/'],
  ]);
  if (request.tty) env.set('TERM', process.env.TERM || 'xterm');
  const given = request.env === undefined ? [] : Array.isArray(request.env) ? request.env : Object.entries(request.env);
  for (const [key, value] of given as Iterable<readonly [string, string]>) {
    if (typeof key !== 'string' || key === '' || key.includes('=') || key.includes('\0') || typeof value !== 'string') {
      throw new MultikernelError('ERR_MK_INVALID_SPEC', `invalid environment entry ${JSON.stringify(key)}: a key is a non-empty string without "=" and the value a string`);
    }
    env.set(key, value);
  }
  return [...env].map(([k, v]) => `${k}=${v}`);
}

export interface ExecResult {
  /** the shell's status: the exit code, or 128 + signal when signaled */
  exitCode: number;
  signaled: boolean;
  /** the signal number when signaled */
  signal?: number;
  /** collected output (empty when onStdout / onStderr stream it) */
  stdout: Buffer;
  stderr: Buffer;
  pid: number;
}

export type ExecErrorCode = 'ERR_MK_EXEC_REMOTE' | 'ERR_MK_EXEC_LOST_CONNECTION';

/** The agent could not start the command (an ERROR frame). */
export class ExecRemoteError extends Error {
  readonly code: ExecErrorCode = 'ERR_MK_EXEC_REMOTE';
  /** positive errno number from the spawn */
  readonly errno: number;
  /** errno name such as 'ENOENT', when known */
  readonly errnoCode: string | undefined;
  /** kerf's exit status for this failure: 127 for ENOENT (command not found), 126 otherwise */
  readonly exitCode: number;
  constructor(errno: number, remoteMessage: string) {
    super(`the instance could not run the command: ${remoteMessage}`);
    this.errno = errno;
    this.errnoCode = errnoName(errno);
    this.exitCode = errorExitCode(errno);
  }
  override get name(): string {
    return 'ExecRemoteError';
  }
}

/** The connection ended (or broke the protocol) before EXIT. */
export class ExecLostConnectionError extends Error {
  readonly code: ExecErrorCode = 'ERR_MK_EXEC_LOST_CONNECTION';
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`connection to the instance lost ${detail}; check that the instance is still running`, options);
  }
  override get name(): string {
    return 'ExecLostConnectionError';
  }
}

function buildOpen(request: ExecRequest): Buffer {
  const user = request.uid !== undefined || request.gid !== undefined;
  return encodeFrame(
    FrameType.OPEN,
    encodeOpen({
      flags: (request.tty ? OPEN_FLAG_TTY : 0) | (request.stdin !== undefined ? OPEN_FLAG_STDIN : 0) | (user ? OPEN_FLAG_USER : 0),
      uid: request.uid ?? 0,
      gid: request.gid ?? 0,
      groups: request.groups ?? [],
      rows: request.tty?.rows ?? 0,
      cols: request.tty?.cols ?? 0,
      cwd: request.cwd ?? '/',
      argv: request.argv,
      env: buildEnv(request),
    }),
  );
}

/**
 * Runs one command through a kerf-init agent on `stream` and resolves with its exit status and
 * output. Rejects with ExecRemoteError (ERROR frame), ExecLostConnectionError (closed before
 * EXIT), a MultikernelError ERR_MK_EXEC_OLD_AGENT (more than 64 KiB of stdin for an agent
 * that never sends STDIN_ACK), `signal.reason` when aborted, or the stdin stream's error. The
 * stream is ended when the session is over; the caller keeps ownership of `stdin`.
 */
export function execOverStream(stream: Duplex, request: ExecRequest): Promise<ExecResult> {
  return new Promise<ExecResult>((resolve, reject) => {
    let open: Buffer;
    try {
      open = buildOpen(request);
    } catch (e) {
      reject(e);
      return;
    }
    const decoder = new FrameDecoder();
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let pid = -1;
    let credit = STDIN_WINDOW;
    let creditWaiter: (() => void) | undefined;
    let acknowledged = false;
    const ackTimeout = request.stdinAckTimeoutMs ?? STDIN_ACK_TIMEOUT_MS;
    let done = false;
    /** lets go of the caller's stdin stream while it is being read */
    let releaseStdin: (() => void) | undefined;
    const signal = request.signal;

    const send = (type: number, payload?: Uint8Array): void => {
      if (!stream.destroyed && !stream.writableEnded) stream.write(encodeFrame(type, payload));
    };
    // Each way a session ends takes every other away as it ends (listeners off, timers cleared,
    // stdin let go), so finish runs once.
    const finish = (error: unknown, result?: ExecResult): void => {
      done = true;
      releaseStdin?.();
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      creditWaiter?.();
      stream.on('error', () => {}); // late errors of a finished session are of no interest
      stream.end();
      if (result) resolve(result);
      else reject(error);
    };

    const oldAgent = (): MultikernelError =>
      new MultikernelError(
        'ERR_MK_EXEC_OLD_AGENT',
        `the instance's kerf-init acknowledged none of the first ${STDIN_WINDOW} bytes of stdin within ${ackTimeout} ms: it is an older kerf-init ` +
          'whose exec agent never sends STDIN_ACK (or the instance stopped answering). Boot the instance with a newer kerf-init, or send at most 64 KiB of stdin',
        { details: { stdinAckTimeoutMs: ackTimeout, stdinSent: STDIN_WINDOW } },
      );
    const waitForCredit = (): Promise<void> =>
      new Promise((wake) => {
        let timer: NodeJS.Timeout | undefined;
        // An agent that acknowledged once has STDIN_ACK: waiting longer is a command slow to read.
        // Time while reading is paused does not count: an acknowledgement may be waiting unread.
        const arm = (): void => {
          timer = setTimeout(() => (stream.isPaused() ? arm() : finish(oldAgent())), ackTimeout);
        };
        if (!acknowledged) arm();
        creditWaiter = () => {
          clearTimeout(timer);
          creditWaiter = undefined;
          wake();
        };
      });
    const sendStdin = async (data: Uint8Array): Promise<void> => {
      let offset = 0;
      while (offset < data.length && !done) {
        if (credit === 0) {
          await waitForCredit();
          continue;
        }
        const n = Math.min(data.length - offset, credit, MAX_PAYLOAD);
        credit -= n;
        send(FrameType.STDIN, data.subarray(offset, offset + n));
        offset += n;
      }
    };
    /**
     * Reads the caller's stream one chunk at a time (paused while its bytes wait for credit); when
     * the session ends first, lets go of it, paused and without listeners, so that a stream such
     * as process.stdin holds no read (and no process) open after the command is over.
     */
    const relayStream = (input: Readable): Promise<void> =>
      new Promise((resolve, reject) => {
        const cleanup = (): void => {
          input.off('data', onData).off('end', onEnd).off('error', onError);
          releaseStdin = undefined;
        };
        const onData = (chunk: Buffer | string): void => {
          input.pause();
          sendStdin(typeof chunk === 'string' ? Buffer.from(chunk) : chunk).then(() => {
            if (!done) input.resume();
          }, onError);
        };
        const onEnd = (): void => {
          cleanup();
          resolve();
        };
        const onError = (e: unknown): void => {
          cleanup();
          reject(e);
        };
        releaseStdin = () => {
          cleanup();
          input.pause();
          resolve();
        };
        input.on('data', onData).once('end', onEnd).once('error', onError);
        input.resume();
      });
    const forwardStdin = async (input: Readable | Uint8Array): Promise<void> => {
      if (input instanceof Uint8Array) await sendStdin(input);
      else await relayStream(input);
      if (!done) send(FrameType.STDIN_EOF);
    };

    const onFrame = (type: number, payload: Buffer): void => {
      switch (type) {
        case FrameType.STARTED:
          pid = decodeStarted(payload);
          request.onStarted?.(pid);
          if (request.stdin !== undefined) forwardStdin(request.stdin).catch((e: unknown) => finish(e));
          break;
        case FrameType.STDOUT:
          if (!request.onStdout) stdout.push(payload);
          else if (request.onStdout(payload) === false) stream.pause();
          break;
        case FrameType.STDERR:
          if (!request.onStderr) stderr.push(payload);
          else if (request.onStderr(payload) === false) stream.pause();
          break;
        case FrameType.STDIN_ACK:
          credit += decodeStdinAck(payload);
          acknowledged = true;
          creditWaiter?.();
          break;
        case FrameType.EXIT: {
          const status = decodeExit(payload);
          finish(undefined, {
            exitCode: shellStatus(status),
            signaled: status.signaled,
            ...(status.signaled ? { signal: status.code } : {}),
            stdout: Buffer.concat(stdout),
            stderr: Buffer.concat(stderr),
            pid,
          });
          break;
        }
        case FrameType.ERROR: {
          const error = decodeError(payload);
          finish(new ExecRemoteError(error.errno, error.message));
          break;
        }
        // Like kerf's client, other frame types are ignored.
      }
    };
    function onData(chunk: Buffer): void {
      try {
        for (const frame of decoder.push(chunk)) {
          onFrame(frame.type, frame.payload);
          if (done) return;
        }
      } catch (e) {
        finish(new ExecLostConnectionError('(the agent broke the protocol)', { cause: e }));
      }
    }
    function onEnd(): void {
      finish(new ExecLostConnectionError(pid < 0 ? 'before the command started' : 'before the command exited'));
    }
    function onError(e: Error): void {
      finish(new ExecLostConnectionError(`(${e.message})`, { cause: e }));
    }
    function onAbort(): void {
      if (pid >= 0) send(FrameType.SIGNAL, encodeSignal(ABORT_SIGNAL));
      finish(signal!.reason);
    }

    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    request.onControl?.({
      signal: (signo) => {
        if (pid >= 0 && !done) send(FrameType.SIGNAL, encodeSignal(signo));
      },
      resize: (size) => {
        if (!done) send(FrameType.RESIZE, encodeResize(size));
      },
      resumeOutput: () => {
        if (!done) stream.resume();
      },
    });
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
    stream.write(open);
  });
}
