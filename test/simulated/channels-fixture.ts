/**
 * A small stand-in for the simulated kernel core: instances whose state the test sets itself,
 * driving the channels through the SimChannelHost / SimChannels seam.
 */
import { createSimChannels } from '../../lib/system/simulated/channels-impl';
import type { SimChannelOptions } from '../../lib/system/simulated/channels-impl';
import type { SimChannelHost, SimChannels, SimInstanceInfo, SimInstanceStatus, SimStopCause } from '../../lib/system/simulated/channels';
import { FaultInjector } from '../../lib/system/simulated/faults';
import type { DeviceHandle } from '../../lib/system/system';
import { FrameDecoder, FrameType, encodeFrame, encodeOpen } from '../../lib/exec/protocol';
import type { Frame } from '../../lib/exec/protocol';

export class FakeCore implements SimChannelHost {
  readonly faults = new FaultInjector();
  readonly instances = new Map<number, SimInstanceInfo>();
  readonly channels: SimChannels;

  constructor(options: SimChannelOptions = {}) {
    this.channels = createSimChannels(this, { privileged: true, connectTimeoutMs: 200, ...options });
  }

  async instanceById(id: number): Promise<SimInstanceInfo | undefined> {
    const info = this.instances.get(id);
    return info && { ...info };
  }

  create(id: number, name: string, status: SimInstanceStatus = 'ready'): void {
    this.instances.set(id, { id, name, status, hung: false, cmdline: status === 'ready' ? '' : 'console=mktty0 rdinit=/init' });
  }

  load(id: number): void {
    Object.assign(this.instances.get(id)!, { status: 'loaded', cmdline: 'console=mktty0 rdinit=/init' });
  }

  start(id: number): void {
    Object.assign(this.instances.get(id)!, { status: 'active', hung: false });
    this.channels.instanceStarted(id);
  }

  /** the spawn went down (a panic too: it halts back to the pool) */
  stop(id: number, how: SimStopCause = 'halt'): void {
    Object.assign(this.instances.get(id)!, { status: 'loaded', hung: false });
    this.channels.instanceStopped(id, how);
  }

  hang(id: number): void {
    this.instances.get(id)!.hung = true;
    this.channels.instanceHung(id);
  }
}

/** Reads from a console until `pattern` has appeared (or the timeout passes). */
export async function readUntil(handle: DeviceHandle, pattern: string | RegExp, timeoutMs = 2000): Promise<string> {
  const signal = timeoutSignal(timeoutMs);
  let text = '';
  while (!(typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text))) {
    try {
      text += (await handle.read({ signal })).toString('utf8');
    } catch (e) {
      throw new Error(`${(e as Error).message} waiting for ${String(pattern)}; got ${JSON.stringify(text)}`);
    }
  }
  return text;
}

/** Like AbortSignal.timeout, but the timer keeps the process alive (a test waits on it). */
export function timeoutSignal(ms: number): AbortSignal {
  const controller = new AbortController();
  setTimeout(() => controller.abort(new DOMException('timed out', 'TimeoutError')), ms);
  return controller.signal;
}

/** Resolves with what arrives within `ms` (empty when nothing does). */
export async function readFor(handle: DeviceHandle, ms: number): Promise<string> {
  const signal = timeoutSignal(ms);
  let text = '';
  try {
    for (;;) text += (await handle.read({ signal })).toString('utf8');
  } catch (e) {
    if ((e as Error).name !== 'TimeoutError') throw e;
  }
  return text;
}

export const tick = (ms = 10): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A hand-driven session with instance 1's agent from `localPort`: raw frames out, decoded frames in. */
export async function rawSession(core: FakeCore, localPort = 1000) {
  const stream = await core.channels.vsockConnect({ cid: 1, port: 1023, localPort });
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  let ended = false;
  stream.on('data', (chunk: Buffer) => frames.push(...decoder.push(chunk)));
  stream.on('end', () => (ended = true));
  stream.on('error', () => (ended = true));
  const session = {
    frames,
    get ended() {
      return ended;
    },
    send(type: number, payload?: Uint8Array) {
      stream.write(encodeFrame(type, payload));
    },
    write(bytes: Uint8Array) {
      stream.write(bytes);
    },
    // (a bound for a hang only: a passing test returns as soon as `what` holds)
    async until(what: () => boolean, ms = 10_000) {
      for (let waited = 0; !what(); waited += 5) {
        if (waited > ms) throw new Error(`timed out; frames ${frames.map((f) => f.type).join(',')} ended ${ended}`);
        await tick(5);
      }
    },
    types: () => frames.map((f) => f.type),
    /** the text of the STDOUT frames so far */
    stdout: () => Buffer.concat(frames.filter((f) => f.type === FrameType.STDOUT).map((f) => f.payload)).toString(),
    open(argv: string[], flags = 0, extra: Partial<Parameters<typeof encodeOpen>[0]> = {}) {
      session.send(FrameType.OPEN, encodeOpen({ flags, uid: 0, gid: 0, groups: [], rows: 0, cols: 0, cwd: '/', argv, env: ['PATH=/bin'], ...extra }));
    },
  };
  return session;
}
