/**
 * The supervising daemon behind `mkctl daemon` (issue 12): it loads a host spec, applies it, tells
 * systemd it is ready (sd_notify, through the System door), and then keeps the instances the spec
 * names the way the spec says, from the library's watcher events:
 *
 * - an instance that goes `active -> loaded` without this daemon asking (a panic, a poweroff
 *   inside, another tool's halt) is restarted, preserved or left stopped by its restart policy;
 *   restarts wait a backoff that doubles from `initialMs` to `maxMs` and is reset to `initialMs`
 *   once the instance stayed up for 2 x `maxMs`; more than `limit.attempts` restarts within
 *   `limit.windowMs` and the daemon gives up on it (until a reload), as systemd's StartLimitBurst;
 * - an instance with a health spec that stops answering its probes (the watcher's `hung`) is
 *   force-halted and restarted (`restart`), force-halted (`stop`) or left hanging (`preserve`);
 * - an instance deleted, unloaded or changed behind the daemon's back is drift: logged, and put
 *   right only by a reload (SIGHUP), never silently;
 * - SIGHUP (`reload()`) reads the spec again and applies it; an invalid spec keeps the old one;
 * - SIGTERM (the `run` signal) stops the instances whose spec says `onDaemonStop: stop`.
 *
 * What it says to systemd (sd_notify(3)): READY=1 once applied; STATUS=<one line> whenever it
 * changes; WATCHDOG=1 every WATCHDOG_USEC/2 while the event loop turns and the host answers a
 * cheap read; RELOADING=1 with MONOTONIC_USEC at a reload, READY=1 after it; STOPPING=1 at the end.
 * Its log is one line per event with the journald priority prefix (sd-daemon(3)), no timestamps.
 */
import type { Host } from '../host';
import type { Instance, InstanceStatus } from '../instance';
import { MultikernelError } from '../errors';
import { MK_INSTANCES } from '../kernfs';
import type { HostWatcher, LivenessWatchOptions, ProbeReport, WatchEvent, WatchOptions } from '../watch';
import type { HostSpec, InstanceSpecEntry, PlanStep, SpecIssue } from '../spec/types';
import { loadSpecFile } from '../spec';
import { apply, plan } from '../spec/engine';

/** journald priorities (sd-daemon(3)): the `<N>` prefix of a log line. */
export const PRIORITY = { err: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;
export type Priority = (typeof PRIORITY)[keyof typeof PRIORITY];

/** Writes one log line; `journalLine` makes the text journald reads. */
export type DaemonLog = (priority: Priority, message: string) => void;

/** `<priority>message\n`, the message on one line (a journald record per line). */
export function journalLine(priority: Priority, message: string): string {
  return `<${priority}>${message.replace(/\s*\n\s*/g, ' ')}\n`;
}

/** Why an instance was restarted: the `reason` label of multikernel_instance_restarts_total. */
export type RestartReason = 'crashed' | 'external' | 'hung' | 'failed-start';

/** What the daemon reports to its metrics (lib/daemon/metrics.ts implements it with prom-client). */
export interface DaemonMetricsSink {
  restart(instance: string, reason: RestartReason): void;
  gaveUp(instance: string): void;
  probe(report: ProbeReport): void;
  transactionFailed(): void;
  applyStep(step: PlanStep, failed: boolean): void;
}

/** The timers the daemon uses: the real ones by default, a fake clock in tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const REAL_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface DaemonOptions {
  host: Host;
  /** the spec file, read at start and at every reload */
  specPath: string;
  /** sd_notify: `(state) => host.system.notify(state)` */
  notify(state: string): Promise<boolean>;
  log: DaemonLog;
  metrics?: DaemonMetricsSink;
  /** delete instances the spec does not name (apply's prune) */
  prune?: boolean;
  /** where WATCHDOG_USEC and WATCHDOG_PID are read (default process.env) */
  env?: Readonly<Record<string, string | undefined>>;
  /** this process's pid, compared with WATCHDOG_PID (default process.pid) */
  pid?: number;
  /** how long a graceful halt at the daemon's stop may take before a forced one, ms (default 20000) */
  stopTimeoutMs?: number;
  /** how the watcher learns of changes (default: the kernel log, else polling; tests poll) */
  watch?: Pick<WatchOptions, 'wake' | 'intervalMs' | 'safetyIntervalMs'>;
  clock?: Clock;
}

/** Exit codes of `run()`: 0 stopped cleanly, 2 the spec could not be loaded at start. */
export const DAEMON_EXIT = { ok: 0, spec: 2 } as const;

/** Per instance: where its restarts stand. */
interface Supervision {
  /** when each restart within the current window was made */
  starts: number[];
  /** the backoff before the next restart, ms (undefined: the policy's initialMs) */
  nextDelayMs?: number;
  /** a restart waiting for its backoff */
  pending?: { timer: unknown; delayMs: number; attempt: number };
  /** resets the backoff once the instance stayed up long enough */
  stable?: unknown;
  /** the restart limit was reached: no more restarts until a reload */
  gaveUp?: string;
  /** what the policy left it as: "crashed, preserved", "hung, preserved", "stopped (policy stop)" */
  left?: string;
}

/** "250 ms", "4 s", "1.5 s" */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${Math.round(ms / 100) / 10} s`;
}

function messageOf(err: unknown): string {
  return (err as Error).message;
}

/** "1 step", "3 steps" */
function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Resolves when `signal` is aborted (at once when it is already). */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    signal.addEventListener('abort', () => resolve(), { once: true });
    if (signal.aborted) resolve();
  });
}

/** What a restart comes after, for the log. */
const AFTER: Record<RestartReason, string> = { crashed: 'it crashed', external: 'it was halted', hung: 'a hang', 'failed-start': 'a failed start' };

const NO_METRICS: DaemonMetricsSink = { restart() {}, gaveUp() {}, probe() {}, transactionFailed() {}, applyStep() {} };

function isSpecError(err: unknown): err is MultikernelError & { issues: SpecIssue[] } {
  return err instanceof MultikernelError && err.code === 'ERR_MK_INVALID_SPEC' && Array.isArray((err as { issues?: unknown }).issues);
}

/** The watcher's liveness settings for the spec's health checks: the shortest interval, the most patient probe. */
export function livenessOf(spec: HostSpec): LivenessWatchOptions | undefined {
  const checks = spec.instances.flatMap((i) => (i.health ? [i.health] : []));
  if (checks.length === 0) return undefined;
  return {
    intervalMs: Math.min(...checks.map((h) => h.intervalMs)),
    attempts: Math.max(...checks.map((h) => h.failures)),
    attemptMs: Math.max(...checks.map((h) => h.timeoutMs)),
  };
}

function sameLiveness(a: LivenessWatchOptions | undefined, b: LivenessWatchOptions | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class Daemon {
  readonly #host: Host;
  readonly #specPath: string;
  readonly #notify: (state: string) => Promise<boolean>;
  readonly #log: DaemonLog;
  readonly #metrics: DaemonMetricsSink;
  readonly #prune: boolean;
  readonly #env: Readonly<Record<string, string | undefined>>;
  readonly #pid: number;
  readonly #stopTimeoutMs: number;
  readonly #watchOptions: Pick<WatchOptions, 'wake' | 'intervalMs' | 'safetyIntervalMs'>;
  readonly #clock: Clock;

  #spec: HostSpec | undefined;
  #signal: AbortSignal | undefined;
  #watcher: HostWatcher | undefined;
  #liveness: LivenessWatchOptions | undefined;
  readonly #statuses = new Map<string, InstanceStatus>();
  readonly #supervision = new Map<string, Supervision>();
  /** instances changed behind the daemon's back: name -> what happened */
  readonly #drift = new Map<string, string>();
  /** one line on the state of the last apply, when it did not converge */
  #applyNote: string | undefined;
  #applying: number | undefined;
  #reloadError: string | undefined;
  #ready = false;
  #stopping = false;
  #reloadWanted = false;
  #lastStatus: string | undefined;
  #notifyFailed = false;
  #queue: Promise<void> = Promise.resolve();
  #watchdog: unknown;
  /** the loops reading the watchers' events (a reload may replace the watcher) */
  readonly #consumers = new Set<Promise<void>>();

  constructor(options: DaemonOptions) {
    this.#host = options.host;
    this.#specPath = options.specPath;
    this.#notify = options.notify;
    this.#log = options.log;
    this.#metrics = options.metrics ?? NO_METRICS;
    this.#prune = options.prune === true;
    this.#env = options.env ?? process.env;
    this.#pid = options.pid ?? process.pid;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 20_000;
    this.#watchOptions = options.watch ?? {};
    this.#clock = options.clock ?? REAL_CLOCK;
  }

  /** The spec in force (after start: the last one that loaded). */
  get spec(): HostSpec | undefined {
    return this.#spec;
  }

  /** The STATUS= line last sent. */
  get status(): string | undefined {
    return this.#lastStatus;
  }

  /**
   * Loads and applies the spec, says READY=1 and supervises until `signal` aborts (SIGTERM);
   * then stops the instances marked `onDaemonStop: stop` and resolves with the exit code.
   */
  async run(signal: AbortSignal): Promise<number> {
    this.#signal = signal;
    this.#log(PRIORITY.info, `starting: spec ${this.#specPath}${this.#prune ? ', prune' : ''}`);
    try {
      this.#spec = await loadSpecFile(this.#specPath);
    } catch (err) {
      this.#logSpecError(err);
      await this.#send(`STATUS=spec ${this.#specPath} could not be loaded: ${messageOf(err)}`);
      return DAEMON_EXIT.spec;
    }
    this.#startWatchdog();
    await this.#run(() => this.#applySpec());
    if (!signal.aborted) {
      this.#watch();
      await this.#watcher!.ready;
      await this.#readStatuses();
      this.#ready = true;
      await this.#sendWithStatus('READY=1');
      this.#log(PRIORITY.notice, `ready: ${this.#lastStatus}`);
      if (this.#reloadWanted) this.reload();
    }
    await aborted(signal);
    await this.#stop();
    return DAEMON_EXIT.ok;
  }

  /** SIGHUP: reads the spec again and applies it (RELOADING=1 ... READY=1). Queued behind a running apply. */
  reload(): void {
    if (this.#stopping) return;
    if (!this.#ready) {
      // before READY=1 systemd knows no reload: do it once ready
      this.#reloadWanted = true;
      return;
    }
    this.#reloadWanted = false;
    const usec = process.hrtime.bigint() / 1000n;
    void this.#send(`RELOADING=1\nMONOTONIC_USEC=${usec}`);
    this.#log(PRIORITY.notice, `reloading ${this.#specPath}`);
    void this.#run(async () => {
      let spec: HostSpec;
      try {
        spec = await loadSpecFile(this.#specPath);
      } catch (err) {
        this.#logSpecError(err);
        this.#reloadError = `reload failed (${isSpecError(err) ? plural(err.issues.length, 'spec error') : messageOf(err)}), keeping the previous spec`;
        await this.#sendWithStatus('READY=1');
        return;
      }
      this.#reloadError = undefined;
      this.#spec = spec;
      // a reload starts supervision afresh, as `systemctl reset-failed` does; drift is re-applied
      for (const sup of this.#supervision.values()) this.#forget(sup);
      this.#supervision.clear();
      this.#drift.clear();
      await this.#applySpec();
      if (this.#stopping) return;
      if (!sameLiveness(this.#liveness, livenessOf(spec))) this.#watch();
      await this.#watcher!.ready;
      await this.#readStatuses();
      await this.#sendWithStatus('READY=1');
      this.#log(PRIORITY.notice, `reloaded: ${this.#lastStatus}`);
    });
  }

  /** Runs `fn` after whatever runs (apply, a restart, a reload): one change to the host at a time. */
  #run(fn: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(fn).catch((err: unknown) => this.#log(PRIORITY.err, `unexpected: ${messageOf(err)}`));
    this.#queue = next;
    return next;
  }

  #logSpecError(err: unknown): void {
    if (isSpecError(err)) {
      for (const issue of err.issues) this.#log(PRIORITY.err, `${issue.at.file}:${issue.at.line}:${issue.at.column}: ${issue.pointer}: ${issue.message}`);
      this.#log(PRIORITY.err, `spec ${this.#specPath}: ${plural(err.issues.length, 'error')}`);
    } else {
      this.#log(PRIORITY.err, `spec ${this.#specPath}: ${messageOf(err)}`);
    }
  }

  // ------------------------------------------------------------------ sd_notify

  async #send(state: string): Promise<void> {
    try {
      await this.#notify(state);
      this.#notifyFailed = false;
    } catch (err) {
      // say it once, not at every watchdog ping
      if (!this.#notifyFailed) this.#log(PRIORITY.warning, `sd_notify failed: ${messageOf(err)}`);
      this.#notifyFailed = true;
    }
  }

  /** `state` and the STATUS= line in one datagram. */
  async #sendWithStatus(state: string): Promise<void> {
    this.#lastStatus = this.#statusLine();
    await this.#send(`${state}\nSTATUS=${this.#lastStatus}`);
  }

  /** Sends STATUS= when the line changed. */
  #updateStatus(): void {
    const line = this.#statusLine();
    if (this.#stopping || line === this.#lastStatus) return;
    this.#lastStatus = line;
    void this.#send(`STATUS=${line}`);
  }

  #statusLine(): string {
    const spec = this.#spec!;
    const parts: string[] = [];
    if (this.#applying !== undefined) parts.push(`applying: ${plural(this.#applying, 'step')}`);
    else {
      const wanted = spec.instances.filter((i) => i.autostart && i.kernel !== undefined);
      const running = wanted.filter((i) => this.#statuses.get(i.name) === 'active').length;
      parts.push(`${running}/${wanted.length} instances running`);
    }
    for (const [name, sup] of this.#supervision) {
      const entry = spec.instances.find((i) => i.name === name)!;
      if (sup.pending) parts.push(`${name} restarting in ${formatMs(sup.pending.delayMs)} (attempt ${sup.pending.attempt}/${entry.restart.limit.attempts})`);
      else if (sup.gaveUp !== undefined) parts.push(`${name} ${sup.gaveUp}`);
      else if (sup.left !== undefined) parts.push(`${name} ${sup.left}`);
    }
    if (this.#drift.size > 0) parts.push(`drift: ${[...this.#drift.keys()].join(', ')} (SIGHUP re-applies)`);
    if (this.#applyNote !== undefined) parts.push(this.#applyNote);
    if (this.#reloadError !== undefined) parts.push(this.#reloadError);
    return parts.join('; ');
  }

  // ------------------------------------------------------------------ watchdog

  /**
   * WATCHDOG=1 every WATCHDOG_USEC/2 (sd_watchdog_enabled(3): only when WATCHDOG_PID is unset or
   * names this process), each after a cheap read through the host door (the instance listing):
   * a wedged event loop sends nothing, and neither does a door that does not answer in time.
   */
  #startWatchdog(): void {
    const usec = Number(this.#env.WATCHDOG_USEC ?? '');
    const pid = this.#env.WATCHDOG_PID;
    if (!Number.isSafeInteger(usec) || usec <= 0) return;
    if (pid !== undefined && pid !== '' && Number(pid) !== this.#pid) return;
    const intervalMs = Math.max(1, Math.floor(usec / 2000));
    this.#log(PRIORITY.info, `watchdog: a ping every ${formatMs(intervalMs)}`);
    const tick = async (): Promise<void> => {
      const began = this.#clock.now();
      let timer: unknown;
      const late = new Promise<'late'>((resolve) => (timer = this.#clock.setTimeout(() => resolve('late'), intervalMs)));
      const answer = await Promise.race([
        this.#host.system.readdir(MK_INSTANCES).then(
          () => 'ok' as const,
          (err: unknown) => err,
        ),
        late,
      ]);
      this.#clock.clearTimeout(timer);
      if (this.#stopping) return;
      if (answer === 'ok') await this.#send('WATCHDOG=1');
      else this.#log(PRIORITY.warning, `watchdog: no ping, the host did not answer: ${answer === 'late' ? `no answer within ${formatMs(intervalMs)}` : messageOf(answer)}`);
      // timed from this tick's start: the read does not stretch the interval
      if (!this.#stopping) this.#watchdog = this.#clock.setTimeout(() => void tick(), Math.max(0, intervalMs - (this.#clock.now() - began)));
    };
    this.#watchdog = this.#clock.setTimeout(() => void tick(), 0);
  }

  // ------------------------------------------------------------------ apply

  async #applySpec(): Promise<void> {
    const spec = this.#spec!;
    const signal = this.#signal!;
    this.#applyNote = undefined;
    try {
      const planned = await plan(this.#host, spec, { prune: this.#prune, signal });
      for (const d of planned.drift) this.#log(PRIORITY.warning, `drift: ${d.subject}: ${d.message} (expected ${d.expected}, found ${d.actual})`);
      for (const name of planned.unmanaged) this.#log(PRIORITY.notice, `instance ${name} is not in the spec: left alone (--prune deletes it)`);
      if (planned.steps.length === 0) {
        this.#log(PRIORITY.info, 'apply: the host matches the spec, nothing to do');
        return;
      }
      this.#applying = planned.steps.length;
      this.#updateStatus();
      this.#log(PRIORITY.info, `apply: ${plural(planned.steps.length, 'step')}`);
      const result = await apply(this.#host, spec, {
        prune: this.#prune,
        signal,
        onStep: (step, error) => {
          this.#metrics.applyStep(step, error !== undefined);
          if (error) this.#log(PRIORITY.err, `apply: ${step.action} ${step.subject} failed: ${error.message}`);
          else this.#log(PRIORITY.info, `apply: ${step.action} ${step.subject} (${step.reason})`);
        },
      });
      const failed = result.done.filter((d) => d.error !== undefined).length;
      // a step that failed once and worked when tried again leaves the host converged: that is done
      if (result.converged) this.#log(PRIORITY.info, `apply: done, ${plural(result.done.length, 'step')}`);
      else {
        this.#applyNote = `apply did not converge: ${failed} of ${plural(result.done.length, 'step')} failed`;
        this.#log(PRIORITY.err, `${this.#applyNote}; SIGHUP tries again`);
      }
    } catch (err) {
      if (signal.aborted) this.#log(PRIORITY.warning, 'apply: interrupted by the stop');
      else {
        this.#applyNote = `apply failed: ${messageOf(err)}`;
        this.#log(PRIORITY.err, `${this.#applyNote}; SIGHUP tries again`);
      }
    } finally {
      this.#applying = undefined;
    }
  }

  /** The statuses of the instances on the host now (after an apply; the watcher reports changes from then on). */
  async #readStatuses(): Promise<void> {
    this.#statuses.clear();
    for (const instance of await this.#host.instances().catch(() => [] as Instance[])) {
      const status = await instance.status().catch(() => undefined);
      if (status !== undefined) this.#statuses.set(instance.name, status);
    }
  }

  // ------------------------------------------------------------------ supervision

  /** (Re)starts the watcher, with the liveness probes the spec's health checks ask for. */
  #watch(): void {
    this.#watcher?.close();
    this.#liveness = livenessOf(this.#spec!);
    const watcher = this.#host.watch({ ...this.#watchOptions, ...(this.#liveness ? { liveness: this.#liveness } : {}), signal: this.#signal });
    watcher.on('probe', (report: ProbeReport) => this.#metrics.probe(report));
    this.#watcher = watcher;
    const consumer = this.#consume(watcher);
    this.#consumers.add(consumer);
    void consumer.then(() => this.#consumers.delete(consumer));
  }

  async #consume(watcher: HostWatcher): Promise<void> {
    for await (const event of watcher) {
      this.#onEvent(event);
      this.#updateStatus();
    }
  }

  #entry(name: string): InstanceSpecEntry | undefined {
    return this.#spec!.instances.find((i) => i.name === name);
  }

  #sup(name: string): Supervision {
    let sup = this.#supervision.get(name);
    if (sup === undefined) this.#supervision.set(name, (sup = { starts: [] }));
    return sup;
  }

  /** Clears a supervision's timers. */
  #forget(sup: Supervision): void {
    this.#clock.clearTimeout(sup.pending?.timer);
    this.#clock.clearTimeout(sup.stable);
    sup.pending = undefined;
    sup.stable = undefined;
  }

  #onEvent(event: WatchEvent): void {
    switch (event.type) {
      case 'pool-changed':
        this.#log(PRIORITY.debug, 'the pool changed');
        return;
      case 'transaction':
        if (event.status === 'failed') {
          this.#metrics.transactionFailed();
          this.#log(PRIORITY.warning, `transaction ${event.id} failed ${JSON.stringify(event.resources)}`);
        } else this.#log(PRIORITY.debug, `transaction ${event.id} applied ${JSON.stringify(event.resources)}`);
        return;
      case 'instance-added': {
        this.#statuses.set(event.name, event.status);
        const managed = this.#entry(event.name) !== undefined;
        if (managed && this.#drift.delete(event.name)) this.#log(PRIORITY.notice, `${event.name} is back (id ${event.id}, ${event.status}); SIGHUP re-applies the spec to it`);
        else this.#log(managed ? PRIORITY.info : PRIORITY.notice, `instance ${event.name} (id ${event.id}) appeared${managed ? '' : ', not in the spec: left alone'}`);
        return;
      }
      case 'instance-removed': {
        this.#statuses.delete(event.name);
        if (this.#entry(event.name) === undefined) {
          this.#log(PRIORITY.info, `instance ${event.name} (id ${event.id}), not in the spec, was removed`);
          return;
        }
        this.#forget(this.#sup(event.name));
        this.#supervision.delete(event.name);
        this.#drift.set(event.name, 'deleted');
        this.#log(PRIORITY.warning, `drift: ${event.name} was deleted behind the daemon's back; SIGHUP re-applies the spec`);
        return;
      }
      case 'status':
        this.#statuses.set(event.name, event.to);
        this.#onStatus(event);
        return;
      case 'hung':
        this.#onHung(event.name);
        return;
      case 'responsive':
        this.#log(PRIORITY.notice, `${event.name} answers its probes again`);
        return;
    }
  }

  #onStatus(event: Extract<WatchEvent, { type: 'status' }>): void {
    const { name, from, to, cause } = event;
    const entry = this.#entry(name);
    if (entry === undefined) {
      this.#log(PRIORITY.debug, `instance ${name} (not in the spec): ${from} -> ${to} (${cause})`);
      return;
    }
    const sup = this.#sup(name);
    if (to === 'active') {
      // up (started by us, by apply, or by someone else): the backoff resets once it stays up
      if (cause !== 'requested') {
        this.#log(PRIORITY.notice, `${name} was started behind the daemon's back (${from} -> active)`);
        this.#forget(sup);
        sup.gaveUp = undefined;
      } else this.#log(PRIORITY.debug, `${name}: ${from} -> active`);
      sup.left = undefined;
      this.#drift.delete(name);
      this.#armStable(name, entry, sup);
      return;
    }
    this.#clock.clearTimeout(sup.stable);
    sup.stable = undefined;
    if (cause === 'requested') {
      this.#log(PRIORITY.debug, `${name}: ${from} -> ${to}`);
      return;
    }
    if (from === 'active' && to === 'loaded') {
      this.#log(cause === 'crashed' ? PRIORITY.warning : PRIORITY.notice, cause === 'crashed' ? `${name} crashed (its kernel halted by itself: active -> loaded)` : `${name} was halted by another tool (active -> loaded)`);
      this.#onDown(name, entry, sup, cause);
      return;
    }
    // unloaded, emptied or failed behind our back: drift, put right at the next reload only
    this.#forget(sup);
    this.#drift.set(name, to);
    this.#log(PRIORITY.warning, `drift: ${name} went ${from} -> ${to} behind the daemon's back; SIGHUP re-applies the spec`);
  }

  #onDown(name: string, entry: InstanceSpecEntry, sup: Supervision, reason: RestartReason): void {
    switch (entry.restart.policy) {
      case 'restart':
        this.#scheduleRestart(name, entry, sup, reason);
        return;
      case 'preserve':
        sup.left = `${reason}, preserved`;
        this.#log(PRIORITY.notice, `${name} left loaded for a post-mortem (restart policy preserve)`);
        return;
      case 'stop':
        sup.left = `${reason}, stopped (policy stop)`;
        this.#log(PRIORITY.notice, `${name} stays loaded (restart policy stop)`);
        return;
    }
  }

  #onHung(name: string): void {
    const entry = this.#entry(name);
    if (entry?.health === undefined) {
      this.#log(PRIORITY.info, `${name} does not answer its probes (no health check in the spec: nothing done)`);
      return;
    }
    const policy = entry.restart.policy;
    const sup = this.#sup(name);
    this.#clock.clearTimeout(sup.stable);
    sup.stable = undefined;
    this.#log(PRIORITY.warning, `${name} hangs: ${entry.health.failures} probes unanswered (policy ${policy})`);
    if (policy === 'preserve') {
      sup.left = 'hung, preserved';
      this.#log(PRIORITY.notice, `${name} left hanging for a post-mortem (restart policy preserve)`);
      return;
    }
    void this.#run(async () => {
      try {
        const instance = await this.#host.instance(name);
        await instance.stop({ force: true, timeoutMs: 0 });
        this.#log(PRIORITY.notice, `${name} force-halted`);
      } catch (err) {
        this.#log(PRIORITY.err, `${name}: the forced halt failed: ${messageOf(err)}`);
        return;
      }
      if (policy === 'restart') this.#scheduleRestart(name, entry, sup, 'hung');
      else sup.left = 'hung, stopped (policy stop)';
      this.#updateStatus();
    });
  }

  /** Once the instance stayed up for 2 x the policy's maxMs, its backoff starts from initialMs again. */
  #armStable(name: string, entry: InstanceSpecEntry, sup: Supervision): void {
    this.#clock.clearTimeout(sup.stable);
    if (sup.nextDelayMs === undefined) {
      sup.stable = undefined;
      return;
    }
    sup.stable = this.#clock.setTimeout(() => {
      sup.stable = undefined;
      sup.nextDelayMs = undefined;
      this.#log(PRIORITY.debug, `${name} stayed up ${formatMs(2 * entry.restart.backoff.maxMs)}: its restart backoff starts again from ${formatMs(entry.restart.backoff.initialMs)}`);
    }, 2 * entry.restart.backoff.maxMs);
  }

  #scheduleRestart(name: string, entry: InstanceSpecEntry, sup: Supervision, reason: RestartReason): void {
    const { backoff, limit } = entry.restart;
    const now = this.#clock.now();
    sup.starts = sup.starts.filter((t) => now - t < limit.windowMs);
    if (sup.starts.length >= limit.attempts) {
      sup.gaveUp = `gave up after ${sup.starts.length} restarts within ${formatMs(limit.windowMs)}`;
      this.#metrics.gaveUp(name);
      this.#log(PRIORITY.err, `${name}: ${sup.gaveUp}; left loaded until a reload (SIGHUP)`);
      return;
    }
    const delayMs = sup.nextDelayMs ?? backoff.initialMs;
    sup.nextDelayMs = Math.min(delayMs * 2, backoff.maxMs);
    const attempt = sup.starts.length + 1;
    const timer = this.#clock.setTimeout(() => void this.#run(() => this.#restart(name, sup, reason)), delayMs);
    sup.pending = { timer, delayMs, attempt };
    this.#log(PRIORITY.notice, `${name} restarting in ${formatMs(delayMs)} (attempt ${attempt}/${limit.attempts})`);
  }

  async #restart(name: string, sup: Supervision, reason: RestartReason): Promise<void> {
    const pending = sup.pending;
    // cancelled while it waited its turn: forgotten by a reload, a removal, a start by someone else, the stop
    if (pending === undefined) return;
    sup.pending = undefined;
    const entry = this.#entry(name)!;
    try {
      const instance = await this.#host.instance(name);
      const status = await instance.status();
      /* c8 ignore next 4 -- started by another tool after the backoff ran out and before the watcher's next reading */
      if (status === 'active') {
        this.#log(PRIORITY.info, `${name} runs already: no restart needed`);
        return;
      }
      sup.starts.push(this.#clock.now());
      this.#metrics.restart(name, reason);
      this.#log(PRIORITY.notice, `restarting ${name} (attempt ${pending.attempt}/${entry.restart.limit.attempts}, after ${AFTER[reason]})`);
      await instance.start();
    } catch (err) {
      this.#log(PRIORITY.err, `restart of ${name} failed: ${messageOf(err)}`);
      this.#scheduleRestart(name, entry, sup, 'failed-start');
    } finally {
      this.#updateStatus();
    }
  }

  // ------------------------------------------------------------------ stop

  async #stop(): Promise<void> {
    this.#stopping = true;
    this.#clock.clearTimeout(this.#watchdog);
    await this.#send('STOPPING=1\nSTATUS=stopping');
    this.#log(PRIORITY.notice, 'stopping');
    for (const sup of this.#supervision.values()) this.#forget(sup);
    this.#watcher?.close();
    await this.#queue;
    await Promise.all([...this.#consumers]);
    // what ran meanwhile (a hung instance's forced halt) may have planned a restart
    for (const sup of this.#supervision.values()) this.#forget(sup);
    const spec = this.#spec!;
    await Promise.all(
      spec.instances
        .filter((i) => i.onDaemonStop === 'stop')
        .map(async (entry) => {
          try {
            const instance = await this.#host.instance(entry.name);
            if ((await instance.status()) !== 'active') return;
            this.#log(PRIORITY.info, `stopping ${entry.name} (onDaemonStop: stop)`);
            const { how } = await instance.stop({ force: true, timeoutMs: this.#stopTimeoutMs });
            this.#log(how === 'graceful' ? PRIORITY.info : PRIORITY.warning, `${entry.name} stopped${how === 'graceful' ? '' : ` by force after ${formatMs(this.#stopTimeoutMs)}`}`);
          } catch (err) {
            this.#log(PRIORITY.err, `stopping ${entry.name} failed: ${messageOf(err)}`);
          }
        }),
    );
    this.#log(PRIORITY.notice, 'stopped');
  }
}
