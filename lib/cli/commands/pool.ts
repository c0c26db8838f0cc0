/**
 * mkctl pool init|grow|shrink|teardown: the CPUs, memory and PCI devices the host gives up for
 * instances. lib/pool.ts does the work (and checks the request against the kernel's view before
 * it writes anything); this file parses options and prints the pool that results.
 */
import { parseArgs } from 'node:util';
import { formatCpuList } from '../../kernfs';
import type { MemoryRequest, PoolRequest, PoolShrinkRequest, PoolSnapshot } from '../../pool';
import { formatBytes } from '../../units';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { CPU_OPTIONS, HOST_OPTIONS, HOST_OPTIONS_HELP, type HostValues, cpuRequest, jsonDocument, parseDeviceList, parseSize, positionalArgs, withHost } from '../common';

const JSON_SHAPE = `--json: {"version": 1, "action": "init" | "grow" | "shrink" | "teardown", "pool": {"exists",
"format", "cpus": [{"physicalId", "logical"?, "node"?, "instance"?}], "freeCpus": [ids],
"memory": [{"base", "size", "node"?, "usedBytes"}], "memoryBytes", "freeMemoryBytes",
"devices": [...], "instances": [names]}}; byte counts and bases are decimal strings.`;

const INIT_HELP = `usage: mkctl pool init (--cpus IDS | --cpu-count N) --memory SIZE[@NODE][,...] [--devices PCI,...] [options]

Creates the pool: the host CPUs go offline and park in it, its memory is set aside, and the PCI
devices (if any) are handed to it, in one baseline write and one transaction. Refused when a pool
exists (grow or shrink it, or tear it down first).

options:
  --cpus IDS           these host CPUs, by physical id: 2-5,8 (as kerf's --cpus)
  --cpu-count N        N host CPUs, chosen by the library (whole cores first)
  --memory SIZE        e.g. 1G, 512M; SIZE@NODE takes it from a NUMA node, and a list such as
                       1G@0,1G@1 takes some from each
  --devices PCI,...    PCI addresses of host devices, e.g. 0000:00:04.0

${HOST_OPTIONS_HELP}
${JSON_SHAPE}
`;

const GROW_HELP = `usage: mkctl pool grow [--cpus IDS | --cpu-count N] [--memory SIZE[@NODE][,...]] [--devices PCI,...] [options]

Adds host CPUs, memory and PCI devices to the pool, in one transaction.

options:
  --cpus IDS           these host CPUs, by physical id: 6-7
  --cpu-count N        N more host CPUs
  --memory SIZE        e.g. 512M; SIZE@NODE or a list such as 512M@0,512M@1 as for pool init
  --devices PCI,...    PCI addresses of host devices

${HOST_OPTIONS_HELP}
${JSON_SHAPE}
`;

const SHRINK_HELP = `usage: mkctl pool shrink [--cpus IDS | --cpu-count N] [--memory SIZE | --chunks BASE,...] [--devices PCI,...] [options]

Gives free CPUs, free memory and free devices back to the host, in one transaction. The kernel
removes memory in whole chunks only (as mkctl status --json lists them).

options:
  --cpus IDS           these free CPUs, by physical id: 6-7
  --cpu-count N        N free CPUs (the last ones)
  --memory SIZE        unused chunks that add up to exactly SIZE (newest first)
  --chunks BASE,...    the unused chunks at these bases (0x... or decimal)
  --devices PCI,...    free PCI devices

${HOST_OPTIONS_HELP}
${JSON_SHAPE}
`;

const TEARDOWN_HELP = `usage: mkctl pool teardown [options]

Gives everything in the pool back to the host: every CPU comes back online, all memory and every
device return. Refused while instances exist (mkctl delete them first).

${HOST_OPTIONS_HELP}
${JSON_SHAPE}
`;

const POOL_OPTIONS = {
  ...HOST_OPTIONS,
  ...CPU_OPTIONS,
  memory: { type: 'string' },
  devices: { type: 'string' },
} as const;

/** "1G" → one size; "1G@0,512M@1" → a size per NUMA node. */
async function parseMemory(text: string): Promise<MemoryRequest> {
  if (!text.includes('@')) return parseSize(text, '--memory');
  const out: { size: bigint; node: number }[] = [];
  for (const part of text.split(',')) {
    const m = /^([^@]+)@(\d+)$/.exec(part.trim());
    if (m === null) throw new UsageError(`--memory: ${JSON.stringify(part)} is not SIZE@NODE such as 1G@0 (in a list, every size names its node)`);
    out.push({ size: await parseSize(m[1]!, '--memory'), node: Number(m[2]) });
  }
  return out;
}

async function poolRequest(values: { cpus?: string; 'cpu-count'?: string; memory?: string; devices?: string }): Promise<PoolRequest> {
  const cpus = cpuRequest(values);
  return {
    ...(cpus !== undefined ? { cpus } : {}),
    ...(values.memory !== undefined ? { memory: await parseMemory(values.memory) } : {}),
    ...(values.devices !== undefined ? { devices: parseDeviceList(values.devices) } : {}),
  };
}

function parseBase(text: string): bigint {
  const t = text.trim();
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(t)) throw new UsageError(`--chunks: ${JSON.stringify(text)} is not a chunk base such as 0x100000000`);
  return BigInt(t);
}

/** "4 CPUs (2-5, 3 free) · 1 GiB (768 MiB free) · 1 device free" */
export function poolSummary(p: PoolSnapshot): string {
  if (!p.exists) return 'no pool (every CPU, all memory and every device are the host\'s)';
  const ids = p.cpus.map((c) => c.physicalId).sort((a, b) => a - b);
  const cpus = `${p.cpus.length} CPU${p.cpus.length === 1 ? '' : 's'} (${ids.length > 0 ? formatCpuList(ids) : 'none'}, ${p.freeCpus.length} free)`;
  const memory = `${formatBytes(p.memoryBytes)} (${formatBytes(p.freeMemoryBytes)} free)`;
  const devices = p.devices.length === 0 ? '' : ` · ${p.devices.length} device${p.devices.length === 1 ? '' : 's'} free`;
  return `${cpus} · ${memory}${devices}`;
}

function report(io: CliIo, json: boolean | undefined, action: string, done: string, pool: PoolSnapshot): number {
  if (json) io.stdout.write(jsonDocument({ action, pool }));
  else io.stdout.write(`${done}: ${poolSummary(pool)}\n`);
  return EXIT.ok;
}

function parse(args: string[], extra: Record<string, { type: 'string' | 'boolean' }> = {}) {
  const { values, positionals } = parseArgs({ args, options: { ...POOL_OPTIONS, ...extra }, allowPositionals: true, strict: true });
  positionalArgs(positionals, []);
  return values as HostValues & { cpus?: string; 'cpu-count'?: string; memory?: string; devices?: string; chunks?: string };
}

export const poolInit: Command = {
  path: ['pool', 'init'],
  summary: 'create the pool of CPUs, memory and devices that instances take from',
  help: INIT_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const values = parse(args);
    if ((values.cpus === undefined && values['cpu-count'] === undefined) || values.memory === undefined) throw new UsageError('pool init needs CPUs (--cpus IDS or --cpu-count N) and --memory');
    const request = await poolRequest(values);
    return withHost(values, io, async ({ host }) => report(io, values.json, 'init', 'pool created', await host.pool.init(request, { signal: io.signal })));
  },
};

export const poolGrow: Command = {
  path: ['pool', 'grow'],
  summary: 'add host CPUs, memory or devices to the pool',
  help: GROW_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const values = parse(args);
    const request = await poolRequest(values);
    if (Object.keys(request).length === 0) throw new UsageError('nothing to add: give --cpus, --cpu-count, --memory or --devices');
    return withHost(values, io, async ({ host }) => report(io, values.json, 'grow', 'pool grown', await host.pool.grow(request, { signal: io.signal })));
  },
};

export const poolShrink: Command = {
  path: ['pool', 'shrink'],
  summary: 'give free CPUs, memory or devices back to the host',
  help: SHRINK_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const values = parse(args, { chunks: { type: 'string' } });
    if (values.memory !== undefined && values.chunks !== undefined) throw new UsageError('--memory and --chunks exclude each other');
    const cpus = cpuRequest(values);
    const request: PoolShrinkRequest = {
      ...(cpus !== undefined ? { cpus } : {}),
      ...(values.memory !== undefined ? { memory: await parseSize(values.memory, '--memory') } : {}),
      ...(values.chunks !== undefined ? { memory: values.chunks.split(',').map((b) => ({ base: parseBase(b) })) } : {}),
      ...(values.devices !== undefined ? { devices: parseDeviceList(values.devices) } : {}),
    };
    if (Object.keys(request).length === 0) throw new UsageError('nothing to give back: give --cpus, --cpu-count, --memory, --chunks or --devices');
    return withHost(values, io, async ({ host }) => report(io, values.json, 'shrink', 'pool shrunk', await host.pool.shrink(request, { signal: io.signal })));
  },
};

export const poolTeardown: Command = {
  path: ['pool', 'teardown'],
  summary: 'give the whole pool back to the host',
  help: TEARDOWN_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const values = parse(args);
    return withHost(values, io, async ({ host }) => report(io, values.json, 'teardown', 'pool torn down', await host.pool.teardown({ signal: io.signal })));
  },
};
