/**
 * mkctl status and mkctl list: the host, its pool and its instances in one view, with what needs
 * attention (lib/report.ts does the work); list is the instance table alone.
 */
import { parseArgs } from 'node:util';
import { formatCpuList } from '../../kernfs';
import type { HostReport, InstanceReport } from '../../report';
import { formatBytes } from '../../units';
import { type CliIo, type Command, EXIT } from '../command';
import { HOST_OPTIONS, HOST_OPTIONS_HELP, type HostContext, jsonDocument, positionalArgs, styles, table, withHost } from '../common';

const STATUS_HELP = `usage: mkctl status [--probe] [options]

The host, its pool and its instances in one view, and what needs attention: an instance in the
kernel's failed state, an active one that does not answer (with --probe), a transaction left
failed, kerf's lock file left behind.

options:
  --probe              ask every active instance whether its kernel answers (up to 0.5 s each,
                       in parallel)
${HOST_OPTIONS_HELP}
--json: {"version": 1, "backend": {"kind", "stateDir"?}, "features": {...}, "pool": {...},
"instances": [{"name", "id", "status", "cpus", "memoryBytes", "memory", "devices", "image"?,
"liveness"?}], "transactions": [{"id", "status", "resources"}], "attention": [{"kind", "subject",
"message"}]}; byte counts are decimal strings.
`;

const LIST_HELP = `usage: mkctl list [options]

Every instance: name, id, status, CPUs (physical ids), memory.

${HOST_OPTIONS_HELP}
--json: {"version": 1, "instances": [{"name", "id", "status", "cpus", "memoryBytes"}]}
`;

function instanceRows(instances: readonly InstanceReport[], liveness: boolean): string[][] {
  return [
    ['NAME', 'ID', 'STATUS', 'CPUS', 'MEMORY', ...(liveness ? ['LIVENESS'] : [])],
    ...instances.map((i) => [
      i.name,
      String(i.id),
      i.status,
      i.cpus.length === 0 ? '-' : formatCpuList(i.cpus),
      i.memoryBytes === 0n ? '-' : formatBytes(i.memoryBytes),
      ...(liveness ? [i.liveness ?? '-'] : []),
    ]),
  ];
}

/** The text view of a report (exported for tests of what a simulated host never shows). */
export function printStatus(io: CliIo, ctx: Pick<HostContext, 'backend'>, r: HostReport, probe: boolean): void {
  const s = styles(io);
  const where = ctx.backend.kind === 'simulated' ? `simulated (${ctx.backend.stateDir})` : 'this kernel';
  const have = (['console', 'kimage', 'vsock'] as const).filter((f) => r.features[f]);
  io.stdout.write(`${s.bold('host')}      ${where}${have.length > 0 ? ` · ${have.join(', ')}` : ''}\n`);
  if (!r.pool.exists) {
    io.stdout.write(`${s.bold('pool')}      none (mkctl pool init)\n`);
  } else {
    const p = r.pool;
    io.stdout.write(
      `${s.bold('pool')}      ${p.cpus.length} CPUs (${p.freeCpus.length} free) · ${formatBytes(p.memoryBytes)} (${formatBytes(p.freeMemoryBytes)} free)` +
        `${p.devices.length > 0 ? ` · ${p.devices.length} devices free` : ''}\n`,
    );
  }
  if (r.instances.length === 0) io.stdout.write(`${s.bold('instances')} none\n`);
  else io.stdout.write(`\n${table(instanceRows(r.instances, probe))}`);
  if (r.attention.length > 0) {
    io.stdout.write(`\n${s.bold('attention')}\n`);
    for (const a of r.attention) io.stdout.write(`  ${s.yellow('!')} ${a.message}\n`);
  }
}

export const status: Command = {
  path: ['status'],
  summary: 'the host, its pool and its instances, and what needs attention',
  help: STATUS_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: { ...HOST_OPTIONS, probe: { type: 'boolean' } }, allowPositionals: true, strict: true });
    positionalArgs(positionals, []);
    return withHost(values, io, async (ctx) => {
      const { hostReport } = await import('../../report');
      const r = await hostReport(ctx.host, { probe: values.probe === true, signal: io.signal });
      if (values.json) io.stdout.write(jsonDocument({ backend: ctx.backend, ...r }));
      else printStatus(io, ctx, r, values.probe === true);
      return EXIT.ok;
    });
  },
};

export const list: Command = {
  path: ['list'],
  summary: 'the instances: name, id, status, CPUs, memory',
  help: LIST_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: HOST_OPTIONS, allowPositionals: true, strict: true });
    positionalArgs(positionals, []);
    return withHost(values, io, async ({ host }) => {
      const infos = await Promise.all((await host.instances()).map((i) => i.info()));
      if (values.json) {
        io.stdout.write(jsonDocument({ instances: infos.map(({ name, id, status, cpus, memoryBytes }) => ({ name, id, status, cpus, memoryBytes })) }));
      } else if (infos.length === 0) {
        io.stdout.write('no instances\n');
      } else {
        io.stdout.write(table(instanceRows(infos, false)));
      }
      return EXIT.ok;
    });
  },
};
