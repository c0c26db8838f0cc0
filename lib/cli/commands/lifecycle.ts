/**
 * mkctl create, update, load, start, stop, restart, unload, delete: one instance through its
 * life. The library (lib/host.ts, lib/instance.ts) does the work and says what went wrong; each
 * command here parses its options, makes one call, and prints one line (or a --json document).
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { Instance, InstanceInfo, InstanceUpdate } from '../../instance';
import { formatCpuList } from '../../kernfs';
import { formatBytes } from '../../units';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import {
  backend,
  HOST_OPTIONS,
  HOST_OPTIONS_HELP,
  type HostValues,
  jsonDocument,
  CPU_OPTIONS,
  cpuRequest,
  parseDeviceList,
  parseSize,
  positionalArgs,
  withHost,
  withProgress,
} from '../common';

/** The KERNEL word that loads a placeholder image, on the simulated host only. */
export const PLACEHOLDER_KERNEL = 'placeholder';

/** The --json line of a command whose document carries the instance after the action. */
const instanceJson = (action: string, extra = '', note = ''): string => `--json: {"version": 1, "action": "${action}", ${extra}"instance": INSTANCE}
INSTANCE: {"name", "id", "status", "cpus": [physical ids], "memoryBytes", "memory": [{"base",
"size"}], "devices": [...], "image"?: {...}}, as the kernel shows it after the action; byte
counts and bases are decimal strings.${note}`;

const CREATE_HELP = `usage: mkctl create NAME (--cpus IDS | --cpu-count N) --memory SIZE [--id N] [--numa-node N] [--devices PCI,...] [options]

Creates an instance from free pool resources, in one transaction (status "ready"). What the
kernel granted is read back; if anything is missing, the instance is removed again.

options:
  --cpus IDS           these free pool CPUs, by physical id: 2-3 or 4 (as kerf's --cpus)
  --cpu-count N        N free pool CPUs, chosen by the library (as kerf's --cpu-count)
  --memory SIZE        e.g. 256M, 1G (whole 4 KiB pages)
  --id N               the kernel id 1..2047 (also the vsock CID); default the lowest free one
  --numa-node N        take the memory from NUMA node N (and prefer its CPUs)
  --devices PCI,...    free pool PCI devices, e.g. 0000:00:04.0

${HOST_OPTIONS_HELP}
${instanceJson('create')}
`;

const UPDATE_HELP = `usage: mkctl update NAME [--cpus IDS | --cpu-count N] [--memory SIZE] [--devices PCI,...] [options]

Changes an instance's CPUs, memory and devices in one transaction, live when it runs (its kernel
is asked to take or release each resource; a refusal rolls everything back). Each option gives
the target: --cpu-count 3 grows or shrinks to three CPUs, --devices "" gives every device back.
A running instance's memory changes in steps of 128 MiB; memory is given back in whole regions.

options:
  --cpus IDS           exactly these physical ids
  --cpu-count N        N CPUs
  --memory SIZE        the new total, e.g. 512M
  --devices PCI,...    the full list of PCI devices it should hold

${HOST_OPTIONS_HELP}
${instanceJson('update')}
`;

const LOAD_HELP = `usage: mkctl load NAME KERNEL [--initrd PATH] [--cmdline TEXT] [--trust-files] [options]

Loads a kernel into an instance (status "ready" → "loaded"). KERNEL is an x86_64 vmlinux or
bzImage (converted to its vmlinux), or an arm64 Image or Image.gz. On the simulated host, which
boots nothing, KERNEL may be the word "${PLACEHOLDER_KERNEL}" for a stand-in image (a file of that
name is ./${PLACEHOLDER_KERNEL}); on a real host the word is refused.

options:
  --initrd PATH        an initramfs
  --cmdline TEXT       the kernel command line (default "console=mktty0")
  --trust-files        as root, load files a non-root user could have written (refused by
                       default: whatever they hold runs with the machine's memory)

${HOST_OPTIONS_HELP}
${instanceJson('load', `"kernel": path | "${PLACEHOLDER_KERNEL}", `)}
`;

const simpleHelp = (verb: string, what: string, extra = ''): string => `usage: mkctl ${verb} NAME${extra === '' ? '' : ` ${extra.split('\n')[0]}`} [options]

${what}
${extra === '' ? '' : `\noptions:\n${extra.split('\n').slice(1).join('\n')}\n`}
${HOST_OPTIONS_HELP}
${
  verb === 'delete'
    ? '--json: {"version": 1, "action": "delete", "instance": {"name", "id"}}'
    : instanceJson(verb, verb === 'stop' ? '"how": "graceful" | "forced", ' : verb === 'restart' ? '"how": "graceful" | "forced" | null, ' : '', verb === 'restart' ? ' "how" is null when it was not running.' : '')
}
`;

const STOP_OPTIONS_HELP = `[--force] [--timeout SEC]
  --force              halt by force (an NMI to its CPUs) when the graceful halt fails, times
                       out or is interrupted
  --timeout SEC        with --force: how long the graceful halt gets first (0: force at once);
                       without: how long to wait for it (default: the kernel's own 30 s)`;

const START_HELP = simpleHelp('start', 'Boots the loaded kernel (status "loaded" → "active"). Returns once the boot is under way.');
const STOP_HELP = simpleHelp(
  'stop',
  'Halts the instance (status "active" → "loaded"; the kernel stays loaded, so start boots it\nagain). Graceful first: its kernel is asked to power off.',
  STOP_OPTIONS_HELP,
);
const RESTART_HELP = simpleHelp('restart', 'Stops the instance when it runs (as mkctl stop), then starts the loaded kernel again.', STOP_OPTIONS_HELP);
const UNLOAD_HELP = simpleHelp('unload', 'Frees the loaded kernel (status "loaded" → "ready"). A running instance is refused: stop it first.');
const DELETE_HELP = simpleHelp(
  'delete',
  'Removes the instance; its CPUs, memory and devices go back to the pool. Only from status\n"ready", unless --force.',
  `[--force]
  --force              stop (by force) and unload it first`,
);

type Values = HostValues & Record<string, string | boolean | undefined>;

function parse(args: string[], names: readonly string[], options: Record<string, { type: 'string' | 'boolean' }> = {}): { values: Values; args: string[] } {
  const { values, positionals } = parseArgs({ args, options: { ...HOST_OPTIONS, ...options }, allowPositionals: true, strict: true });
  return { values: values as Values, args: positionalArgs(positionals, names) };
}

function wholeNumber(option: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`${option} takes a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

function stopOptions(values: Values, io: CliIo): { force: boolean; timeoutMs?: number; signal: AbortSignal } {
  const timeout = values.timeout as string | undefined;
  if (timeout !== undefined && !/^\d+(\.\d+)?$/.test(timeout)) throw new UsageError(`--timeout takes seconds, e.g. 10 or 0.5, got ${JSON.stringify(timeout)}`);
  return { force: values.force === true, ...(timeout !== undefined ? { timeoutMs: Math.round(Number(timeout) * 1000) } : {}), signal: io.signal };
}

/** "web (id 1)" */
const named = (i: { name: string; id: number }): string => `${i.name} (id ${i.id})`;

/** "2 CPUs (3-4), 512 MiB" */
function resources(info: InstanceInfo): string {
  const n = info.cpus.length;
  return `${n} CPU${n === 1 ? '' : 's'} (${formatCpuList(info.cpus)}), ${formatBytes(info.memoryBytes)}${
    info.devices.length > 0 ? `, ${info.devices.length} device${info.devices.length === 1 ? '' : 's'}` : ''
  }`;
}

/** Prints the one line (or the document) after an action on an instance. */
async function done(io: CliIo, values: Values, action: string, instance: Instance, line: (info: InstanceInfo) => string, extra: Record<string, unknown> = {}): Promise<number> {
  const info = await instance.info();
  if (values.json) io.stdout.write(jsonDocument({ action, ...extra, instance: info }));
  else io.stdout.write(`${line(info)}\n`);
  return EXIT.ok;
}

/**
 * A command on one existing instance, NAME its only positional: `prepare` checks the options
 * before the host is opened (a usage error comes first), `act` makes the call.
 */
function onInstance<T>(
  verb: string,
  summary: string,
  help: string,
  options: Record<string, { type: 'string' | 'boolean' }>,
  prepare: (values: Values, io: CliIo) => T | Promise<T>,
  act: (instance: Instance, prepared: T, values: Values, io: CliIo) => Promise<number>,
): Command {
  return {
    path: [verb],
    summary,
    help,
    async run(args: string[], io: CliIo): Promise<number> {
      const { values, args: [name] } = parse(args, ['NAME'], options);
      const prepared = await prepare(values, io);
      return withHost(values, io, async ({ host }) => act(await host.instance(name!), prepared, values, io));
    },
  };
}

const nothing = (): undefined => undefined;

export const create: Command = {
  path: ['create'],
  summary: 'create an instance from free pool CPUs, memory and devices',
  help: CREATE_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, args: [name] } = parse(args, ['NAME'], {
      ...CPU_OPTIONS,
      memory: { type: 'string' },
      id: { type: 'string' },
      'numa-node': { type: 'string' },
      devices: { type: 'string' },
    });
    const cpus = cpuRequest(values as { cpus?: string; 'cpu-count'?: string });
    const memory = values.memory as string | undefined;
    if (cpus === undefined || memory === undefined) throw new UsageError('create needs CPUs (--cpus IDS or --cpu-count N) and --memory');
    const id = wholeNumber('--id', values.id as string | undefined);
    const numaNode = wholeNumber('--numa-node', values['numa-node'] as string | undefined);
    const devices = values.devices as string | undefined;
    const spec = {
      name: name!,
      cpus,
      memory: await parseSize(memory, '--memory'),
      ...(id !== undefined ? { id } : {}),
      ...(numaNode !== undefined ? { numaNode } : {}),
      ...(devices !== undefined ? { devices: parseDeviceList(devices) } : {}),
    };
    return withHost(values, io, async ({ host }) => {
      const instance = await host.createInstance(spec, { signal: io.signal });
      return done(io, values, 'create', instance, (info) => `created ${named(info)}: ${resources(info)}`);
    });
  },
};

export const update = onInstance(
  'update',
  'change an instance\'s CPUs, memory or devices, live when it runs',
  UPDATE_HELP,
  { ...CPU_OPTIONS, memory: { type: 'string' }, devices: { type: 'string' } },
  async (values) => {
    const { memory, devices } = values as { memory?: string; devices?: string };
    const cpus = cpuRequest(values as { cpus?: string; 'cpu-count'?: string });
    const change: InstanceUpdate = {
      ...(cpus !== undefined ? { cpus } : {}),
      ...(memory !== undefined ? { memory: await parseSize(memory, '--memory') } : {}),
      ...(devices !== undefined ? { devices: parseDeviceList(devices) } : {}),
    };
    if (Object.keys(change).length === 0) throw new UsageError('nothing to change: give --cpus, --cpu-count, --memory or --devices');
    return change;
  },
  async (instance, change, values, io) => {
    await instance.update(change, { signal: io.signal });
    return done(io, values, 'update', instance, (info) => `updated ${named(info)}: ${resources(info)}`);
  },
);

export const load: Command = {
  path: ['load'],
  summary: 'load a kernel (and initramfs) into an instance',
  help: LOAD_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, args: [name, kernel] } = parse(args, ['NAME', 'KERNEL'], {
      initrd: { type: 'string' },
      cmdline: { type: 'string' },
      'trust-files': { type: 'boolean' },
    });
    const initrd = values.initrd as string | undefined;
    const cmdline = values.cmdline as string | undefined;
    // checked before the host is opened: on a host without the multikernel kernel it would say that first
    if (kernel === PLACEHOLDER_KERNEL && backend(values, io).kind !== 'simulated') {
      throw new UsageError(`"${PLACEHOLDER_KERNEL}" stands for a kernel on the simulated host only: give the path of a kernel image (a file of that name: ./${PLACEHOLDER_KERNEL})`);
    }
    // mkctl's simulated host is always an x86_64 one (SimulatedSystem's default), and boots nothing
    const image = kernel === PLACEHOLDER_KERNEL ? (await import('../../image')).placeholderImage() : path.resolve(io.cwd, kernel!);
    return withHost(values, io, async ({ host }) => {
      const instance = await host.instance(name!);
      await withProgress(io, `loading ${typeof image === 'string' ? image : 'a placeholder kernel'} into ${name}`, () =>
        instance.load(image, {
          ...(initrd !== undefined ? { initrd: path.resolve(io.cwd, initrd) } : {}),
          ...(cmdline !== undefined ? { cmdline } : {}),
          trustFiles: values['trust-files'] === true,
          signal: io.signal,
        }),
      );
      const shown = typeof image === 'string' ? image : PLACEHOLDER_KERNEL;
      return done(io, values, 'load', instance, (info) => `loaded ${shown} into ${named(info)}`, { kernel: shown });
    });
  },
};

export const start = onInstance('start', 'boot the loaded kernel of an instance', START_HELP, {}, nothing, async (instance, _, values, io) => {
  await instance.start({ signal: io.signal });
  return done(io, values, 'start', instance, (info) => `started ${named(info)}`);
});

const STOP_OPTIONS = { force: { type: 'boolean' }, timeout: { type: 'string' } } as const;

export const stop = onInstance('stop', 'halt a running instance (gracefully, or --force)', STOP_HELP, STOP_OPTIONS, stopOptions, async (instance, options, values, io) => {
  const { how } = await withProgress(io, `stopping ${named(instance)}`, () => instance.stop(options));
  return done(io, values, 'stop', instance, (info) => `stopped ${named(info)}${how === 'forced' ? ' by force' : ''}`, { how });
});

export const restart = onInstance('restart', 'stop an instance if it runs, and start it again', RESTART_HELP, STOP_OPTIONS, stopOptions, async (instance, options, values, io) => {
  const stopped = await withProgress(io, `restarting ${named(instance)}`, () => instance.restart(options));
  return done(io, values, 'restart', instance, (info) => `restarted ${named(info)}${stopped?.how === 'forced' ? ' (stopped by force)' : ''}`, { how: stopped?.how ?? null });
});

export const unload = onInstance('unload', 'free the loaded kernel of a stopped instance', UNLOAD_HELP, {}, nothing, async (instance, _, values, io) => {
  await instance.unload({ signal: io.signal });
  return done(io, values, 'unload', instance, (info) => `unloaded ${named(info)}`);
});

export const del = onInstance('delete', 'remove an instance; its resources go back to the pool', DELETE_HELP, { force: { type: 'boolean' } }, nothing, async (instance, _, values, io) => {
  await withProgress(io, `deleting ${named(instance)}`, () => instance.delete({ force: values.force === true, signal: io.signal }));
  const gone = { name: instance.name, id: instance.id };
  if (values.json) io.stdout.write(jsonDocument({ action: 'delete', instance: gone }));
  else io.stdout.write(`deleted ${named(gone)}\n`);
  return EXIT.ok;
});
