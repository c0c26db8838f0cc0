/**
 * The shape of a saved simulated state (state.ts), checked when a state directory's state.json is
 * loaded: a state this simulator did not write (edited by hand, damaged, written by another
 * program) is refused with the path of the first field that is wrong, instead of failing later
 * somewhere inside the simulated kernel with a TypeError. Found necessary by the state fuzz
 * target (test/fuzz/targets.ts, sim-state).
 */
import type { SimState } from './state';

/** A field of the state that is not what this simulator writes: `path` says which. */
export class StateShapeError extends Error {
  constructor(
    readonly path: string,
    what: string,
  ) {
    super(`${path} ${what}`);
  }
}

type Check = (v: unknown, at: string) => void;

const fail = (at: string, what: string): never => {
  throw new StateShapeError(at, what);
};

/** a whole number in [min, max] (JSON numbers: at most 2^53) */
const int =
  (min = 0, max = Number.MAX_SAFE_INTEGER): Check =>
  (v, at) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(at, `is ${JSON.stringify(v)}, not a whole number from ${min} to ${max}`);
  };
const str: Check = (v, at) => {
  if (typeof v !== 'string') fail(at, `is ${JSON.stringify(v)}, not a string`);
};
/** a name that is one path component (an instance's directory): not empty, no '/' or NUL, not . or .. */
const component: Check = (v, at) => {
  if (typeof v !== 'string' || v === '' || v === '.' || v === '..' || /[/\0]/.test(v)) fail(at, `is ${JSON.stringify(v)}, not a file name`);
};
/** a PCI address DDDD:BB:SS.F, as the simulator keeps them */
const bdf: Check = (v, at) => {
  if (typeof v !== 'string' || !/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(v)) fail(at, `is ${JSON.stringify(v)}, not a PCI address DDDD:BB:SS.F`);
};
const bool: Check = (v, at) => {
  if (typeof v !== 'boolean') fail(at, `is ${JSON.stringify(v)}, not true or false`);
};
const oneOf =
  (...values: unknown[]): Check =>
  (v, at) => {
    if (!values.includes(v)) fail(at, `is ${JSON.stringify(v)}, not one of ${values.map((x) => JSON.stringify(x)).join(', ')}`);
  };
const nullable =
  (check: Check): Check =>
  (v, at) => {
    if (v !== null) check(v, at);
  };
const arr =
  (each: Check): Check =>
  (v, at) => {
    if (!Array.isArray(v)) fail(at, 'is not a list');
    (v as unknown[]).forEach((x, i) => each(x, `${at}[${i}]`));
  };
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const record =
  (each: Check): Check =>
  (v, at) => {
    if (!isObject(v)) fail(at, 'is not an object');
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) each(x, `${at}[${JSON.stringify(k)}]`);
  };
/** an object with these required and optional fields (others are tolerated, as JSON from a newer writer) */
const obj =
  (required: Record<string, Check>, optional: Record<string, Check> = {}): Check =>
  (v, at) => {
    if (!isObject(v)) fail(at, 'is not an object');
    const o = v as Record<string, unknown>;
    for (const [k, check] of Object.entries(required)) {
      if (!(k in o)) fail(`${at}.${k}`, 'is missing');
      check(o[k], `${at}.${k}`);
    }
    for (const [k, check] of Object.entries(optional)) if (o[k] !== undefined) check(o[k], `${at}.${k}`);
  };

const memRange = obj({ base: int(), size: int(), node: int(0, 1023) });
const platformDevice = obj({ name: str }, { hid: str });

const checkState: Check = obj(
  {
    version: oneOf(1),
    topology: obj({ cpus: arr(obj({ apicId: int(0, 0xffffffff), node: int(0, 1023) }, { online: bool, package: int(0, 0xffffffff), core: int(0, 0xffffffff) })), memoryBytes: int(), numaNodes: int(1, 1024), pciDevices: arr(bdf) }),
    mounted: bool,
    pool: nullable(
      obj(
        { cpus: arr(int(0, 0xffffffff)), memory: arr(memRange), devices: arr(obj({ pciId: bdf }, { alias: str })), parkChunk: nullable(int()) },
        { devicesValid: bool, platformDevices: arr(platformDevice) },
      ),
    ),
    instances: arr(
      obj(
        { id: int(1, 2047), name: component, status: oneOf('ready', 'loaded', 'active'), cpus: arr(int(0, 0xffffffff)), memory: arr(memRange), devices: arr(bdf) },
        {
          hung: bool,
          deviceAliases: record(str),
          platformDevices: arr(platformDevice),
          hostTree: str,
          image: obj({ kind: oneOf('elf', 'arm64-image'), kernelBytes: int(), initrdBytes: int(), cmdline: str, segments: int(), entry: int() }),
        },
      ),
    ),
    txs: arr(obj({ id: int(), status: oneOf('pending', 'applied', 'failed', 'removed'), targetPath: str, resources: str, dtbo: str }, { reason: str })),
    txCounter: int(),
    dmesg: arr(str),
    notified: arr(str),
  },
  { dmesgDropped: int(), hostFiles: record(obj({ createdMs: int() }, { data: str })) },
);

/** Throws StateShapeError unless `state` has the shape of a SimState. */
export function checkStateShape(state: unknown): asserts state is SimState {
  checkState(state, 'state');
}
