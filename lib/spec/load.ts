/**
 * Loading a host spec (issue 12): YAML or JSON text -> a validated HostSpec with defaults filled in.
 *
 * Three passes, all of whose problems are collected and thrown together as one SpecError:
 * 1. `yaml` parses the text into a Document (YAML 1.2, so JSON is accepted as it is), keeping the
 *    source range of every node; syntax errors, duplicate keys and a second document stop here.
 * 2. Ajv validates the plain value against schema/spec.schema.json (the file shipped with the
 *    package, which editors use too): types, unknown and missing fields, ranges, formats.
 * 3. The checks a schema cannot express: sizes are page aligned, CPU lists are well formed, ids
 *    and devices are not listed twice, an initrd has a kernel, backoff and health timings are in
 *    order.
 * Every problem is reported at the position of the offending value (of the key for an unknown
 * field, of the enclosing object's key for a missing one).
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { MultikernelError } from '../errors';
import { checkInstanceName } from '../model/overlay';
import { COMMAND_LINE_SIZE } from '../uapi';
import { parseBytes, parseCpuIds, parseDurationMs } from '../units';
import type { HealthSpec, HostSpec, InstanceSpecEntry, PoolSpec, RestartPolicy, SourcePosition, SpecCpus, SpecIssue } from './types';

/** The JSON Schema of the spec file format (draft 2020-12), as shipped: `multikernel/spec.schema.json`. */
export const SPEC_SCHEMA_PATH = path.resolve(__dirname, '..', '..', 'schema', 'spec.schema.json');

/** The defaults of an instance's supervision, as the schema documents them. */
export const DEFAULT_RESTART: Readonly<RestartPolicy> = Object.freeze({
  policy: 'restart',
  backoff: Object.freeze({ initialMs: 1000, maxMs: 300_000 }),
  limit: Object.freeze({ attempts: 5, windowMs: 600_000 }),
});
export const DEFAULT_HEALTH: Readonly<HealthSpec> = Object.freeze({ intervalMs: 10_000, timeoutMs: 1000, failures: 3 });
export const DEFAULT_CMDLINE = 'console=mktty0';

/** One line per issue: `/instances/web/memory (line 7, column 13): "512X" is not a size: ...`. */
export function formatIssue(issue: SpecIssue): string {
  return `${issue.pointer === '' ? '(top level)' : issue.pointer} (line ${issue.at.line}, column ${issue.at.column}): ${issue.message}`;
}

/** A spec file that cannot be used: every problem found, in the order they appear in the file. */
export class SpecError extends MultikernelError {
  readonly issues: SpecIssue[];
  constructor(file: string, issues: SpecIssue[]) {
    const head = issues.length === 1 ? `${file}: 1 problem in the spec` : `${file}: ${issues.length} problems in the spec`;
    super('ERR_MK_INVALID_SPEC', [head, ...issues.map((i) => `  ${formatIssue(i)}`)].join('\n'), { details: { issues } });
    this.issues = issues;
  }
  override get name(): string {
    return 'SpecError';
  }
}

type Kind = 'size' | 'duration' | 'cpus' | 'pciAddress';

/** What a value of each kind looks like, for messages: `"512X" is not a size: use ...`. */
const KINDS: Record<Kind, { what: string; accepted: string }> = {
  size: { what: 'a size', accepted: 'use bytes or a number with K, M, G or T, e.g. 512M' },
  duration: { what: 'a duration', accepted: 'use milliseconds or a number with ms, s, m or h, e.g. 500ms, 10s, 5m, 1h' },
  cpus: { what: 'a CPU count or list', accepted: 'use a count such as 2, a list of ids such as "4-5,8", or a YAML list such as [4, 5]' },
  pciAddress: {
    what: 'a PCI address',
    accepted: 'write it as DDDD:BB:SS.F in hexadecimal (slot 00-1f, function 0-7), e.g. "0000:03:00.0"',
  },
};

const TYPE_WORDS: Record<string, string> = {
  integer: 'a whole number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
};

interface Compiled {
  validate: ValidateFunction;
  kinds: Map<object, Kind>;
}
let compiled: Compiled | undefined;

/** The validator, compiled on first use from the schema file (lib/ or dist/ alike: ../../schema). */
function validator(): Compiled {
  if (compiled === undefined) {
    const schema = JSON.parse(readFileSync(SPEC_SCHEMA_PATH, 'utf8')) as { $defs: Record<string, object> };
    const ajv = new Ajv2020({ allErrors: true, verbose: true, allowUnionTypes: true, strict: true });
    const validate = ajv.compile(schema);
    const kinds = new Map<object, Kind>(Object.keys(KINDS).map((k) => [schema.$defs[k]!, k as Kind]));
    compiled = { validate, kinds };
  }
  return compiled;
}

function show(v: unknown): string {
  if (v === null) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

const escape = (segment: string): string => segment.replace(/~/g, '~0').replace(/\//g, '~1');
const unescape = (segment: string): string => segment.replace(/~1/g, '/').replace(/~0/g, '~');
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** 60000 -> "1m", 1500 -> "1500ms": the largest unit that divides it. */
function formatMs(ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** Words for the closest accepted field name, when there is one (a typo of it). */
function suggestion(key: string, accepted: string[]): string {
  const distance = (a: string, b: string): number => {
    let row = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const next = [i];
      for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      row = next;
    }
    return row[b.length]!;
  };
  const best = accepted.map((a) => ({ a, d: distance(key, a) })).sort((x, y) => x.d - y.d)[0];
  return best!.d <= 2 ? `did you mean "${best.a}"? ` : '';
}

/** Where each value (and its key) of the document starts, by JSON pointer; the problems found. */
class Issues {
  readonly list: SpecIssue[] = [];
  readonly #pointers = new Set<string>();
  readonly #offsets = new Map<string, { key: number; value: number }>();
  constructor(
    readonly file: string,
    doc: Document,
    readonly lines: LineCounter,
  ) {
    this.#index(doc.contents, '', range(doc.contents)?.[0] ?? 0);
  }

  #index(node: unknown, pointer: string, keyOffset: number): void {
    const value = range(node)?.[0] ?? keyOffset;
    this.#offsets.set(pointer, { key: keyOffset, value });
    if (isMap(node)) {
      for (const pair of node.items) {
        if (!isScalar(pair.key)) this.list.push({ pointer, at: this.position(range(pair.key)![0]), message: 'this key is a list or a mapping: keys are names' });
        this.#index(pair.value, `${pointer}/${escape(keyString(pair.key))}`, range(pair.key)![0]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => this.#index(item, `${pointer}/${i}`, value));
    }
  }

  position(offset: number): SourcePosition {
    const { line, col } = this.lines.linePos(offset);
    return { file: this.file, line, column: col };
  }

  /** The position of the value at `pointer` (or of its key), or of its nearest written ancestor. */
  at(pointer: string, where: 'key' | 'value'): SourcePosition {
    let p = pointer;
    let offsets = this.#offsets.get(p);
    while (offsets === undefined) {
      p = p.slice(0, p.lastIndexOf('/'));
      offsets = this.#offsets.get(p);
    }
    return this.position(where === 'key' ? offsets.key : offsets.value);
  }

  /** Records a problem, unless one is recorded for that pointer already (the schema's comes first). */
  add(pointer: string, message: string, where: 'key' | 'value' = 'value'): void {
    if (this.#pointers.has(pointer)) return;
    this.#pointers.add(pointer);
    this.list.push({ pointer, at: this.at(pointer, where), message });
  }
}

/** A map key as toJS writes it (a list or mapping key is an issue of its own). */
function keyString(key: unknown): string {
  return isScalar(key) ? String(key.value ?? '') : '';
}

const range = (n: unknown): [number, number, number] | undefined => (n as { range?: [number, number, number] } | null)?.range;

/** The JSON pointer of the innermost key or value written at `offset` (for the parser's errors). */
function pointerAt(node: unknown, offset: number, pointer = ''): string {
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = range(pair.key)!;
      // a pair spans its key, any tag or anchor, and its value
      if (offset >= key[0] && offset < (range(pair.value) ?? key)[2]) {
        const child = `${pointer}/${escape(keyString(pair.key))}`;
        return offset < key[2] ? child : pointerAt(pair.value, offset, child);
      }
    }
  } else if (isSeq(node)) {
    const i = node.items.findIndex((item) => offset >= range(item)![0] && offset < range(item)![2]);
    if (i >= 0) return pointerAt(node.items[i], offset, `${pointer}/${i}`);
  }
  return pointer;
}

/** The message for one schema error, in the words of the field's kind when it has one. */
function schemaIssue(issues: Issues, e: ErrorObject, kinds: Map<object, Kind>): void {
  const parent = e.parentSchema as { properties?: Record<string, unknown>; minimum?: number; maximum?: number; enum?: unknown[] };
  const kind = kinds.get(parent);
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      const accepted = Object.keys(parent.properties!);
      issues.add(`${e.instancePath}/${escape(key)}`, `unknown field "${key}": ${suggestion(key, accepted)}the fields here are ${accepted.join(', ')}`, 'key');
      return;
    }
    case 'required': {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      issues.add(`${e.instancePath}/${escape(missing)}`, `"${missing}" is missing: it is required here`, 'key');
      return;
    }
    case 'propertyNames': {
      const name = (e.params as { propertyName: string }).propertyName;
      issues.add(`${e.instancePath}/${escape(name)}`, `${JSON.stringify(name)} is not a valid instance name: use 1 to 31 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit`, 'key');
      return;
    }
    case 'const': // only `version` has one
      issues.add(e.instancePath, `${show(e.data)} is not a version of the spec format: write version: 1`);
      return;
    case 'enum':
      issues.add(e.instancePath, `${show(e.data)} is not one of ${parent.enum!.map((v) => String(v)).join(', ')}`);
      return;
    case 'minimum':
    case 'maximum': {
      const bounds = parent.maximum === undefined ? `at least ${parent.minimum}` : `${parent.minimum} to ${parent.maximum}`;
      issues.add(e.instancePath, `${show(e.data)} is out of range: use ${bounds}`);
      return;
    }
    case 'minLength': // only the paths have one
      issues.add(e.instancePath, 'the path is empty: give the path of a file');
      return;
    case 'minItems': // only a list of CPUs has one
      issues.add(e.instancePath, 'the list is empty: name at least one CPU, or give a count');
      return;
  }
  // `type` and `pattern`; a propertyNames pattern is reported by its propertyNames error
  if (e.propertyName !== undefined) return;
  if (kind !== undefined) {
    issues.add(e.instancePath, `${show(e.data)} is not ${KINDS[kind].what}: ${KINDS[kind].accepted}`);
    return;
  }
  const types = ([] as string[]).concat((e.params as { type: string | string[] }).type);
  issues.add(e.instancePath, `${show(e.data)} is not ${types.map((t) => TYPE_WORDS[t]).join(' or ')}`);
}

/** The checks after the schema's; they tolerate values the schema rejected (those are reported already). */
class Semantics {
  constructor(
    readonly issues: Issues,
    readonly base: string,
  ) {}

  size(pointer: string, v: unknown): bigint {
    let bytes = 0n;
    if (typeof v === 'string' && /^\s*0+\s*[a-z]*\s*$/i.test(v)) {
      this.issues.add(pointer, `${show(v)} is zero: a size is at least one 4 KiB page, e.g. 512M`);
      return bytes;
    }
    try {
      bytes = parseBytes(v as string | number);
    } catch {
      this.issues.add(pointer, `${show(v)} is not ${KINDS.size.what}: ${KINDS.size.accepted}`);
      return bytes;
    }
    if (bytes % 4096n !== 0n) this.issues.add(pointer, `${show(v)} is ${bytes} bytes, not a whole number of 4 KiB pages (4096 bytes): round it, e.g. 512M`);
    return bytes;
  }

  cpus(pointer: string, v: unknown): SpecCpus {
    if (typeof v === 'number') return { count: v };
    if (typeof v === 'string') {
      try {
        return { physical: parseCpuIds(v, `the CPU list ${JSON.stringify(v)}`) };
      } catch (err) {
        this.issues.add(pointer, `${(err as Error).message}; use ids and ranges such as "4-5,8"`);
        return { physical: [] };
      }
    }
    const ids = Array.isArray(v) ? (v as number[]) : [];
    ids.forEach((id, i) => {
      if (ids.indexOf(id) < i) this.issues.add(`${pointer}/${i}`, `CPU ${id} is listed twice: list each CPU once`);
    });
    return { physical: [...ids] };
  }

  devices(pointer: string, v: unknown): string[] {
    const list = Array.isArray(v) ? v.map((d) => String(d).toLowerCase()) : [];
    list.forEach((d, i) => {
      const first = list.indexOf(d);
      if (first < i) this.issues.add(`${pointer}/${i}`, `${JSON.stringify(d)} is listed twice (also at ${pointer}/${first}): list each PCI function once`);
    });
    return list;
  }

  duration(pointer: string, v: unknown, fallback: number): number {
    if (v === undefined) return fallback;
    if (typeof v === 'number') return v;
    let ms = fallback;
    try {
      ms = parseDurationMs(v as string, 'the duration');
    } catch (err) {
      this.issues.add(pointer, `${(err as Error).message}; ${KINDS.duration.accepted}`);
    }
    if (ms === 0) this.issues.add(pointer, `${show(v)} is zero: a duration is at least 1ms`);
    return ms;
  }

  path(v: unknown): string | undefined {
    return typeof v === 'string' ? path.resolve(this.base, v) : undefined;
  }

  pool(v: Record<string, unknown>): PoolSpec {
    return { cpus: this.cpus('/pool/cpus', v.cpus), memoryBytes: this.size('/pool/memory', v.memory), devices: this.devices('/pool/devices', v.devices) };
  }

  restart(p: string, v: unknown): RestartPolicy {
    const r = isObject(v) ? v : {};
    const backoff = isObject(r.backoff) ? r.backoff : {};
    const limit = isObject(r.limit) ? r.limit : {};
    const initialMs = this.duration(`${p}/backoff/initial`, backoff.initial, DEFAULT_RESTART.backoff.initialMs);
    const maxMs = this.duration(`${p}/backoff/max`, backoff.max, DEFAULT_RESTART.backoff.maxMs);
    if (initialMs > maxMs) {
      const at = backoff.initial !== undefined ? 'initial' : 'max';
      const maxWords = backoff.max === undefined ? `the default max ${formatMs(maxMs)}` : `max ${formatMs(maxMs)}`;
      this.issues.add(`${p}/backoff/${at}`, `initial ${formatMs(initialMs)} is longer than ${maxWords}: the first wait must be at most the longest`);
    }
    return {
      policy: (r.policy as RestartPolicy['policy'] | undefined) ?? DEFAULT_RESTART.policy,
      backoff: { initialMs, maxMs },
      limit: {
        attempts: (limit.attempts as number | undefined) ?? DEFAULT_RESTART.limit.attempts,
        windowMs: this.duration(`${p}/limit/window`, limit.window, DEFAULT_RESTART.limit.windowMs),
      },
    };
  }

  health(p: string, h: Record<string, unknown>): HealthSpec {
    const intervalMs = this.duration(`${p}/interval`, h.interval, DEFAULT_HEALTH.intervalMs);
    const timeoutMs = this.duration(`${p}/timeout`, h.timeout, DEFAULT_HEALTH.timeoutMs);
    if (timeoutMs >= intervalMs) {
      const at = h.timeout !== undefined ? 'timeout' : 'interval';
      const intervalWords = h.interval === undefined ? `the default interval ${formatMs(intervalMs)}` : `interval ${formatMs(intervalMs)}`;
      this.issues.add(`${p}/${at}`, `timeout ${formatMs(timeoutMs)} is not shorter than ${intervalWords}: a probe must time out before the next one is due`);
    }
    return { intervalMs, timeoutMs, failures: (h.failures as number | undefined) ?? DEFAULT_HEALTH.failures };
  }

  instance(name: string, v: Record<string, unknown>, at: SourcePosition): InstanceSpecEntry {
    const p = `/instances/${escape(name)}`;
    try {
      checkInstanceName('instance name', name);
    } catch (err) {
      this.issues.add(p, (err as Error).message, 'key');
    }
    const cmdline = typeof v.cmdline === 'string' ? v.cmdline : DEFAULT_CMDLINE;
    if (Buffer.byteLength(cmdline) >= COMMAND_LINE_SIZE) this.issues.add(`${p}/cmdline`, `the command line is ${Buffer.byteLength(cmdline)} bytes: the kernel takes at most ${COMMAND_LINE_SIZE - 1}`);
    if (cmdline.includes('\0')) this.issues.add(`${p}/cmdline`, 'the command line contains a NUL character');
    if (v.initrd !== undefined && v.kernel === undefined) this.issues.add(`${p}/initrd`, 'an initrd needs a kernel: add kernel, or remove initrd');
    const entry: InstanceSpecEntry = {
      name,
      cpus: this.cpus(`${p}/cpus`, v.cpus),
      memoryBytes: this.size(`${p}/memory`, v.memory),
      devices: this.devices(`${p}/devices`, v.devices),
      cmdline,
      autostart: v.autostart !== false,
      restart: this.restart(`${p}/restart`, v.restart),
      onDaemonStop: v.onDaemonStop === 'stop' ? 'stop' : 'keep',
      at,
    };
    if (typeof v.id === 'number') entry.id = v.id;
    if (typeof v.numaNode === 'number') entry.numaNode = v.numaNode;
    const kernel = this.path(v.kernel);
    if (kernel !== undefined) entry.kernel = kernel;
    const initrd = this.path(v.initrd);
    if (initrd !== undefined) entry.initrd = initrd;
    if (isObject(v.health)) entry.health = this.health(`${p}/health`, v.health);
    return entry;
  }
}

function fail(file: string, issues: SpecIssue[]): never {
  issues.sort((a, b) => a.at.line - b.at.line || a.at.column - b.at.column || a.pointer.localeCompare(b.pointer));
  throw new SpecError(file, issues);
}

/** The YAML parser's words for what it found, without its own position suffix. */
function parserMessage(code: string, message: string, pointer: string): string {
  if (code === 'DUPLICATE_KEY') return `"${unescape(pointer.slice(pointer.lastIndexOf('/') + 1))}" is given twice in the same mapping: keep one of them`;
  if (code === 'MULTIPLE_DOCS') return 'a second YAML document starts here: a spec file holds one document';
  return message.split('\n')[0]!;
}

function parse(text: string, file: string, base: string): HostSpec {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, logLevel: 'error' });
  const issues = new Issues(file, doc, lines);
  for (const e of [...doc.errors, ...doc.warnings]) {
    const pointer = pointerAt(doc.contents, e.pos[0]);
    issues.list.push({ pointer, at: issues.position(e.pos[0]), message: parserMessage(e.code, e.message, pointer) });
  }
  if (issues.list.length > 0) fail(file, issues.list);
  if (doc.contents === null) fail(file, [{ pointer: '', at: issues.position(0), message: 'the spec is empty: it starts with "version: 1"' }]);

  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // yaml refuses to expand aliases past maxAliasCount (100): a "billion laughs" document
    fail(file, [{ pointer: '', at: issues.position(0), message: `${(err as Error).message}: use fewer aliases (*name)` }]);
  }
  const { validate, kinds } = validator();
  if (!validate(data)) for (const e of validate.errors!) schemaIssue(issues, e, kinds);
  if (!isObject(data)) fail(file, issues.list);

  const semantics = new Semantics(issues, base);
  const spec: HostSpec = { version: 1, instances: [], source: file };
  if (isObject(data.pool)) spec.pool = semantics.pool(data.pool);
  const instances = doc.get('instances', true);
  if (isMap(instances) && isObject(data.instances)) {
    const ids = new Map<number, string>();
    for (const pair of instances.items) {
      const name = keyString(pair.key);
      const v = data.instances[name];
      if (!isObject(v)) continue;
      const entry = semantics.instance(name, v, issues.at(`/instances/${escape(name)}`, 'key'));
      if (entry.id !== undefined) {
        const other = ids.get(entry.id);
        if (other !== undefined) {
          const where = issues.at(`/instances/${escape(other)}/id`, 'value');
          issues.add(`/instances/${escape(name)}/id`, `id ${entry.id} is also the id of "${other}" (line ${where.line}): give each instance its own id, or leave id out`);
        } else ids.set(entry.id, name);
      }
      spec.instances.push(entry);
    }
  }
  if (issues.list.length > 0) fail(file, issues.list);
  return spec;
}

/**
 * Parses and validates a spec from text (YAML 1.2 or JSON). `file` names it in positions and
 * messages. Relative kernel and initrd paths resolve against the current directory
 * (process.cwd()); loadSpecFile resolves them against the file's directory instead.
 * @throws SpecError listing every problem found, in file order
 */
export function parseSpec(text: string, file = '<spec>'): HostSpec {
  return parse(text, file, process.cwd());
}

/**
 * Reads and validates a spec file. Relative kernel and initrd paths resolve against the directory
 * of the file.
 * @throws SpecError listing every problem found; the fs error (ENOENT...) when the file cannot be read
 */
export async function loadSpecFile(file: string): Promise<HostSpec> {
  const text = await readFile(file, 'utf8');
  return parse(text, file, path.dirname(path.resolve(file)));
}
