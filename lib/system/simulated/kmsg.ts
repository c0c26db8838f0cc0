/**
 * /dev/kmsg of the simulated kernel: a reader of the records logged after it was opened, one
 * record per read, as Documentation/ABI/testing/dev-kmsg describes the device and
 * kernel/printk/printk.c implements it (devkmsg_open, devkmsg_llseek SEEK_END, devkmsg_read):
 *
 * - each read returns one whole record `"<prio>,<seq>,<usec>,<flags>;<text>\n"`; a reader that
 *   waits (non-blocking fds are polled) wakes when a new record is logged;
 * - a reader whose next record was overwritten in the ring gets `EPIPE` once, and goes on with
 *   the oldest record left (devkmsg_read: "our last seen message is gone, return error and reset");
 * - a buffer smaller than the record fails `EINVAL`;
 * - `write()` on the read-only open fails `EBADF`.
 *
 * Simplifications: every line is `<6>` (KERN_INFO, facility kern: the simulator keeps the texts,
 * not their levels), the timestamp field is 0, the flags field `-`, and no dictionary lines follow.
 */
import { systemError } from '../../errors';
import type { DeviceHandle } from '../system';

const KMSG = '/dev/kmsg';

/** What the reader needs of the simulated kernel. */
export interface KmsgSource {
  /** the record with sequence number `seq` if logged and still kept, and the oldest one's number */
  record(seq: number): Promise<{ first: number; text?: string }>;
  /** calls `wake` when a record may have been logged; returns the unsubscribe function */
  subscribe(wake: () => void): () => void;
}

export class SimKernelLog implements DeviceHandle {
  #seq: number;
  #closed = false;
  readonly #source: KmsgSource;
  /** wakes a read waiting for a record when the reader is closed */
  #interrupt: (() => void) | undefined;

  /** `next`: the sequence number the next record logged will get (SEEK_END). */
  constructor(source: KmsgSource, next: number) {
    this.#source = source;
    this.#seq = next;
  }

  async read(options: { max?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    const { max = 64 * 1024, signal } = options;
    if (!Number.isInteger(max) || max <= 0) throw new RangeError(`max must be a positive integer, got ${max}`);
    for (;;) {
      signal?.throwIfAborted();
      if (this.#closed) throw systemError('EBADF', 'read', KMSG);
      // subscribe before looking, so that a record logged in between is not missed
      let woken = false;
      let wake!: () => void;
      const woke = new Promise<void>((resolve) => {
        wake = () => {
          woken = true;
          resolve();
        };
      });
      const unsubscribe = this.#source.subscribe(wake);
      try {
        const { first, text } = await this.#source.record(this.#seq);
        if (this.#seq < first) {
          this.#seq = first;
          throw systemError('EPIPE', 'read', KMSG);
        }
        if (text !== undefined) {
          const record = Buffer.from(`6,${this.#seq},0,-;${text}\n`);
          if (record.length > max) throw systemError('EINVAL', 'read', KMSG);
          this.#seq++;
          return record;
        }
        if (!woken) await this.#wait(woke, signal);
      } finally {
        unsubscribe();
      }
    }
  }

  async #wait(woke: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted || this.#closed) return; // aborted or closed while the record was looked up: the loop throws
    let onAbort: (() => void) | undefined;
    const stopped = new Promise<void>((resolve) => {
      this.#interrupt = resolve;
      onAbort = resolve;
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([woke, stopped]);
    } finally {
      this.#interrupt = undefined;
      signal?.removeEventListener('abort', onAbort!);
    }
  }

  async write(): Promise<number> {
    throw systemError('EBADF', 'write', KMSG);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#interrupt?.();
  }
}
