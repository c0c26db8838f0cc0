/**
 * What runs in progress leave behind when the Node process ends underneath them: QEMU processes
 * and scratch directories. On 'exit' (process.exit(), an uncaught exception) and on SIGINT,
 * SIGTERM and SIGHUP they are removed synchronously. A signal nobody else listens for is then
 * raised again, so the process ends as it would have without us; a program that listens for it
 * itself decides what happens next (mkctl aborts the run and exits 130 or 143).
 */
import { rmSync } from 'node:fs';

export type Interruption = NodeJS.Signals | 'exit';

export interface ActiveRun {
  scratch: string;
  /** kills QEMU now (synchronously) and makes the run reject */
  interrupt(by: Interruption): void;
}

/** The parts of `process` the registry uses (a stand-in in tests). */
export interface ProcessLike {
  readonly pid: number;
  on(event: string, listener: (signal: NodeJS.Signals) => void): unknown;
  removeListener(event: string, listener: (signal: NodeJS.Signals) => void): unknown;
  listenerCount(event: string): number;
  kill(pid: number, signal?: string | number): boolean;
}

const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Signal listeners that belong to signal-exit (tap, nyc, execa and many more load it). It
 * re-raises a signal only when its own listeners are the only ones, and counts them for that in
 * globalThis[Symbol.for('signal-exit emitter')] (v4) and process.__signal_exit_emitter__ (v3).
 * Counting them as nobody keeps the two of us from each leaving the signal to the other, which
 * would leave the process running.
 */
export function signalExitListeners(global: object = globalThis, proc: object = process): number {
  const count = (emitter: unknown): number => {
    const n = (emitter as { count?: unknown } | undefined)?.count;
    return typeof n === 'number' ? n : 0;
  };
  return count((global as Record<symbol, unknown>)[Symbol.for('signal-exit emitter')]) + count((proc as { __signal_exit_emitter__?: unknown }).__signal_exit_emitter__);
}

export class RunRegistry {
  private readonly runs = new Set<ActiveRun>();

  constructor(
    private readonly proc: ProcessLike = process,
    private readonly otherCleanups: () => number = signalExitListeners,
  ) {}

  /** Tracks `run` until the returned function is called; listens on the process meanwhile. */
  add(run: ActiveRun): () => void {
    if (this.runs.size === 0) this.listen(true);
    this.runs.add(run);
    return () => {
      if (this.runs.delete(run) && this.runs.size === 0) this.listen(false);
    };
  }

  private readonly onExit = (): void => {
    this.cleanUp('exit');
  };

  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.cleanUp(signal);
    if (this.proc.listenerCount(signal) <= this.otherCleanups()) this.proc.kill(this.proc.pid, signal);
  };

  private cleanUp(by: Interruption): void {
    for (const run of this.runs) {
      run.interrupt(by);
      rmSync(run.scratch, { recursive: true, force: true });
    }
    this.runs.clear();
    this.listen(false);
  }

  private listen(on: boolean): void {
    if (on) {
      this.proc.on('exit', this.onExit);
      for (const s of SIGNALS) this.proc.on(s, this.onSignal);
    } else {
      this.proc.removeListener('exit', this.onExit);
      for (const s of SIGNALS) this.proc.removeListener(s, this.onSignal);
    }
  }
}
