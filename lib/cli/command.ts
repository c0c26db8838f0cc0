/**
 * What a mkctl command is: a name, a help text and a run function that gets its arguments and
 * the process's streams, and resolves with the exit code. Commands never call process.exit and
 * never touch process.stdout directly, so tests drive them with in-memory streams.
 */
import type { Readable } from 'node:stream';

export interface CliOutput {
  /** text, or bytes (`mkctl dump`, console and exec output) */
  write(data: string | Uint8Array): unknown;
  /** progress lines are only drawn on a terminal */
  readonly isTTY?: boolean;
  /** a terminal's size (`mkctl exec -t`) */
  readonly columns?: number;
  readonly rows?: number;
  /** a terminal emits 'resize' on SIGWINCH */
  on?(event: 'resize', listener: () => void): unknown;
  removeListener?(event: 'resize', listener: () => void): unknown;
}

/**
 * What a command reads (`mkctl console`, `mkctl exec -i`): a byte stream; on a terminal it has
 * isTTY and setRawMode, as process.stdin.
 */
export type CliInput = Readable & {
  readonly isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
  readonly isRaw?: boolean;
};

export interface CliIo {
  stdout: CliOutput;
  stderr: CliOutput;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  /** the process's stdin, for the commands that relay it (absent: nothing to read) */
  stdin?: CliInput;
  /** aborted on SIGINT/SIGTERM: commands stop their work and clean up */
  signal: AbortSignal;
  /**
   * Listens for a signal the process otherwise dies of (SIGHUP: `mkctl daemon` reloads on it);
   * returns the function that stops listening. Absent when there is no process to listen on.
   */
  onSignal?(name: 'SIGHUP', listener: () => void): () => void;
}

export interface Command {
  /** words that select it, e.g. ['qemu', 'run'] */
  path: readonly string[];
  summary: string;
  /** the full --help text */
  help: string;
  run(args: string[], io: CliIo): Promise<number>;
}

/**
 * A command as the table lists it: its words and summary, and its module, imported only when the
 * command runs (so `mkctl status` loads neither the QEMU harness nor the exec client).
 */
export interface CommandSpec {
  path: readonly string[];
  summary: string;
  load(): Promise<Command>;
  /**
   * SIGINT and SIGTERM are the command's ordinary stop, not an interruption: its own exit code
   * stands (`mkctl daemon` exits 0 once it stopped cleanly, as systemd expects of a stopped service).
   */
  ownsSignals?: boolean;
}

/** Exit codes shared by all commands. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  timeout: 124,
  harness: 125,
  interrupted: 130,
} as const;

/** A wrong command line: printed with a hint to --help, exit code 2. */
export class UsageError extends Error {
  override get name(): string {
    return 'UsageError';
  }
}
