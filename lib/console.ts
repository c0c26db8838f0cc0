/**
 * An instance's console: `/dev/mktty` selected for the instance, as a Duplex (docs/kernel-interface.md,
 * "/dev/mktty"). Selecting is a write of the instance id; from then on the connection receives
 * what the instance prints and what is written to it goes to the instance's console input.
 *
 * The kernel sends an instance's output to the newest opened connection selected for it
 * (mktty.c adds connections at the head of its list, first match wins): a second console of the
 * same instance takes the output away from the first, which then reads nothing more until the
 * second is closed. One reader per instance, then; fan the stream out in the process if several
 * parts of a program need it.
 */
import { Duplex, type Readable } from 'node:stream';
import { MK_CONSOLE_DEVICE } from './kernfs';
import type { DeviceHandle, System } from './system/system';

/** A console connection; `destroy()` or `end()` closes the device. */
export class ConsoleStream extends Duplex {
  readonly #handle: DeviceHandle;
  readonly #reads = new AbortController();
  #reading = false;

  constructor(handle: DeviceHandle) {
    // the console is text made of lines; reads are whatever the device gives
    super({ allowHalfOpen: false });
    this.#handle = handle;
  }

  override _read(): void {
    if (this.#reading) return;
    this.#reading = true;
    void this.#pump();
  }

  async #pump(): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.#handle.read({ signal: this.#reads.signal });
        if (chunk.length === 0) {
          this.push(null);
          return;
        }
        if (!this.push(chunk)) break;
      }
    } catch (err) {
      if (!this.#reads.signal.aborted) this.destroy(err as Error);
    } finally {
      this.#reading = false;
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    void this.#writeAll(chunk).then(() => callback(), callback);
  }

  async #writeAll(chunk: Buffer): Promise<void> {
    let rest = chunk;
    while (rest.length > 0) rest = rest.subarray(await this.#handle.write(rest));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#reads.abort();
    void this.#handle.close().then(() => callback(error), (closeError: unknown) => callback(error ?? (closeError as Error)));
  }

  override _final(callback: (error?: Error | null) => void): void {
    // a tty has no half-close: ending the console closes it
    callback();
    this.destroy();
  }
}

/** Opens /dev/mktty and selects instance `id`; the fd is closed if the selection fails. */
export async function openConsole(system: System, id: number): Promise<ConsoleStream> {
  const handle = await system.openDevice(MK_CONSOLE_DEVICE);
  try {
    await handle.write(Buffer.from(`${id}\n`));
  } catch (err) {
    await handle.close();
    throw err;
  }
  return new ConsoleStream(handle);
}

/** Reads the console until `idleMs` passes without output, or `timeoutMs` with none at all; then pauses it. */
export function drainConsole(tty: Readable, timeoutMs: number, idleMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let timer = setTimeout(done, timeoutMs);
    function done(): void {
      clearTimeout(timer);
      tty.off('data', onData).off('end', done).off('error', onError);
      tty.pause();
      resolve(out);
    }
    function onData(chunk: Buffer): void {
      out += chunk.toString('utf8');
      clearTimeout(timer);
      timer = setTimeout(done, idleMs);
    }
    function onError(err: Error): void {
      clearTimeout(timer);
      tty.off('data', onData).off('end', done);
      reject(err);
    }
    tty.on('data', onData).once('end', done).once('error', onError);
    tty.resume();
  });
}
