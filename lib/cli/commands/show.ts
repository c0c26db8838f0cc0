/**
 * mkctl show, dump and probe: one instance in detail, its device tree as the kernel renders it,
 * and whether its kernel answers. The library reads everything (Instance.info(), deviceTree(),
 * probe()); these print it.
 */
import { parseArgs } from 'node:util';
import type { Liveness } from '../../channels';
import type { InstanceInfo } from '../../instance';
import { formatCpuList } from '../../kernfs';
import { formatBytes } from '../../units';
import type { TreeDevice } from '../../model';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { HOST_OPTIONS, HOST_OPTIONS_HELP, jsonDocument, type Styles, styles, withHost } from '../common';

const SHOW_HELP = `usage: mkctl show NAME [--probe] [options]

One instance in detail, read from the kernel now: status, CPUs, memory regions, devices and the
loaded image (/proc/kimage). NAME is the instance's name, or its id.

options:
  --probe              also ask whether its kernel answers (up to 0.5 s; see mkctl probe)
${HOST_OPTIONS_HELP}
--json: {"version": 1, "instance": {"name", "id", "status", "cpus": [physical ids], "memoryBytes",
"memory": [{"base", "size"}], "devices": [{"type": "pci", "pciId", "vendorId", "deviceId", "path",
"alias"?} | {"type": "platform", "name", "deviceName"?, "acpiHid"?, "path"}], "image"?: {"id",
"type", "start", "segments", "mode", "cmdline"}, "liveness"?: "alive"|"hung"|"stopped"}};
byte counts and addresses are decimal strings.
`;

const DUMP_HELP = `usage: mkctl dump NAME [--dts] [options]

The instance's device tree as the kernel renders it (/sys/fs/multikernel/instances/NAME/device_tree):
the blob on stdout, or DTS source with --dts (dtc -I dtb -O dts prints the same tree). The blob
is binary and is not written to a terminal: redirect it (mkctl dump web > web.dtb) or use --dts.

options:
  --dts                print DTS source instead of the blob
${HOST_OPTIONS_HELP}
--json: {"version": 1, "name", "id", "bytes": size of the blob, "dtb": the blob in base64}, or
with --dts {"version": 1, "name", "id", "bytes", "dts": the source}
`;

/** probe's exit codes besides 0 (alive), 1 (could not ask) and 2 (usage): for scripts. */
export const PROBE_EXIT = { hung: 3, stopped: 4 } as const;

const PROBE_HELP = `usage: mkctl probe NAME [--attempts N] [--attempt-ms MS] [options]

Whether the instance's kernel runs: "alive" (a connect to a vsock port nobody uses is answered
with a reset), "hung" (no answer to any attempt) or "stopped" (its status is not active: halted,
crashed back to the pool, or never started).

exit status: 0 alive · 3 hung · 4 stopped · 1 could not ask (no such instance, a kernel error)
· 2 usage error. So \`mkctl probe web || mkctl restart web\` restarts an instance that is not alive.

options:
  --attempts N         connects tried before calling it hung (default 5)
  --attempt-ms MS      how long each connect waits (default 100)
${HOST_OPTIONS_HELP}
--json: {"version": 1, "name", "id", "liveness": "alive"|"hung"|"stopped"}
`;

/** The one positional argument NAME: a name, or digits for an id. */
export function instanceArg(positionals: string[], usage: string): string | number {
  if (positionals.length === 0) throw new UsageError(`which instance? ${usage}`);
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`);
  const name = positionals[0]!;
  return /^\d+$/.test(name) ? Number(name) : name;
}

/** A whole number of at least 1 given to an option. */
export function positiveInt(text: string, what: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${what} takes a whole number of at least 1, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** One line for a device: `pci 0000:00:04.0 [8086:100e] (eth0)`, `platform uart0 (serial, PNP0501)`. */
export function describeDevice(d: TreeDevice): string {
  if (d.type === 'pci') {
    const hex = (n: number): string => n.toString(16).padStart(4, '0');
    return `pci ${d.pciId} [${hex(d.vendorId)}:${hex(d.deviceId)}]${d.alias !== undefined ? ` (${d.alias})` : ''}`;
  }
  const what = [d.deviceName, d.acpiHid].filter((x) => x !== undefined);
  return `platform ${d.name}${what.length > 0 ? ` (${what.join(', ')})` : ''}`;
}

/** The text of `mkctl show`. */
export function showText(info: InstanceInfo, liveness: Liveness | undefined, s: Styles): string {
  const hex = (n: bigint): string => `0x${n.toString(16)}`;
  const lines: [string, string][] = [
    ['name', info.name],
    ['id', String(info.id)],
    ['status', info.status],
    ['cpus', info.cpus.length === 0 ? 'none' : `${formatCpuList(info.cpus)} (${info.cpus.length} CPU${info.cpus.length === 1 ? '' : 's'})`],
    ['memory', info.memoryBytes === 0n ? 'none' : formatBytes(info.memoryBytes)],
    ...info.memory.map((r): [string, string] => ['', `${hex(r.base)}-${hex(r.base + r.size - 1n)}  ${formatBytes(r.size)}`]),
    ['devices', info.devices.length === 0 ? 'none' : describeDevice(info.devices[0]!)],
    ...info.devices.slice(1).map((d): [string, string] => ['', describeDevice(d)]),
    [
      'image',
      info.image === undefined
        ? 'none'
        : `${info.image.type}, ${info.image.segments} segments at ${hex(info.image.start)}, mode ${info.image.mode}, cmdline ${JSON.stringify(info.image.cmdline)}`,
    ],
    ...(liveness !== undefined ? [['liveness', liveness] as [string, string]] : []),
  ];
  return lines.map(([k, v]) => `${k === '' ? ''.padEnd(10) : s.bold(k.padEnd(10))}${v}\n`).join('');
}

export const show: Command = {
  path: ['show'],
  summary: 'one instance in detail: status, CPUs, memory, devices, image',
  help: SHOW_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: { ...HOST_OPTIONS, probe: { type: 'boolean' } }, allowPositionals: true, strict: true });
    const which = instanceArg(positionals, 'usage: mkctl show NAME');
    return withHost(values, io, async ({ host }) => {
      const instance = await host.instance(which);
      const info = await instance.info();
      const liveness = values.probe === true ? await instance.probe({ signal: io.signal }) : undefined;
      if (values.json) io.stdout.write(jsonDocument({ instance: { ...info, ...(liveness !== undefined ? { liveness } : {}) } }));
      else io.stdout.write(showText(info, liveness, styles(io)));
      return EXIT.ok;
    });
  },
};

export const dump: Command = {
  path: ['dump'],
  summary: "an instance's device tree as the kernel renders it (blob, or DTS with --dts)",
  help: DUMP_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: { ...HOST_OPTIONS, dts: { type: 'boolean' } }, allowPositionals: true, strict: true });
    const which = instanceArg(positionals, 'usage: mkctl dump NAME [--dts]');
    if (values.dts !== true && values.json !== true && io.stdout.isTTY === true) {
      throw new UsageError('the device tree blob is binary and stdout is a terminal: redirect it (mkctl dump NAME > NAME.dtb) or print DTS with --dts');
    }
    return withHost(values, io, async ({ host }) => {
      const instance = await host.instance(which);
      const blob = await instance.deviceTree();
      let dts: string | undefined;
      if (values.dts === true) {
        const { decodeFdt, printDts } = await import('../../fdt');
        dts = printDts(decodeFdt(blob));
      }
      if (values.json) {
        io.stdout.write(jsonDocument({ name: instance.name, id: instance.id, bytes: blob.length, ...(dts !== undefined ? { dts } : { dtb: blob.toString('base64') }) }));
      } else {
        io.stdout.write(dts ?? blob);
      }
      return EXIT.ok;
    });
  },
};

export const probe: Command = {
  path: ['probe'],
  summary: "whether an instance's kernel answers: alive, hung or stopped (exit 0, 3, 4)",
  help: PROBE_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      options: { ...HOST_OPTIONS, attempts: { type: 'string' }, 'attempt-ms': { type: 'string' } },
      allowPositionals: true,
      strict: true,
    });
    const which = instanceArg(positionals, 'usage: mkctl probe NAME');
    const attempts = values.attempts === undefined ? undefined : positiveInt(values.attempts, '--attempts');
    const attemptMs = values['attempt-ms'] === undefined ? undefined : positiveInt(values['attempt-ms'], '--attempt-ms');
    return withHost(values, io, async ({ host }) => {
      const instance = await host.instance(which);
      const liveness = await instance.probe({ signal: io.signal, ...(attempts !== undefined ? { attempts } : {}), ...(attemptMs !== undefined ? { attemptMs } : {}) });
      if (values.json) io.stdout.write(jsonDocument({ name: instance.name, id: instance.id, liveness }));
      else io.stdout.write(`${instance.name} ${liveness}\n`);
      return liveness === 'alive' ? EXIT.ok : PROBE_EXIT[liveness];
    });
  },
};
