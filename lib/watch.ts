/**
 * Watching a host: instances added and removed, status changes with their cause, pool changes,
 * transactions applied and failed, and (on request) instances that stop answering, as an
 * EventEmitter and an async iterator.
 *
 * The kernel sends no notification on its files (core.c: "TODO: Notify status file"), so the
 * watcher reads them and reports differences: the instance listing with each `id` and `status`,
 * the pool tree (compared as bytes), and `overlays/` (a transaction's status and tag until final).
 * When it can read the kernel log (`/dev/kmsg`, which wakes a reader on every new record) it reads
 * the files when a kernel record about instances, overlays, the pool or kexec arrives, once more
 * `SETTLE_MS` later (for a record logged just before its change shows), and reads the statuses
 * every `safetyIntervalMs` for what the kernel does not log (a kexec load logs nothing without
 * KEXEC_FILE_DEBUG). Without the log (EPERM under dmesg_restrict, or `wake: 'poll'`) it reads them
 * every `intervalMs`. `mode` says which.
 *
 * The watcher keeps the process alive until close() (as fs.watch does).
 *
 * Causes: `requested` when this process asked for that very transition through its Host,
 * `crashed` for `active` -> `loaded` without such a request (a panic halts back to the pool,
 * spawn.c; so does a poweroff from inside), `external` for any other change (another tool).
 */
import { EventEmitter } from 'node:events';
import { probeLiveness } from './channels';
import { isSystemError } from './errors';
import type { InstanceStatus } from './instance';
import { MK_DEVICE_TREE, MK_INSTANCES, MK_OVERLAYS, instanceDir, txDir, txIds } from './kernfs';
import type { DeviceHandle, System } from './system/system';
import { RequestLog } from './requests';

export { RequestLog };

export type StatusCause = 'requested' | 'crashed' | 'external';

export type WatchEvent =
  | { type: 'instance-added'; name: string; id: number; status: InstanceStatus }
  | { type: 'instance-removed'; name: string; id: number }
  | { type: 'status'; name: string; id: number; from: InstanceStatus; to: InstanceStatus; cause: StatusCause }
  | { type: 'pool-changed' }
  | { type: 'transaction'; id: number; status: 'applied' | 'failed'; resources: string }
  /** an `active` instance that answered the liveness probe stopped answering (its kernel hangs); with `liveness` */
  | { type: 'hung'; name: string; id: number }
  /** an instance reported `hung` answers again; with `liveness` */
  | { type: 'responsive'; name: string; id: number };

/**
 * One liveness probe done (with `liveness`), emitted as a `probe` event only, not queued for the
 * iterator: how long the instance took to answer or to count as hung (a daemon's latency metric).
 */
export interface ProbeReport {
  name: string;
  id: number;
  answer: 'alive' | 'hung';
  durationMs: number;
}

export interface LivenessWatchOptions {
  /** how often every `active` instance is probed, ms (default 1000) */
  intervalMs?: number;
  /** connects per probe before an instance counts as hung (default 5) */
  attempts?: number;
  /** how long each connect waits, ms (default 100) */
  attemptMs?: number;
}

export interface WatchOptions {
  /**
   * How the watcher learns that something may have changed: `'kmsg'` (default) wakes on new
   * kernel log records when `/dev/kmsg` can be read and polls otherwise; `'poll'` never reads the log.
   */
  wake?: 'kmsg' | 'poll';
  /** polling: how often the kernel's files are read, ms (default 250) */
  intervalMs?: number;
  /** following the kernel log: how often the statuses are read anyway, for a kexec load the kernel does not log, ms (default 5000) */
  safetyIntervalMs?: number;
  /** probe `active` instances and report `hung` and `responsive` events (default off; `true` for the defaults) */
  liveness?: boolean | LivenessWatchOptions;
  signal?: AbortSignal;
}

/** How long a host halt seen in the log may explain a status change, ms. */
const HALT_MEMORY_MS = 10_000;

/** After a log record woke a reading, the files are read once more this much later, ms. */
export const SETTLE_MS = 25;

/**
 * Kernel records that can come with a change the watcher reports: multikernel's own lines (core.c,
 * overlay.c, baseline.c, hotplug.c, mem.c, kexec_core.c: "Multikernel instance 3 is now active",
 * "Overlay transaction 7 applied successfully", "Freed multikernel ID 3", ...). Only records of the
 * kernel facility count: user space writes to /dev/kmsg with facility user (1) or above.
 */
const RELEVANT = /multikernel|instance|overlay|pool|baseline|kexec|hotplug|halt/i;

/**
 * The host's own halts, as core.c logs them: "Multikernel instance %d halted (graceful)" and
 * "Force halting multikernel instance %d via NMI". A spawn that halts by itself (a panic, a
 * poweroff inside) is logged only as "Instance %d (%s) halted, CPUs parking in pool".
 */
const HOST_HALT = /^(?:Multikernel instance (\d+) halted \(graceful\)|Force halting multikernel instance (\d+) via NMI)/;

/** The text of a /dev/kmsg record of the kernel facility (`"<prio>,<seq>,<usec>,<flags>;<text>"`), else undefined. */
function kernelText(record: string): string | undefined {
  const semi = record.indexOf(';');
  const prio = Number(record.slice(0, record.indexOf(',')));
  return semi > 0 && Number.isInteger(prio) && prio >> 3 === 0 ? record.slice(semi + 1).split('\n', 1)[0]! : undefined;
}

/** Whether a /dev/kmsg record may announce a change. */
export function relevantRecord(record: string): boolean {
  const text = kernelText(record);
  return text !== undefined && RELEVANT.test(text);
}

/** The instance id of a host halt the record logs (a halt some tool asked for), else undefined. */
export function hostHaltOf(record: string): number | undefined {
  const m = HOST_HALT.exec(kernelText(record) ?? '');
  return m ? Number(m[1] ?? m[2]) : undefined;
}


interface Seen {
  instances: Map<string, { id: number; status: InstanceStatus }>;
  pool: Buffer | undefined;
  /** status, and the resources tag once the status is final */
  txs: Map<number, { status: string; resources?: string }>;
}

function positive(what: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${what} must be a positive integer, got ${value}`);
  return value;
}

async function text(system: System, path: string): Promise<string | undefined> {
  return system.readFile(path).then(
    (b) => b.toString('utf8').trim(),
    () => undefined,
  );
}

export class HostWatcher extends EventEmitter implements AsyncIterable<WatchEvent> {
  readonly #system: System;
  readonly #requests: RequestLog;
  readonly #intervalMs: number;
  readonly #safetyIntervalMs: number;
  readonly #liveness: Required<LivenessWatchOptions> | undefined;
  #mode: 'kmsg' | 'poll';
  #seen: Seen | undefined;
  #timer: NodeJS.Timeout | undefined;
  #settle: NodeJS.Timeout | undefined;
  #livenessTimer: NodeJS.Timeout | undefined;
  #scanning = false;
  #again = false;
  #closed = false;
  #log: DeviceHandle | undefined;
  readonly #stop = new AbortController();
  readonly #queue: WatchEvent[] = [];
  #wake: (() => void) | undefined;
  readonly #onAbort = () => this.close();
  readonly #signal: AbortSignal | undefined;
  /** per instance id, the newest request this watcher attributed a change to */
  readonly #attributed = new Map<number, number>();
  /** the newest request when the first reading was taken: what it shows is no change, so those requests explain nothing */
  #since = 0;
  /** ids of active instances reported hung */
  readonly #hung = new Set<number>();
  /** ids of active instances that answered a probe since they became active (a booting kernel answers nothing yet) */
  readonly #answered = new Set<number>();
  /** instance id -> when the kernel log showed a host halt for it (graceful or forced), not yet matched to a status change */
  readonly #hostHalts = new Map<number, number>();

  /** Made by `host.watch()`. */
  constructor(system: System, requests: RequestLog, options: WatchOptions = {}) {
    super();
    this.#system = system;
    this.#requests = requests;
    this.#intervalMs = positive('intervalMs', options.intervalMs ?? 250);
    this.#safetyIntervalMs = positive('safetyIntervalMs', options.safetyIntervalMs ?? 5000);
    const wake = options.wake ?? 'kmsg';
    if (wake !== 'kmsg' && wake !== 'poll') throw new RangeError(`wake must be 'kmsg' or 'poll', got ${String(wake)}`);
    this.#mode = wake;
    const live = options.liveness === true ? {} : options.liveness === false ? undefined : options.liveness;
    this.#liveness = live && {
      intervalMs: positive('liveness.intervalMs', live.intervalMs ?? 1000),
      attempts: positive('liveness.attempts', live.attempts ?? 5),
      attemptMs: positive('liveness.attemptMs', live.attemptMs ?? 100),
    };
    this.#signal = options.signal;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    if (this.#signal?.aborted) this.close();
    else void this.#start();
  }

  /** Resolves once the first reading is taken: changes after it are reported. */
  get ready(): Promise<void> {
    return this.#seen !== undefined || this.#closed ? Promise.resolve() : new Promise((resolve) => this.once('ready', resolve));
  }

  /** `'kmsg'` while new kernel log records wake the watcher, `'poll'` while it reads on a timer. */
  get mode(): 'kmsg' | 'poll' {
    return this.#mode;
  }

  async #start(): Promise<void> {
    if (this.#mode === 'kmsg') {
      // opened before the first reading, so that nothing logged after it is missed
      this.#log = await this.#system.openKernelLog().catch(() => undefined);
      if (this.#log === undefined) this.#mode = 'poll';
      else if (this.#closed) void this.#log.close();
      else void this.#follow(this.#log);
    }
    await this.#scan();
    if (this.#liveness !== undefined && !this.#closed) this.#livenessTimer = setTimeout(() => void this.#probe(), this.#liveness.intervalMs);
  }

  /** Reads kernel log records until closed; a relevant one wakes a reading. */
  async #follow(log: DeviceHandle): Promise<void> {
    for (;;) {
      let record: Buffer;
      try {
        record = await log.read({ signal: this.#stop.signal });
      } catch (err) {
        if (this.#closed) return;
        // records were overwritten before we read them: one of them may have mattered
        if (isSystemError(err, 'EPIPE')) {
          this.#scanSoon();
          continue;
        }
        // the log cannot be followed any more: fall back to polling
        this.#mode = 'poll';
        void log.close();
        this.#log = undefined;
        if (!this.#scanning) this.#arm();
        return;
      }
      const text = record.toString('utf8');
      const halted = hostHaltOf(text);
      if (halted !== undefined) this.#hostHalts.set(halted, Date.now());
      if (relevantRecord(text)) this.#scanSoon();
    }
  }

  /** A reading now, or right after the one running (the first one included). */
  #scanSoon(): void {
    clearTimeout(this.#settle);
    this.#settle = setTimeout(() => this.#scanNow(), SETTLE_MS);
    this.#scanNow();
  }

  #scanNow(): void {
    if (this.#scanning) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    void this.#scan();
  }

  /**
   * Reads the files and reports differences, again while asked to meanwhile; then arms the timer.
   * `light`: the safety reading, for what the kernel does not log (a kexec load changes a status):
   * only the listing and the statuses; ids, the pool and the transactions change with a log record.
   */
  async #scan(light = false): Promise<void> {
    this.#scanning = true;
    do {
      this.#again = false;
      const since = this.#requests.seq;
      const now = await this.#read(light);
      light = false;
      if (this.#closed) return;
      const was = this.#seen;
      // A halt nobody here asked for: the log says whether a tool halted it or it crashed, and its
      // record may still be on the way to this reader (a reading woken otherwise): wait a moment.
      if (was !== undefined && this.#log !== undefined && this.#unexplainedHalt(was, now)) {
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        if (this.#closed) return;
      }
      this.#seen = now;
      if (was === undefined) {
        this.#since = since;
        this.emit('ready');
      }
      else this.#diff(was, now);
    } while (this.#again);
    this.#scanning = false;
    this.#arm();
  }

  #arm(): void {
    clearTimeout(this.#timer);
    const kmsg = this.#mode === 'kmsg';
    this.#timer = setTimeout(() => void this.#scan(kmsg), kmsg ? this.#safetyIntervalMs : this.#intervalMs);
  }

  /** Probes every active instance; reports the ones that stop or start answering again. */
  async #probe(): Promise<void> {
    const live = this.#liveness!;
    const active = [...this.#seen!.instances].filter(([, i]) => i.status === 'active');
    await Promise.all(
      active.map(async ([name, { id }]) => {
        const began = performance.now();
        const answer = await probeLiveness(this.#system, id, { attempts: live.attempts, attemptMs: live.attemptMs, signal: this.#stop.signal }).catch(() => undefined);
        if (this.#closed || answer === undefined) return;
        this.emit('probe', { name, id, answer, durationMs: performance.now() - began } satisfies ProbeReport);
        if (answer === 'alive') {
          this.#answered.add(id);
          if (this.#hung.delete(id)) this.#push({ type: 'responsive', name, id });
        } else if (this.#answered.has(id) && !this.#hung.has(id)) {
          // only a kernel that answered once is hung when silent: one still booting is not
          this.#hung.add(id);
          this.#push({ type: 'hung', name, id });
        }
      }),
    );
    if (!this.#closed) this.#livenessTimer = setTimeout(() => void this.#probe(), live.intervalMs);
  }

  /**
   * What the files show now; a listing that cannot be read keeps what was seen (a read error is no
   * change). `light`: statuses only, for names already seen (see #scan).
   */
  async #read(light: boolean): Promise<Seen> {
    const names = await this.#system.readdir(MK_INSTANCES).catch(() => undefined);
    const instances = names === undefined ? new Map(this.#seen?.instances) : new Map<string, { id: number; status: InstanceStatus }>();
    for (const name of names ?? []) {
      const known = light ? this.#seen!.instances.get(name) : undefined;
      const id = known !== undefined ? String(known.id) : await text(this.#system, `${instanceDir(name)}/id`);
      const status = await text(this.#system, `${instanceDir(name)}/status`);
      // gone between the listing and the reads: it is not there (an unreadable one shows up once readable)
      if (id !== undefined && status !== undefined) instances.set(name, { id: Number(id), status: status as InstanceStatus });
    }
    if (light) return { instances, pool: this.#seen!.pool, txs: this.#seen!.txs };
    const pool = (await this.#system.readFile(MK_DEVICE_TREE).catch(() => undefined)) ?? this.#seen?.pool;
    const listed = await this.#system.readdir(MK_OVERLAYS).catch(() => undefined);
    const txs = listed === undefined ? new Map(this.#seen?.txs) : new Map<number, { status: string; resources?: string }>();
    for (const id of txIds(listed ?? [])) {
      const known = this.#seen?.txs.get(id);
      // a final status does not change again (until an rmdir removes it): read only new and pending ones
      if (known?.resources !== undefined) {
        txs.set(id, known);
        continue;
      }
      const status = (await text(this.#system, `${txDir(id)}/status`)) ?? 'pending';
      const final = status === 'applied' || status === 'failed';
      txs.set(id, final ? { status, resources: (await text(this.#system, `${txDir(id)}/resources`)) ?? '' } : { status });
    }
    return { instances, pool, txs };
  }

  /** A request of this process for that transition, not yet attributed and made after the first reading. */
  #asked(id: number, to: InstanceStatus): number | undefined {
    return this.#requests.asked(id, to, Math.max(this.#attributed.get(id) ?? 0, this.#since));
  }

  /** A host halt logged for `id` in the last `HALT_MEMORY_MS` (a halt of a loaded instance changes no status: it is forgotten). */
  #haltedByHost(id: number): boolean {
    const at = this.#hostHalts.get(id);
    return at !== undefined && Date.now() - at < HALT_MEMORY_MS;
  }

  /** Whether `now` shows an instance gone from active to loaded with no request here and no host halt logged. */
  #unexplainedHalt(was: Seen, now: Seen): boolean {
    for (const [name, i] of now.instances) {
      const before = was.instances.get(name);
      if (before?.id === i.id && before.status === 'active' && i.status === 'loaded' && !this.#haltedByHost(i.id) && this.#asked(i.id, 'loaded') === undefined) return true;
    }
    return false;
  }

  #diff(was: Seen, now: Seen): void {
    for (const [name, i] of now.instances) {
      const before = was.instances.get(name);
      if (!before || before.id !== i.id) {
        if (before) this.#push({ type: 'instance-removed', name, id: before.id });
        this.#push({ type: 'instance-added', name, id: i.id, status: i.status });
        continue;
      }
      if (before.status === i.status) continue;
      // a hang ends with the halt that stops it (the status event reports that)
      if (before.status === 'active') {
        this.#hung.delete(i.id);
        this.#answered.delete(i.id);
      }
      const seq = this.#asked(i.id, i.status);
      if (seq !== undefined) this.#attributed.set(i.id, seq);
      // a host halt logged for it: a tool halted it (ours included); without one, it halted by itself
      const haltedByHost = this.#haltedByHost(i.id);
      this.#hostHalts.delete(i.id);
      const cause: StatusCause = seq !== undefined ? 'requested' : before.status === 'active' && i.status === 'loaded' && !haltedByHost ? 'crashed' : 'external';
      this.#push({ type: 'status', name, id: i.id, from: before.status, to: i.status, cause });
    }
    for (const [name, i] of was.instances) if (!now.instances.has(name)) this.#push({ type: 'instance-removed', name, id: i.id });
    if (was.pool !== undefined && now.pool !== undefined && !was.pool.equals(now.pool)) this.#push({ type: 'pool-changed' });
    for (const [id, tx] of now.txs) {
      if (tx.resources === undefined || was.txs.get(id)?.resources !== undefined) continue;
      this.#push({ type: 'transaction', id, status: tx.status as 'applied' | 'failed', resources: tx.resources });
    }
  }

  #push(event: WatchEvent): void {
    this.#queue.push(event);
    this.emit('event', event);
    this.#wake?.();
  }

  /** Stops reading; the iterator ends. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#settle);
    clearTimeout(this.#livenessTimer);
    this.#stop.abort();
    void this.#log?.close();
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.emit('ready');
    this.#wake?.();
    this.emit('close');
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    for (;;) {
      const next = this.#queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }
}
