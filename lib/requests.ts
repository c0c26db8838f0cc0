/**
 * What this process asked of its instances, so that a watcher (lib/watch.ts) can tell a requested
 * change from a crash or another tool's. Its own module: every Host keeps one, and a process that
 * never watches need not load the watcher.
 */
import type { InstanceStatus } from './instance';

/** requests kept per instance */
const REQUESTS_KEPT = 8;

/**
 * The transitions this process asked for: the last few requests per instance id, kept for a
 * minute (memory is bounded by the number of instances; any number of watchers may ask).
 */
export class RequestLog {
  readonly #byId = new Map<number, { to: InstanceStatus; at: number; seq: number }[]>();
  #seq = 0;

  /** This process is about to ask instance `id` to go to `to`. */
  note(id: number, to: InstanceStatus): void {
    const list = this.#byId.get(id) ?? [];
    list.push({ to, at: Date.now(), seq: ++this.#seq });
    // a watcher reads after the fact: a few requests may come before it sees the first one
    this.#byId.set(id, list.slice(-REQUESTS_KEPT));
  }

  /** The sequence number of the newest request (0 before any): requests up to it are older than a reading taken now. */
  get seq(): number {
    return this.#seq;
  }

  /**
   * The sequence number of the newest request for `id` to go to `to`, made within the last
   * minute and newer than `after` (what this watcher already attributed, or its first reading);
   * else undefined. Only the target counts: a reading may see two steps at once (a load and a
   * start between two readings show as ready -> active).
   */
  asked(id: number, to: InstanceStatus, after = 0): number | undefined {
    const list = this.#byId.get(id) ?? [];
    for (let i = list.length - 1; i >= 0; i--) {
      const r = list[i]!;
      if (r.seq <= after || Date.now() - r.at >= 60_000) return undefined;
      if (r.to === to) return r.seq;
    }
    return undefined;
  }
}

