/**
 * Fuzz targets (issue 13): the decoders that take bytes or text from outside the process. Each
 * target makes its case `i` of a run from the run's seed alone (so a failing case is reproduced
 * from `seed` and `i`), runs it, and sorts the outcome: accepted, rejected with one of the typed
 * errors its contract names, or a finding (any other exception). Used by the short runs in
 * test/fuzz/fuzz.test.ts and test/fdt/fuzz.test.ts and by the long runs of scripts/fuzz.ts.
 */
import { deepStrictEqual } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { MultikernelError } from '../../lib/errors';
import { FrameDecoder, FrameType, ProtocolError, decodeError, decodeExit, decodeOpen, decodeResize, decodeSignal, decodeStarted, decodeStdinAck, encodeExit, encodeFrame, encodeOpen } from '../../lib/exec/protocol';
import { decodeFdt, encodeFdt, parseDts, printDts } from '../../lib/fdt';
import { SpecError, parseSpec } from '../../lib/spec';
import { SimulatedSystem } from '../../lib/system/simulated';
import { SimStateError } from '../../lib/system/simulated/state-dir';
import { fdtArb } from '../fdt/arbitraries';
import { assemble, plainFdt } from '../fdt/helpers';
import { SOURCES } from '../fdt/sources';

/** xorshift32: a seeded generator, so every run makes the same inputs. */
export function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

export interface FuzzTarget<I = unknown> {
  name: string;
  /** what the target's contract allows as a refusal */
  rejects: string;
  /** case `i` of the run seeded `seed` */
  input(seed: number, i: number): I;
  /** a short printable form of an input, for a finding's report */
  show(input: I): string;
  /** runs one case: returns (or resolves) when accepted, throws (or rejects) when refused */
  run(input: I): void | Promise<void>;
  /** whether an exception is one of the refusals the contract allows */
  typed(error: unknown): boolean;
}

/** A case's generator: seeded by the run's seed and the case number. */
const caseRng = (seed: number, i: number): ((n: number) => number) => rng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0);

// ------------------------------------------------------------------------------ DTB decoder

let dtbSeeds: Buffer[] | undefined;
function blobSeeds(): Buffer[] {
  dtbSeeds ??= [...fc.sample(fdtArb, { seed: 0xf022, numRuns: 60 }).map((f) => encodeFdt(f)), ...Object.values(SOURCES).map((s) => encodeFdt(parseDts(s).fdt))];
  return dtbSeeds;
}

const FDT_CODES = ['ERR_MK_INVALID_FDT', 'ERR_MK_FDT_LIMIT', 'ERR_MK_DTS_SYNTAX'];
const fdtTyped = (e: unknown): boolean => e instanceof MultikernelError && FDT_CODES.includes(e.code);

/** decodeFdt on mutated and random blobs; what decodes must encode and decode to itself. */
export const dtb: FuzzTarget<Buffer> = {
  name: 'dtb',
  rejects: 'MultikernelError ERR_MK_INVALID_FDT or ERR_MK_FDT_LIMIT',
  input(seed, i) {
    const next = caseRng(seed, i);
    const seeds = blobSeeds();
    let b: Buffer = Buffer.from(seeds[next(seeds.length)]!);
    const kind = next(7);
    if (kind === 0) {
      for (let k = 1 + next(8); k > 0; k--) b[next(b.length)] ^= 1 << next(8); // bit flips
    } else if (kind === 1) {
      b = Buffer.from(b.subarray(0, next(b.length))); // truncation
    } else if (kind === 2) {
      const field = 4 * (1 + next(9)); // header field: offsets, sizes, versions
      const v = [0, 1, 0xffffffff, 0x7fffffff, b.length, b.length + 4, b.length - 4, b.readUInt32BE(field) + 4 * (next(9) - 4), next(1 << 30)][next(9)]!;
      b.writeUInt32BE(v >>> 0, field);
    } else if (kind === 3) {
      const structOff = b.readUInt32BE(8);
      const words = b.readUInt32BE(36) >> 2 || 1;
      const at = structOff + 4 * next(words); // a structure word: token, length or name offset
      if (at + 4 <= b.length) b.writeUInt32BE([1, 2, 3, 4, 9, 0, 0xffffffff, next(64), next(1 << 24)][next(9)]! >>> 0, at);
    } else if (kind === 4) {
      const at = next(b.length); // insert or delete a few bytes
      b =
        next(2) === 0
          ? Buffer.concat([b.subarray(0, at), Buffer.alloc(1 + next(7), next(256)), b.subarray(at)])
          : Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + next(7))]);
    } else if (kind === 5) {
      b = Buffer.alloc(next(200)); // random bytes, sometimes behind a valid magic
      for (let k = 0; k < b.length; k++) b[k] = next(256);
      if (b.length >= 4 && next(2) === 0) b.writeUInt32BE(0xd00dfeed, 0);
    } else {
      const parts: (number | string)[] = [1, ''];
      for (let k = next(40); k > 0; k--) parts.push([1, 2, 3, 4, 9, 'n', 0, 3, 1][next(9)]!);
      b = assemble(parts, 'a\0bc\0'); // random token streams in a valid frame
    }
    return b;
  },
  show: (b) => b.toString('hex').slice(0, 800),
  run(b) {
    const tree = decodeFdt(b, { maxSize: 1 << 20 });
    deepStrictEqual(plainFdt(decodeFdt(encodeFdt(tree))), plainFdt(tree));
  },
  typed: fdtTyped,
};

// ------------------------------------------------------------------------------ DTS parser

const TOKENS = ['/', '{', '}', ';', '=', '<', '>', '[', ']', '"', "'", ',', '&', '(', ')', ':', '/delete-node/', '/delete-property/', '/bits/', '/memreserve/', '/plugin/', '/dts-v1/', '0x1f', '017', '7', 'a', 'b@1', 'lbl:', '&lbl', '&{/a}', '//', '/*', '*/', '\\', '\n', ' ', '-', '~', '!', '?', '#', '"x"', "'c'", '64'];

let dtsSeeds: string[] | undefined;

/** parseDts on mutated sources and token soup; what parses must encode and decode. */
export const dts: FuzzTarget<string> = {
  name: 'dts',
  rejects: 'MultikernelError ERR_MK_DTS_SYNTAX, ERR_MK_FDT_LIMIT or ERR_MK_INVALID_FDT',
  input(seed, i) {
    const next = caseRng(seed, i);
    dtsSeeds ??= [...Object.values(SOURCES), ...fc.sample(fdtArb, { seed: 0x7e47, numRuns: 30 }).map((f) => printDts(f))];
    let s = dtsSeeds[next(dtsSeeds.length)]!;
    const kind = next(4);
    if (kind === 0) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length + 1); // insert tokens
        s = s.slice(0, at) + TOKENS[next(TOKENS.length)]! + s.slice(at);
      }
    } else if (kind === 1) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length); // delete a span
        s = s.slice(0, at) + s.slice(at + 1 + next(6));
      }
    } else if (kind === 2) {
      s = s.slice(0, next(s.length + 1)); // truncate
    } else {
      s = '/dts-v1/;'; // token soup
      for (let k = next(60); k > 0; k--) s += TOKENS[next(TOKENS.length)]!;
    }
    return s;
  },
  show: (s) => JSON.stringify(s.slice(0, 800)),
  run(s) {
    const { fdt } = parseDts(s, { limits: { maxSize: 1 << 20 } });
    decodeFdt(encodeFdt(fdt));
  },
  typed: fdtTyped,
};

// ------------------------------------------------------------------------------ exec protocol

/** A session's worth of valid frames in both directions, to mutate. */
function frameSeeds(): Buffer[] {
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const resize = Buffer.alloc(4);
  resize.writeUInt16LE(24, 0);
  resize.writeUInt16LE(80, 2);
  const open = encodeOpen({ flags: 0x7, uid: 1000, gid: 1000, groups: [10, 20], rows: 24, cols: 80, cwd: '/root', argv: ['sh', '-c', 'echo hi'], env: ['A=1', 'TERM=xterm'] });
  return [
    Buffer.concat([encodeFrame(FrameType.OPEN, open), encodeFrame(FrameType.STDIN, Buffer.from('input\n')), encodeFrame(FrameType.STDIN_EOF), encodeFrame(FrameType.RESIZE, resize), encodeFrame(FrameType.SIGNAL, u32(15))]),
    Buffer.concat([
      encodeFrame(FrameType.STARTED, u32(100)),
      encodeFrame(FrameType.STDOUT, Buffer.from('hi\n')),
      encodeFrame(FrameType.STDERR, Buffer.from('warn\n')),
      encodeFrame(FrameType.STDIN_ACK, u32(6)),
      encodeFrame(FrameType.EXIT, encodeExit({ signaled: false, code: 0 })),
    ]),
    encodeFrame(FrameType.ERROR, Buffer.concat([u32(2), Buffer.from('No such file or directory')])),
  ];
}

let execSeeds: Buffer[] | undefined;
const PAYLOAD_DECODERS: Record<number, (p: Buffer) => unknown> = {
  [FrameType.OPEN]: decodeOpen,
  [FrameType.STARTED]: decodeStarted,
  [FrameType.SIGNAL]: decodeSignal,
  [FrameType.STDIN_ACK]: decodeStdinAck,
  [FrameType.RESIZE]: decodeResize,
  [FrameType.EXIT]: decodeExit,
  [FrameType.ERROR]: decodeError,
};

/**
 * The exec-protocol decoder: a mutated byte stream fed to FrameDecoder in random chunks, and every
 * frame's payload to the decoder of its type.
 */
export const execFrames: FuzzTarget<{ bytes: Buffer; cuts: number[] }> = {
  name: 'exec-frames',
  rejects: 'ProtocolError (ERR_MK_EXEC_PROTOCOL)',
  input(seed, i) {
    const next = caseRng(seed, i);
    execSeeds ??= frameSeeds();
    let b = Buffer.from(execSeeds[next(execSeeds.length)]!);
    const kind = next(5);
    if (kind === 0) {
      for (let k = 1 + next(6); k > 0; k--) b[next(b.length)] ^= 1 << next(8);
    } else if (kind === 1) {
      // a header field: length or type of the first frame, or of a later one
      const at = 8 * next(Math.max(1, b.length >> 3));
      if (at + 8 <= b.length) {
        if (next(2) === 0) b.writeUInt32LE([0, 1, 3, 4, 8, 65536, 65537, 0xffffffff, next(1 << 20)][next(9)]! >>> 0, at);
        else b.writeUInt16LE(next(20), at + 4);
      }
    } else if (kind === 2) {
      b = Buffer.from(b.subarray(0, next(b.length + 1)));
    } else if (kind === 3) {
      const at = next(b.length + 1);
      const extra = Buffer.alloc(1 + next(16));
      for (let k = 0; k < extra.length; k++) extra[k] = next(256);
      b = Buffer.concat([b.subarray(0, at), extra, b.subarray(at)]);
    } else {
      b = Buffer.alloc(next(64));
      for (let k = 0; k < b.length; k++) b[k] = next(256);
    }
    const cuts: number[] = [];
    for (let k = next(4); k > 0; k--) cuts.push(next(b.length + 1));
    return { bytes: b, cuts: cuts.sort((x, y) => x - y) };
  },
  show: ({ bytes, cuts }) => `${bytes.toString('hex').slice(0, 800)} cut at ${cuts.join(',')}`,
  run({ bytes, cuts }) {
    const decoder = new FrameDecoder();
    let from = 0;
    for (const at of [...cuts, bytes.length]) {
      for (const frame of decoder.push(bytes.subarray(from, at))) PAYLOAD_DECODERS[frame.type]?.(frame.payload);
      from = at;
    }
  },
  typed: (e) => e instanceof ProtocolError,
};

// ------------------------------------------------------------------------------ host spec

const SPEC_SEED = `version: 1
pool:
  cpus: "2-7"
  memory: 4G
  devices: ["0000:03:00.0", "0000:04:00.0"]
instances:
  web:
    id: 3
    cpus: 2
    memory: 512M
    numaNode: 0
    devices: ["0000:03:00.0"]
    kernel: /boot/vmlinuz-mk
    initrd: /boot/initrd.img
    cmdline: "console=mktty0 quiet"
    autostart: false
    restart:
      policy: preserve
      backoff: { initial: 500ms, max: 1h }
      limit: { attempts: 3, window: 2m }
    health: { interval: 10s, timeout: 1500, failures: 2 }
    onDaemonStop: stop
  db:
    cpus: [6, 7]
    memory: 1073741824
`;
const SPEC_JSON_SEED = JSON.stringify({ version: 1, instances: { a: { cpus: '4-5', memory: '256M', kernel: 'k', restart: { policy: 'stop' } } } });
const SPEC_TOKENS = ['\n', ' ', '  ', ':', '-', '[', ']', '{', '}', ',', '"', "'", '#', '&a', '*a', '!!str', '!!binary', '? ', '|', '>', '---', '...', '%YAML 1.2', '0x10', '1e400', '-1', 'null', '~', 'true', '512M', '10s', '"4-5"', '<<: *a', '\t', '\u0000', '\ufeff', 'instances:', 'cpus:', 'memory:'];

/** parseSpec on mutated YAML and JSON specs. */
export const spec: FuzzTarget<string> = {
  name: 'spec',
  rejects: 'SpecError (ERR_MK_INVALID_SPEC)',
  input(seed, i) {
    const next = caseRng(seed, i);
    let s = next(4) === 0 ? SPEC_JSON_SEED : SPEC_SEED;
    const kind = next(5);
    if (kind === 0) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length + 1);
        s = s.slice(0, at) + SPEC_TOKENS[next(SPEC_TOKENS.length)]! + s.slice(at);
      }
    } else if (kind === 1) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length);
        s = s.slice(0, at) + s.slice(at + 1 + next(8));
      }
    } else if (kind === 2) {
      const lines = s.split('\n'); // whole lines: drop, repeat or swap
      for (let k = 1 + next(3); k > 0; k--) {
        const a = next(lines.length);
        const b = next(lines.length);
        const op = next(3);
        if (op === 0) lines.splice(a, 1);
        else if (op === 1) lines.splice(a, 0, lines[b]!);
        else [lines[a], lines[b]] = [lines[b]!, lines[a]!];
      }
      s = lines.join('\n');
    } else if (kind === 3) {
      s = s.slice(0, next(s.length + 1));
    } else {
      for (let k = 1 + next(6); k > 0; k--) {
        const at = next(s.length);
        s = s.slice(0, at) + String.fromCharCode(next(2) === 0 ? next(128) : next(0x3000)) + s.slice(at + 1);
      }
    }
    return s;
  },
  show: (s) => JSON.stringify(s.slice(0, 1500)),
  run: (s) => void parseSpec(s, 'fuzz.yaml'),
  typed: (e) => e instanceof SpecError,
};

// ------------------------------------------------------------------------------ simulated state

/** state.json of a simulated host with a pool, instances in each status, a transaction and a host file. */
let stateSeed: unknown;
export function setStateSeed(state: unknown): void {
  stateSeed = state;
}

/** A random JSON value of any type, for replacing a field. */
function randomValue(next: (n: number) => number): unknown {
  switch (next(10)) {
    case 0:
      return null;
    case 1:
      return next(2) === 0;
    case 2:
      return [-1, 0, 1, 2, 2047, 2048, 4096, 1.5, 2 ** 53, -(2 ** 31), 1e300][next(11)];
    case 3:
      return ['', 'x', 'active', 'loaded', 'ready', 'applied', 'failed', '0000:00:04.0', 'AAAA', 'elf'][next(10)];
    case 4:
      return [];
    case 5:
      return {};
    case 6:
      return [next(16), next(16)];
    case 7:
      return { base: next(1 << 30), size: next(1 << 30), node: next(3) };
    default:
      return next(1 << 16);
  }
}

/** Every path to a value inside `v` (objects and arrays), for picking one to change. */
function paths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (v !== null && typeof v === 'object') {
    for (const [k, child] of Object.entries(v)) {
      const p = [...at, Array.isArray(v) ? Number(k) : k];
      out.push(p);
      paths(child, p, out);
    }
  }
  return out;
}

/**
 * The simulated state loader: a mutated state.json (a field replaced by a value of another type,
 * or removed, or the text damaged) in a state directory, and a simulated host on it reading every
 * file it shows. A state the simulator did not
 * write must be refused with SimStateError, not crash it with a TypeError later.
 */
export const simState: FuzzTarget<string> = {
  name: 'sim-state',
  rejects: 'SimStateError (ERR_MK_SIM_STATE_CORRUPT or ERR_MK_SIM_STATE_VERSION)',
  input(seed, i) {
    if (stateSeed === undefined) throw new Error('setStateSeed() first (test/fuzz/state-seed.ts makes one)');
    const next = caseRng(seed, i);
    const state = structuredClone(stateSeed) as Record<string, unknown>;
    const kind = next(4);
    if (kind <= 1) {
      const all = paths(state);
      for (let k = 1 + next(3); k > 0; k--) {
        const p = all[next(all.length)]!;
        // (an earlier change of this case may have removed or replaced part of the path)
        let parent: unknown = state;
        for (const key of p.slice(0, -1)) parent = parent !== null && typeof parent === 'object' ? (parent as Record<string | number, unknown>)[key] : undefined;
        if (parent === undefined || parent === null || typeof parent !== 'object') continue;
        const key = p.at(-1)!;
        if (kind === 0) (parent as Record<string | number, unknown>)[key] = randomValue(next);
        else if (Array.isArray(parent)) parent.splice(Number(key), 1);
        else delete (parent as Record<string | number, unknown>)[key];
      }
      return JSON.stringify(state);
    }
    let s = JSON.stringify(state);
    if (kind === 2) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length);
        s = s.slice(0, at) + s.slice(at + 1 + next(4));
      }
    } else {
      s = s.slice(0, next(s.length + 1));
    }
    return s;
  },
  show: (s) => s.slice(0, 1500),
  async run(text) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-fuzz-state-'));
    fs.chmodSync(dir, 0o700);
    const system = new SimulatedSystem({ stateDir: dir, readOnlyHostDirs: ['/run', '/var/run', '/tmp'] });
    try {
      fs.writeFileSync(path.join(dir, 'state.json'), text, { mode: 0o600 });
      await readEverything(system);
    } finally {
      await system.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
  typed: (e) => e instanceof SimStateError,
};

/** Reads every file the simulated kernel shows: kernfs, the /proc and /sys files the library reads. */
async function readEverything(system: SimulatedSystem): Promise<void> {
  const walk = async (dir: string): Promise<void> => {
    for (const name of await system.readdir(dir)) {
      const p = `${dir}/${name}`;
      const st = await system.stat(p);
      if (st.type === 'directory') await walk(p);
      else if (name !== 'new') await system.readFile(p).catch((e: unknown) => {
        // a file the kernel refuses to read (EINVAL, EACCES...) is fine; anything else is not
        if ((e as { syscall?: unknown }).syscall === undefined) throw e;
      });
    }
  };
  await walk('/sys/fs/multikernel').catch((e: unknown) => {
    if ((e as { code?: unknown }).code !== 'ENOENT') throw e; // not mounted in this state
  });
  for (const p of ['/proc/iomem', '/proc/kimage', '/proc/cpuinfo', '/proc/filesystems', '/sys/devices/system/cpu/online', '/sys/devices/system/cpu/present']) await system.readFile(p);
  await walk('/sys/devices/system/node');
  await system.dmesg();
}

export const TARGETS: Record<string, FuzzTarget<never>> = {
  dtb: dtb as FuzzTarget<never>,
  dts: dts as FuzzTarget<never>,
  'exec-frames': execFrames as FuzzTarget<never>,
  spec: spec as FuzzTarget<never>,
  'sim-state': simState as FuzzTarget<never>,
};

export interface Tally {
  /** cases finished */
  done: number;
  accepted: number;
  refused: number;
  slowestMs: number;
  /** the first exception the contract does not allow, with the case that raised it */
  finding?: { i: number; input: string; error: string };
}

/**
 * Runs cases [from, to) of `target` from `seed`, stopping at the first finding. `progress` is
 * called now and then with the tally so far (the long runs report it to their parent).
 */
export async function runCases(target: FuzzTarget<unknown>, seed: number, from: number, to: number, progress?: (tally: Tally) => Promise<void>): Promise<Tally> {
  const tally: Tally = { done: 0, accepted: 0, refused: 0, slowestMs: 0 };
  let reported = performance.now();
  for (let i = from; i < to; i++) {
    const input = target.input(seed, i);
    const t0 = performance.now();
    try {
      await target.run(input);
      tally.accepted++;
    } catch (error) {
      if (!target.typed(error)) {
        tally.finding = { i, input: target.show(input), error: error instanceof Error ? (error.stack ?? String(error)) : String(error) };
        tally.done++;
        return tally;
      }
      tally.refused++;
    }
    tally.slowestMs = Math.max(tally.slowestMs, performance.now() - t0);
    tally.done++;
    if (progress !== undefined && performance.now() - reported > 200) {
      reported = performance.now();
      await progress({ ...tally });
    }
  }
  return tally;
}
