// lib/spec/load: host spec files (YAML or JSON) -> HostSpec, every problem reported with the JSON
// pointer, line and column of the value that causes it, all of them in one SpecError.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MultikernelError } from '../../lib/errors';
import { checkInstanceName } from '../../lib/model/overlay';
import { DEFAULT_CMDLINE, DEFAULT_HEALTH, DEFAULT_RESTART, formatIssue, loadSpecFile, parseSpec, SPEC_SCHEMA_PATH, SpecError, type HostSpec, type SpecIssue } from '../../lib/spec';
import { MAX_CPU_ID, parseCpuIds, parseDurationMs } from '../../lib/units';

const FULL_YAML = `# yaml-language-server: $schema=../schema/spec.schema.json
version: 1
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
  "3":
    cpus: "4"
    memory: 8192K
`;

// written out by hand: JSON.stringify would put the integer-like key "3" first, as JS objects do
const FULL_JSON = `{
  "$schema": "../schema/spec.schema.json",
  "version": 1,
  "pool": { "cpus": "2-7", "memory": "4G", "devices": ["0000:03:00.0", "0000:04:00.0"] },
  "instances": {
\t"web": {
      "id": 3,
      "cpus": 2,
      "memory": "512M",
      "numaNode": 0,
      "devices": ["0000:03:00.0"],
      "kernel": "/boot/vmlinuz-mk",
      "initrd": "/boot/initrd.img",
      "cmdline": "console=mktty0 quiet",
      "autostart": false,
      "restart": { "policy": "preserve", "backoff": { "initial": "500ms", "max": "1h" }, "limit": { "attempts": 3, "window": "2m" } },
      "health": { "interval": "10s", "timeout": 1500, "failures": 2 },
      "onDaemonStop": "stop"
    },
    "db": { "cpus": [6, 7], "memory": 1073741824 },
    "3": { "cpus": "4", "memory": "8192K" }
  }
}
`;

const withoutPositions = (spec: HostSpec): unknown => ({ ...spec, source: undefined, instances: spec.instances.map((i) => ({ ...i, at: undefined })) });

/** The issues a text raises (it must raise a SpecError). */
function issuesOf(text: string, file = 'host.yaml'): SpecIssue[] {
  try {
    parseSpec(text, file);
  } catch (err) {
    if (err instanceof SpecError) return err.issues;
    throw err;
  }
  throw new Error(`no SpecError for:\n${text}`);
}

t.test('a full spec in YAML and the same in JSON load to the same HostSpec', async (t) => {
  const yaml = parseSpec(FULL_YAML, 'host.yaml');
  const json = parseSpec(FULL_JSON, 'host.json');
  t.same(withoutPositions(json), withoutPositions(yaml));
  t.same(yaml.pool, { cpus: { physical: [2, 3, 4, 5, 6, 7] }, memoryBytes: 4n << 30n, devices: ['0000:03:00.0', '0000:04:00.0'] });
  t.same(
    yaml.instances.map((i) => i.name),
    ['web', 'db', '3'],
    'instances in file order (a JS object would put "3" first)',
  );
  t.same(yaml.instances[0], {
    name: 'web',
    id: 3,
    cpus: { count: 2 },
    memoryBytes: 512n << 20n,
    numaNode: 0,
    devices: ['0000:03:00.0'],
    kernel: '/boot/vmlinuz-mk',
    initrd: '/boot/initrd.img',
    cmdline: 'console=mktty0 quiet',
    autostart: false,
    restart: { policy: 'preserve', backoff: { initialMs: 500, maxMs: 3_600_000 }, limit: { attempts: 3, windowMs: 120_000 } },
    health: { intervalMs: 10_000, timeoutMs: 1500, failures: 2 },
    onDaemonStop: 'stop',
    at: { file: 'host.yaml', line: 8, column: 3 },
  });
  t.same(yaml.instances[1]!.cpus, { physical: [6, 7] });
  t.equal(yaml.instances[1]!.memoryBytes, 1n << 30n);
  t.same(yaml.instances[2]!.cpus, { physical: [4] }, 'a quoted single id is a list of one CPU');
  t.same(yaml.instances[2]!.at, { file: 'host.yaml', line: 27, column: 3 });
  t.same(json.instances[0]!.at, { file: 'host.json', line: 6, column: 2 }, 'a tab is white space in JSON and in YAML flow collections');
  t.equal(yaml.source, 'host.yaml');
  t.equal(yaml.version, 1);
});

t.test('defaults', async (t) => {
  const spec = parseSpec('version: 1\ninstances:\n  web:\n    cpus: 1\n    memory: 4096\n');
  t.equal(spec.source, '<spec>');
  t.equal(spec.pool, undefined, 'no pool: the spec does not manage it');
  t.same(spec.instances, [
    {
      name: 'web',
      cpus: { count: 1 },
      memoryBytes: 4096n,
      devices: [],
      cmdline: 'console=mktty0',
      autostart: true,
      restart: { policy: 'restart', backoff: { initialMs: 1000, maxMs: 300_000 }, limit: { attempts: 5, windowMs: 600_000 } },
      onDaemonStop: 'keep',
      at: { file: '<spec>', line: 3, column: 3 },
    },
  ]);
  t.same(parseSpec('version: 1\n'), { version: 1, instances: [], source: '<spec>' }, 'instances are optional');
  t.same(parseSpec('version: 1\npool: { cpus: 2, memory: 1G }\n').pool, { cpus: { count: 2 }, memoryBytes: 1n << 30n, devices: [] });
  const partial = parseSpec('version: 1\ninstances:\n  a: { cpus: 1, memory: 1M, health: {}, restart: { backoff: { max: 2s }, limit: { window: 1h } } }\n').instances[0]!;
  t.same(partial.health, DEFAULT_HEALTH, 'health: {} takes every default');
  t.same(partial.restart, { policy: 'restart', backoff: { initialMs: 1000, maxMs: 2000 }, limit: { attempts: 5, windowMs: 3_600_000 } }, 'restart fields merge with the defaults');
  t.same(parseSpec('version: 1\ninstances:\n  a: { cpus: 1, memory: 1M, restart: { policy: stop } }\n').instances[0]!.restart, { ...DEFAULT_RESTART, policy: 'stop' });
  t.same(
    parseSpec('version: 1\ninstances:\n  a: { cpus: 1, memory: 1M, devices: ["0000:0A:1F.7"] }\n').instances[0]!.devices,
    ['0000:0a:1f.7'],
    'PCI addresses in the lower case the kernel prints',
  );
});

t.test('the schema documents the defaults the loader fills in, and gives every field a title and a description', async (t) => {
  const schema = JSON.parse(fs.readFileSync(SPEC_SCHEMA_PATH, 'utf8'));
  const instance = schema.$defs.instance.properties;
  t.equal(instance.cmdline.default, DEFAULT_CMDLINE);
  t.equal(instance.autostart.default, true);
  t.equal(instance.onDaemonStop.default, 'keep');
  t.equal(instance.restart.properties.policy.default, DEFAULT_RESTART.policy);
  t.equal(instance.restart.properties.limit.properties.attempts.default, DEFAULT_RESTART.limit.attempts);
  t.equal(instance.health.properties.failures.default, DEFAULT_HEALTH.failures);
  t.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  const undocumented: string[] = [];
  const walk = (node: Record<string, unknown>, where: string): void => {
    if (typeof node.title !== 'string' || typeof node.description !== 'string') undocumented.push(where);
    if (node.type === 'object' || node.properties !== undefined) t.equal(node.additionalProperties === undefined, false, `${where} says what else it takes`);
    for (const [key, sub] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(sub, `${where}/properties/${key}`);
  };
  walk(schema, '#');
  for (const [key, def] of Object.entries(schema.$defs as Record<string, Record<string, unknown>>)) walk(def, `#/$defs/${key}`);
  t.same(undocumented, []);
  const pattern = new RegExp(schema.properties.instances.propertyNames.pattern as string);
  for (const name of ['web', 'a', '3', 'x'.repeat(31), 'x'.repeat(32), 'a.b_c+d-e', '-web', '.a', 'a/b', 'a b', 'ü', '']) {
    let kernel = true;
    try {
      checkInstanceName('name', name);
    } catch {
      kernel = false;
    }
    t.equal(pattern.test(name), kernel, `the schema and the kernel rule agree on ${JSON.stringify(name)}`);
  }
});

const INSTANCE = 'version: 1\ninstances:\n  web:\n    cpus: 2\n    memory: 512M\n';
/** The spec above with `line` added to the instance (as its line 6). */
const web = (line: string): string => `${INSTANCE}    ${line}\n`;

// [what, text, pointer, line, column, message]
const CASES: [string, string, string, number, number, string | RegExp][] = [
  ['wrong type: boolean', web('autostart: "yes"'), '/instances/web/autostart', 6, 16, '"yes" is not true or false'],
  ['wrong type: string', web('cmdline: { a: 1 }'), '/instances/web/cmdline', 6, 14, 'a mapping is not a string'],
  ['wrong type: integer', web('numaNode: "0"'), '/instances/web/numaNode', 6, 15, '"0" is not a whole number'],
  ['wrong type: mapping', web('health: 10s'), '/instances/web/health', 6, 13, '"10s" is not a mapping'],
  ['wrong type: list', web('devices: "0000:03:00.0"'), '/instances/web/devices', 6, 14, '"0000:03:00.0" is not a list'],
  ['wrong type: an instance', 'version: 1\ninstances:\n  web: 5\n', '/instances/web', 3, 8, '5 is not a mapping'],
  ['wrong type: instances', 'version: 1\ninstances: [web]\n', '/instances', 2, 12, 'a list is not a mapping'],
  ['an empty value', 'version: 1\npool:\n', '/pool', 2, 6, 'an empty value is not a mapping'],
  ['a key without a value', 'version: 1\n? pool\n', '/pool', 2, 3, 'an empty value is not a mapping'],
  ['unknown key, a typo', web('memroy: 1G'), '/instances/web/memroy', 6, 5, /^unknown field "memroy": did you mean "memory"\? the fields here are id, cpus, memory, numaNode, devices, kernel,/],
  ['unknown key', web('colour: red'), '/instances/web/colour', 6, 5, /^unknown field "colour": the fields here are id, /],
  ['a list as a key', 'version: 1\n? [a, b]\n: 1\n', '', 2, 3, 'this key is a list or a mapping: keys are names'],
  ['a mapping as a key', 'version: 1\ninstances:\n  ? { a: 1 }\n  : {}\n', '/instances', 3, 5, 'this key is a list or a mapping: keys are names'],
  [
    'an alias bomb',
    `version: 1\npool: &a { cpus: 1, memory: 1G }\ninstances: {${Array.from({ length: 120 }, (_, i) => `x${i}: *a`).join(', ')}}\n`,
    '',
    1,
    1,
    'Excessive alias count indicates a resource exhaustion attack: use fewer aliases (*name)',
  ],
  ['a circular alias', 'version: 1\npool: &p { cpus: 1, memory: 1G, devices: [*p] }\n', '/pool/devices/0', 2, 43, /^a mapping is not a PCI address/],
  ['an empty key', 'version: 1\n: x\n', '/', 2, 1, /^unknown field "": the fields here are \$schema, version, pool, instances$/],
  ['unknown key at the top', 'version: 1\nhosts: {}\n', '/hosts', 2, 1, 'unknown field "hosts": the fields here are $schema, version, pool, instances'],
  ['unknown key in restart', web('restart: { polcy: stop }'), '/instances/web/restart/polcy', 6, 16, 'unknown field "polcy": did you mean "policy"? the fields here are policy, backoff, limit'],
  ['unknown key in a pool', 'version: 1\npool: { cpus: 1, memory: 1G, devicez: [] }\n', '/pool/devicez', 2, 30, /did you mean "devices"\?/],
  ['missing field', 'version: 1\ninstances:\n  web:\n    cpus: 2\n', '/instances/web/memory', 3, 3, '"memory" is missing: it is required here'],
  ['missing pool memory', 'version: 1\npool:\n  cpus: 2\n', '/pool/memory', 2, 1, '"memory" is missing: it is required here'],
  ['bad size', 'version: 1\ninstances:\n  web:\n    cpus: 2\n    memory: 512X\n', '/instances/web/memory', 5, 13, '"512X" is not a size: use bytes or a number with K, M, G or T, e.g. 512M'],
  ['bad size: a fraction', 'version: 1\npool: { cpus: 1, memory: 1.5G }\n', '/pool/memory', 2, 26, '"1.5G" is not a size: use bytes or a number with K, M, G or T, e.g. 512M'],
  ['bad size: a float', 'version: 1\npool: { cpus: 1, memory: 1.5 }\n', '/pool/memory', 2, 26, '1.5 is not a size: use bytes or a number with K, M, G or T, e.g. 512M'],
  ['bad size: too large for a number', 'version: 1\npool: { cpus: 1, memory: 100000000000000000000 }\n', '/pool/memory', 2, 26, /^100000000000000000000 is not a size/],
  ['size: not whole pages', 'version: 1\npool: { cpus: 1, memory: 1000 }\n', '/pool/memory', 2, 26, '1000 is 1000 bytes, not a whole number of 4 KiB pages (4096 bytes): round it, e.g. 512M'],
  ['size: not whole pages, with a unit', 'version: 1\npool: { cpus: 1, memory: 3K }\n', '/pool/memory', 2, 26, '"3K" is 3072 bytes, not a whole number of 4 KiB pages (4096 bytes): round it, e.g. 512M'],
  ['size: zero', 'version: 1\npool: { cpus: 1, memory: 0G }\n', '/pool/memory', 2, 26, '"0G" is zero: a size is at least one 4 KiB page, e.g. 512M'],
  ['size: zero bytes', 'version: 1\npool: { cpus: 1, memory: 0 }\n', '/pool/memory', 2, 26, '0 is out of range: use at least 1'],
  ['bad duration', web('health: { interval: 10 s }'), '/instances/web/health/interval', 6, 25, '"10 s" is not a duration: use milliseconds or a number with ms, s, m or h, e.g. 500ms, 10s, 5m, 1h'],
  ['bad duration: days', web('restart: { limit: { window: 1d } }'), '/instances/web/restart/limit/window', 6, 33, /^"1d" is not a duration/],
  ['bad duration: a boolean', web('restart: { backoff: { max: true } }'), '/instances/web/restart/backoff/max', 6, 32, /^true is not a duration/],
  ['duration: zero', web('health: { timeout: 0s }'), '/instances/web/health/timeout', 6, 24, '"0s" is zero: a duration is at least 1ms'],
  ['duration: zero ms', web('health: { timeout: 0 }'), '/instances/web/health/timeout', 6, 24, '0 is out of range: use at least 1'],
  ['duration: too long', web('restart: { limit: { window: 9999999999999h } }'), '/instances/web/restart/limit/window', 6, 33, /^the duration is too long: 9999999999999h; use milliseconds/],
  ['bad cpulist', web('cpus: "a-b"').replace('    cpus: 2\n', ''), '/instances/web/cpus', 5, 11, /^"a-b" is not a CPU count or list: use a count such as 2, a list of ids such as "4-5,8", or a YAML list such as \[4, 5\]$/],
  ['cpulist backwards', 'version: 1\npool: { cpus: "5-2", memory: 1G }\n', '/pool/cpus', 2, 15, 'the CPU list "5-2": the range 5-2 runs backwards; use ids and ranges such as "4-5,8"'],
  ['cpulist twice', 'version: 1\npool: { cpus: "1-3,2", memory: 1G }\n', '/pool/cpus', 2, 15, /names a CPU twice/],
  ['cpulist too far', 'version: 1\npool: { cpus: "0-70000", memory: 1G }\n', '/pool/cpus', 2, 15, /CPU 70000 is beyond 65535/],
  ['cpus: a count of zero', 'version: 1\npool: { cpus: 0, memory: 1G }\n', '/pool/cpus', 2, 15, '0 is out of range: use at least 1'],
  ['cpus: a boolean', 'version: 1\npool: { cpus: true, memory: 1G }\n', '/pool/cpus', 2, 15, /^true is not a CPU count or list/],
  ['cpus: an empty list', 'version: 1\npool: { cpus: [], memory: 1G }\n', '/pool/cpus', 2, 15, 'the list is empty: name at least one CPU, or give a count'],
  ['cpus: a list with a string', 'version: 1\npool: { cpus: [1, "2"], memory: 1G }\n', '/pool/cpus/1', 2, 19, '"2" is not a whole number'],
  ['cpus: a list naming one twice', 'version: 1\npool: { cpus: [1, 2, 1], memory: 1G }\n', '/pool/cpus/2', 2, 22, 'CPU 1 is listed twice: list each CPU once'],
  ['cpus: a list id too large', 'version: 1\npool: { cpus: [65536], memory: 1G }\n', '/pool/cpus/0', 2, 16, '65536 is out of range: use 0 to 65535'],
  ['id out of range: 0', web('id: 0'), '/instances/web/id', 6, 9, '0 is out of range: use 1 to 2047'],
  ['id out of range: 2048', web('id: 2048'), '/instances/web/id', 6, 9, '2048 is out of range: use 1 to 2047'],
  ['numaNode out of range', web('numaNode: 64'), '/instances/web/numaNode', 6, 15, '64 is out of range: use 0 to 63'],
  ['attempts out of range', web('restart: { limit: { attempts: 0 } }'), '/instances/web/restart/limit/attempts', 6, 35, '0 is out of range: use at least 1'],
  ['bad enum: policy', web('restart: { policy: always }'), '/instances/web/restart/policy', 6, 24, '"always" is not one of restart, preserve, stop'],
  ['bad enum: onDaemonStop', web('onDaemonStop: halt'), '/instances/web/onDaemonStop', 6, 19, '"halt" is not one of keep, stop'],
  ['bad name', 'version: 1\ninstances:\n  -web: { cpus: 1, memory: 1M }\n', '/instances/-web', 3, 3, '"-web" is not a valid instance name: use 1 to 31 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit'],
  ['bad name: too long', `version: 1\ninstances:\n  ${'x'.repeat(32)}: { cpus: 1, memory: 1M }\n`, `/instances/${'x'.repeat(32)}`, 3, 3, /is not a valid instance name/],
  ['bad name: a slash', 'version: 1\ninstances:\n  "a/b~": { cpus: 1, memory: 1M }\n', '/instances/a~1b~0', 3, 3, '"a/b~" is not a valid instance name: use 1 to 31 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit'],
  ['bad PCI address', web('devices: ["0000:03:20.0"]'), '/instances/web/devices/0', 6, 15, '"0000:03:20.0" is not a PCI address: write it as DDDD:BB:SS.F in hexadecimal (slot 00-1f, function 0-7), e.g. "0000:03:00.0"'],
  ['PCI address twice', web('devices: ["0000:03:00.0", "0000:03:00.0"]'), '/instances/web/devices/1', 6, 31, '"0000:03:00.0" is listed twice (also at /instances/web/devices/0): list each PCI function once'],
  ['PCI address twice, in other cases', 'version: 1\npool: { cpus: 1, memory: 1G, devices: ["0000:0a:00.0", "0000:0A:00.0"] }\n', '/pool/devices/1', 2, 56, /^"0000:0a:00.0" is listed twice/],
  ['empty kernel path', web('kernel: ""'), '/instances/web/kernel', 6, 13, 'the path is empty: give the path of a file'],
  ['command line too long', web(`cmdline: "${'x'.repeat(2048)}"`), '/instances/web/cmdline', 6, 14, 'the command line is 2048 bytes: the kernel takes at most 2047'],
  ['command line with NUL', web('cmdline: "a\\0b"'), '/instances/web/cmdline', 6, 14, 'the command line contains a NUL character'],
  ['duplicate key', web('memory: 1G'), '/instances/web/memory', 6, 5, '"memory" is given twice in the same mapping: keep one of them'],
  ['duplicate key in a list item', web('devices: [{ a: 1, a: 2 }]'), '/instances/web/devices/0/a', 6, 23, '"a" is given twice in the same mapping: keep one of them'],
  ['duplicate key in JSON', '{"version": 1, "instances": {"a": {}, "a": {}}}', '/instances/a', 1, 39, '"a" is given twice in the same mapping: keep one of them'],
  ['duplicate key after a key without value', '? a\nb: 1\nb: 2\n', '/b', 3, 1, '"b" is given twice in the same mapping: keep one of them'],
  ['duplicate id', `${INSTANCE}    id: 7\n  api:\n    id: 7\n    cpus: 1\n    memory: 1M\n`, '/instances/api/id', 8, 9, 'id 7 is also the id of "web" (line 6): give each instance its own id, or leave id out'],
  ['initrd without kernel', web('initrd: initrd.img'), '/instances/web/initrd', 6, 13, 'an initrd needs a kernel: add kernel, or remove initrd'],
  ['backoff order', web('restart: { backoff: { initial: 2h, max: 1h } }'), '/instances/web/restart/backoff/initial', 6, 36, 'initial 2h is longer than max 1h: the first wait must be at most the longest'],
  ['backoff order, against the default max', web('restart: { backoff: { initial: 10m } }'), '/instances/web/restart/backoff/initial', 6, 36, 'initial 10m is longer than the default max 5m: the first wait must be at most the longest'],
  ['backoff order, against the default initial', web('restart: { backoff: { max: 500ms } }'), '/instances/web/restart/backoff/max', 6, 32, 'initial 1s is longer than max 500ms: the first wait must be at most the longest'],
  ['health order', web('health: { interval: 1500ms, timeout: 1500 }'), '/instances/web/health/timeout', 6, 42, 'timeout 1500ms is not shorter than interval 1500ms: a probe must time out before the next one is due'],
  ['health order, against the default interval', web('health: { timeout: 20s }'), '/instances/web/health/timeout', 6, 24, 'timeout 20s is not shorter than the default interval 10s: a probe must time out before the next one is due'],
  ['health order, against the default timeout', web('health: { interval: 1s }'), '/instances/web/health/interval', 6, 25, 'timeout 1s is not shorter than interval 1s: a probe must time out before the next one is due'],
  ['version missing', 'pool: { cpus: 1, memory: 1G }\n', '/version', 1, 1, '"version" is missing: it is required here'],
  ['version missing, after a comment', '# host\n\npool: { cpus: 1, memory: 1G }\n', '/version', 3, 1, '"version" is missing: it is required here'],
  ['version 2', 'version: 2\n', '/version', 1, 10, '2 is not a version of the spec format: write version: 1'],
  ['version as a string', 'version: "1"\n', '/version', 1, 10, '"1" is not a version of the spec format: write version: 1'],
  ['multi-document', 'version: 1\n---\nversion: 1\n', '', 2, 1, 'a second YAML document starts here: a spec file holds one document'],
  ['multi-document of lists', '- 1\n---\n- 2\n', '', 2, 1, 'a second YAML document starts here: a spec file holds one document'],
  ['not a mapping at the top: a list', '- version: 1\n', '', 1, 1, 'a list is not a mapping'],
  ['not a mapping at the top: a string', 'version 1\n', '', 1, 1, '"version 1" is not a mapping'],
  ['empty file', '', '', 1, 1, 'the spec is empty: it starts with "version: 1"'],
  ['only comments', '# nothing yet\n\n', '', 1, 1, 'the spec is empty: it starts with "version: 1"'],
  ['a YAML syntax error', 'version: 1\npool: { cpus: 1, memory: 1G\n', '', 3, 1, /^Flow map in block collection must be sufficiently indented and end with a }$/],
  ['a YAML syntax error in a list', 'version: 1\npool: { cpus: [1, , 2], memory: 1G }\n', '/pool/cpus', 2, 19, /^Unexpected , in flow sequence$/],
  ['an unknown tag', 'version: !int 1\n', '/version', 1, 10, /^Unresolved tag: !int/],
];

t.test('every field is rejected when bad, at the pointer, line and column of the value', async (t) => {
  for (const [what, text, pointer, line, column, message] of CASES) {
    const issues = issuesOf(text);
    t.equal(issues.length, 1, `${what}: one issue, got ${issues.map(formatIssue).join(' | ')}`);
    t.match(issues[0], { pointer, at: { file: 'host.yaml', line, column }, message }, what);
  }
});

t.test('several issues are reported together, in file order, in one SpecError', async (t) => {
  const text = `version: 2
pool: { cpus: 0, memory: 512X }
instances:
  web:
    memory: 1000
    bogus: 1
    restart: { policy: foo }
  -api: { cpus: 1, memory: 1M, id: 4, initrd: x }
  db: { cpus: 1, memory: 1M, id: 4 }
`;
  let error: unknown;
  try {
    parseSpec(text, 'multi.yaml');
  } catch (err) {
    error = err;
  }
  t.ok(error instanceof SpecError);
  t.ok(error instanceof MultikernelError);
  const e = error as SpecError;
  t.equal(e.code, 'ERR_MK_INVALID_SPEC');
  t.equal(e.name, 'SpecError');
  t.same(e.details, { issues: e.issues });
  t.same(
    e.issues.map((i) => [i.pointer, i.at.line, i.at.column]),
    [
      ['/version', 1, 10],
      ['/pool/cpus', 2, 15],
      ['/pool/memory', 2, 26],
      ['/instances/web/cpus', 4, 3],
      ['/instances/web/memory', 5, 13],
      ['/instances/web/bogus', 6, 5],
      ['/instances/web/restart/policy', 7, 24],
      ['/instances/-api', 8, 3],
      ['/instances/-api/initrd', 8, 47],
      ['/instances/db/id', 9, 34],
    ],
  );
  t.equal(
    e.message.split('\n').slice(0, 3).join('\n'),
    'multi.yaml: 10 problems in the spec\n  /version (line 1, column 10): 2 is not a version of the spec format: write version: 1\n  /pool/cpus (line 2, column 15): 0 is out of range: use at least 1',
  );
  t.equal(e.message.split('\n').length, 11);
  t.same(
    issuesOf('version: 1\ninstances:\n  web: {}\n').map((i) => [i.pointer, i.at.line, i.at.column]),
    [
      ['/instances/web/cpus', 3, 3],
      ['/instances/web/memory', 3, 3],
    ],
    'issues at the same place in pointer order',
  );
  t.equal(formatIssue({ pointer: '', at: { file: 'f', line: 1, column: 1 }, message: 'm' }), '(top level) (line 1, column 1): m');
  t.throws(() => parseSpec(''), { message: '<spec>: 1 problem in the spec\n  (top level) (line 1, column 1): the spec is empty: it starts with "version: 1"' });
});

t.test('an aliased instance is checked as if written out', async (t) => {
  const spec = parseSpec('version: 1\ninstances:\n  a: &base { cpus: 1, memory: 1M }\n  b: *base\n');
  t.same(
    spec.instances.map((i) => [i.name, i.memoryBytes, i.at.line]),
    [
      ['a', 1n << 20n, 3],
      ['b', 1n << 20n, 4],
    ],
  );
  const issues = issuesOf('version: 1\ninstances:\n  a: &base { id: 1, cpus: 1, memory: 1M }\n  b: *base\n');
  t.match(issues, [{ pointer: '/instances/b/id', at: { line: 4, column: 6 }, message: /id 1 is also the id of "a" \(line 3\)/ }], 'inside an alias, the alias is the position');
});

t.test('relative kernel and initrd paths: against the current directory from parseSpec', async (t) => {
  const spec = parseSpec('version: 1\ninstances:\n  a: { cpus: 1, memory: 1M, kernel: vmlinuz, initrd: ../initrd.img }\n');
  t.equal(spec.instances[0]!.kernel, path.resolve(process.cwd(), 'vmlinuz'));
  t.equal(spec.instances[0]!.initrd, path.resolve(process.cwd(), '..', 'initrd.img'));
});

t.test('loadSpecFile: relative paths against the file directory; fs errors as they are', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-spec-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'etc'));
  const file = path.join(dir, 'etc', 'host.yaml');
  fs.writeFileSync(file, 'version: 1\ninstances:\n  a: { cpus: 1, memory: 1M, kernel: ./vmlinuz, initrd: ../boot/initrd.img }\n  b: { cpus: 1, memory: 1M, kernel: /abs/vmlinuz }\n');
  const relative = path.relative(process.cwd(), file);
  const spec = await loadSpecFile(relative);
  t.equal(spec.source, relative, 'named as given');
  t.equal(spec.instances[0]!.at.file, relative);
  t.equal(spec.instances[0]!.kernel, path.join(dir, 'etc', 'vmlinuz'));
  t.equal(spec.instances[0]!.initrd, path.join(dir, 'boot', 'initrd.img'));
  t.equal(spec.instances[1]!.kernel, '/abs/vmlinuz');
  t.equal(spec.instances[1]!.initrd, undefined);

  fs.writeFileSync(file, 'version: 1\ninstances:\n  a: { cpus: 1, memory: 1X }\n');
  await t.rejects(loadSpecFile(file), { name: 'SpecError', code: 'ERR_MK_INVALID_SPEC', issues: [{ pointer: '/instances/a/memory', at: { file, line: 3, column: 25 } }] });
  await t.rejects(loadSpecFile(path.join(dir, 'missing.yaml')), { code: 'ENOENT', syscall: 'open' });
});

t.test('lib/units: the CPU list and duration parsers the spec uses', async (t) => {
  t.same(parseCpuIds('2-5,8'), [2, 3, 4, 5, 8]);
  t.same(parseCpuIds(' 1 , 3 - 4'), [1, 3, 4]);
  t.same(parseCpuIds(`${MAX_CPU_ID}`), [MAX_CPU_ID]);
  t.throws(() => parseCpuIds('x'), { name: 'RangeError', message: 'CPU list: "x" is not a CPU list such as 2-5,8' });
  t.throws(() => parseCpuIds('5-2', '--cpus'), { message: '--cpus: the range 5-2 runs backwards' });
  t.throws(() => parseCpuIds('1,1'), { message: 'CPU list: "1,1" names a CPU twice' });
  t.throws(() => parseCpuIds('65536'), { message: 'CPU list: CPU 65536 is beyond 65535, the largest id a list may name' });
  t.equal(parseDurationMs('500ms'), 500);
  t.equal(parseDurationMs('10s'), 10_000);
  t.equal(parseDurationMs('5m'), 300_000);
  t.equal(parseDurationMs('1h'), 3_600_000);
  t.equal(parseDurationMs(250), 250);
  t.equal(parseDurationMs('0s'), 0);
  for (const bad of [-1, 1.5, Number.NaN]) t.throws(() => parseDurationMs(bad, 'interval'), { name: 'RangeError', message: /^interval must be a whole number of milliseconds/ }, String(bad));
  for (const bad of ['10', '1.5s', '10 s', '1d', '']) t.throws(() => parseDurationMs(bad), { message: /^duration must look like 500ms, 10s, 5m or 1h/ }, JSON.stringify(bad));
  t.throws(() => parseDurationMs('9999999999999h'), { message: 'duration is too long: 9999999999999h' });
});

t.test('docs/spec.md: its example loads, and its error example is what the loader prints', async (t) => {
  const md = fs.readFileSync(path.resolve(__dirname, '..', '..', 'docs', 'spec.md'), 'utf8');
  const example = /```yaml\n(# yaml-language-server[\s\S]*?)```/.exec(md)![1]!;
  const spec = parseSpec(example, 'host.yaml');
  t.same(
    spec.instances.map((i) => [i.name, i.autostart, i.kernel]),
    [
      ['web', true, path.resolve('images/vmlinuz-mk')],
      ['batch', false, '/boot/vmlinuz-mk'],
    ],
  );
  t.same(spec.pool, { cpus: { physical: [2, 3, 4, 5, 6, 7] }, memoryBytes: 4n << 30n, devices: ['0000:03:00.0'] });
  const printed = /```\n(host\.yaml: [\s\S]*?)\n```/.exec(md)![1]!;
  const bad = 'version: 1\ninstances:\n  web:\n    id: 3\n    cpus: 2\n    kernel: vmlinuz\n    memory: 512X\n    cmdline: quiet\n    restat: {}\n  api:\n    cpus: 1\n    memory: 1G\n    kernel: vmlinuz\n    id: 3\n';
  t.throws(() => parseSpec(bad, 'host.yaml'), { message: printed });
});

t.test('a key that is a collection: an issue, and no process warning from the YAML library', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.message);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  t.match(issuesOf('version: 1\ninstances:\n  ? [a]\n  : { cpus: 1, memory: 1M }\n'), [{ pointer: '/instances', message: /this key is a list or a mapping/ }]);
  await new Promise((r) => setImmediate(r));
  t.same(warnings, []);
});
