/**
 * Watching a host: instances added and removed, status changes with their cause, pool changes,
 * transactions applied and failed, as an EventEmitter and an async iterator.
 *
 * The kernel sends no notification on these files (core.c: "TODO: Notify status file"), so the
 * watcher reads them every `intervalMs` and reports differences: two small reads per instance,
 * one of the pool tree (compared as bytes), one listing of overlays/. This first version polls;
 * waking on new kernel log lines (`/dev/kmsg` is pollable and the kernel logs each transition)
 * to meet a 50 ms detection delay at 1% of a core is the next step (issue 10).
 *
 * The watcher keeps the process alive until close() (as fs.watch does).
 *
 * Causes: `requested` when this process asked for that very transition through its Host,
 * `crashed` for `active` -> `loaded` without such a request (a panic halts back to the pool,
 * spawn.c; so does a poweroff from inside), `external` for any other change (another tool).
 */
import { EventEmitter } from 'node:events';
import type { InstanceStatus } from './instance';
import { MK_DEVICE_TREE, MK_INSTANCES, MK_OVERLAYS, instanceDir, txDir, txIds } from './kernfs';
import type { System } from './system/system';

export type StatusCause = 'requested' | 'crashed' | 'external';

export type WatchEvent =
  | { type: 'instance-added'; name: string; id: number; status: InstanceStatus }
  | { type: 'instance-removed'; name: string; id: number }
  | { type: 'status'; name: string; id: number; from: InstanceStatus; to: InstanceStatus; cause: StatusCause }
  | { type: 'pool-changed' }
  | { type: 'transaction'; id: number; status: 'applied' | 'failed'; resources: string };

export interface WatchOptions {
  /** how often the kernel's files are read, ms (default 250) */
  intervalMs?: number;
  signal?: AbortSignal;
}

/**
 * The transitions this process asked for: the newest request per instance id, kept for a minute
 * (memory is bounded by the number of instances; any number of watchers may ask).
 */
export class RequestLog {
  readonly #latest = new Map<number, { to: InstanceStatus; at: number; seq: number }>();
  #seq = 0;

  note(id: number, to: InstanceStatus): void {
    this.#latest.set(id, { to, at: Date.now(), seq: ++this.#seq });
  }

  /**
   * The sequence number of the newest request for `id` if it was for `to`, made within the last
   * minute and newer than `after` (what this watcher already attributed); else undefined.
   */
  asked(id: number, to: InstanceStatus, after = 0): number | undefined {
    const r = this.#latest.get(id);
    return r !== undefined && r.to === to && r.seq > after && Date.now() - r.at < 60_000 ? r.seq : undefined;
  }
}

interface Seen {
  instances: Map<string, { id: number; status: InstanceStatus }>;
  pool: Buffer | undefined;
  /** status, and the resources tag once the status is final */
  txs: Map<number, { status: string; resources?: string }>;
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
  #seen: Seen | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #queue: WatchEvent[] = [];
  #wake: (() => void) | undefined;
  readonly #onAbort = () => this.close();
  readonly #signal: AbortSignal | undefined;
  /** per instance id, the newest request this watcher attributed a change to */
  readonly #attributed = new Map<number, number>();

  /** Made by `host.watch()`. */
  constructor(system: System, requests: RequestLog, options: WatchOptions = {}) {
    super();
    this.#system = system;
    this.#requests = requests;
    this.#intervalMs = options.intervalMs ?? 250;
    this.#signal = options.signal;
    if (!Number.isInteger(this.#intervalMs) || this.#intervalMs < 1) throw new RangeError(`intervalMs must be a positive integer, got ${this.#intervalMs}`);
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    if (this.#signal?.aborted) this.close();
    else void this.#tick();
  }

  /** Resolves once the first reading is taken: changes after it are reported. */
  get ready(): Promise<void> {
    return this.#seen !== undefined || this.#closed ? Promise.resolve() : new Promise((resolve) => this.once('ready', resolve));
  }

  /** What the files show now; a listing that cannot be read keeps what was seen (a read error is no change). */
  async #read(): Promise<Seen> {
    const names = await this.#system.readdir(MK_INSTANCES).catch(() => undefined);
    const instances = names === undefined ? new Map(this.#seen?.instances) : new Map<string, { id: number; status: InstanceStatus }>();
    for (const name of names ?? []) {
      const id = await text(this.#system, `${instanceDir(name)}/id`);
      const status = await text(this.#system, `${instanceDir(name)}/status`);
      // gone between the listing and the reads: it is not there (an unreadable one shows up once readable)
      if (id !== undefined && status !== undefined) instances.set(name, { id: Number(id), status: status as InstanceStatus });
    }
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

  async #tick(): Promise<void> {
    const now = await this.#read();
    if (this.#closed) return;
    const was = this.#seen;
    this.#seen = now;
    if (was === undefined) this.emit('ready');
    else this.#diff(was, now);
    this.#timer = setTimeout(() => void this.#tick(), this.#intervalMs);
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
      const seq = this.#requests.asked(i.id, i.status, this.#attributed.get(i.id));
      if (seq !== undefined) this.#attributed.set(i.id, seq);
      const cause: StatusCause = seq !== undefined ? 'requested' : before.status === 'active' && i.status === 'loaded' ? 'crashed' : 'external';
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
