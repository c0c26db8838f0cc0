/**
 * mkctl selftest: one instance through its whole life on this host (or on the built-in simulated
 * kernel), printing what the kernel showed at each step. The work is `runSelftest` in the
 * library; this file parses options and prints.
 */
import { parseArgs } from 'node:util';
import { parseMemoryMiB as parseMemory } from '../../units';
import { placeholderImage } from '../../image';
import { runSelftest, type SelftestOptions, type SelftestResult } from '../../selftest';
import { LinuxSystem } from '../../system/linux';
import { SimulatedSystem } from '../../system/simulated';
import type { System } from '../../system/system';
import { type CliIo, type Command, EXIT, UsageError } from '../command';

const HELP = `usage: mkctl selftest (--simulated | --kernel PATH) [options]

Takes one instance through its whole life and prints what the kernel shows after each step:
probe, mount, pool (a baseline, or a /resources overlay when a pool exists), create, verify the
granted resources, load, select the console, start, optionally exec through the kerf-init
agent, stop, unload, remove, and give back whatever the run added to the pool. A failure undoes
what the run did and exits 1.

where:
  --simulated          run on the built-in simulated multikernel kernel (in memory, or in
                       --state-dir, shared with other mkctl processes)
  --state-dir DIR      with --simulated: keep the simulated host's state in DIR
  --kernel PATH        on this host: the instance kernel (x86_64: ELF vmlinux; arm64: Image)

options:
  --initrd PATH        initramfs for the instance
  --cmdline TEXT       instance command line (default "console=mktty0 rdinit=/init panic=-1")
  --name NAME          instance name (default "selftest")
  --cpus N             pool CPUs for the instance (default 1)
  --memory SIZE        instance memory, e.g. 256M, 1G (default 256M)
  --exec               run "uname -a" in the instance through the kerf-init agent (vsock port
                       1023); the default with --simulated
  --no-exec            do not
  --boot-timeout SEC   how long to wait for console output after start (default 30)
  --lock PATH          the overlay writers' lock (default /run/multikernel.lock)
  --json               print the result as JSON
  -h, --help           this text
`;

const OPTIONS = {
  simulated: { type: 'boolean' },
  'state-dir': { type: 'string' },
  kernel: { type: 'string' },
  initrd: { type: 'string' },
  cmdline: { type: 'string' },
  name: { type: 'string' },
  cpus: { type: 'string' },
  memory: { type: 'string' },
  exec: { type: 'boolean' },
  'no-exec': { type: 'boolean' },
  'boot-timeout': { type: 'string' },
  lock: { type: 'string' },
  json: { type: 'boolean' },
} as const;

function wholeNumber(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`--${name} takes a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

function toJson(result: SelftestResult): string {
  return JSON.stringify(result, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

export const selftest: Command = {
  path: ['selftest'],
  summary: 'take one instance through its whole life and show what the kernel says',
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values: o, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    if (Boolean(o.simulated) === (o.kernel !== undefined)) throw new UsageError('give --simulated, or --kernel PATH for this host');
    if (o['state-dir'] !== undefined && !o.simulated) throw new UsageError('--state-dir goes with --simulated');
    if (o.exec && o['no-exec']) throw new UsageError('--exec and --no-exec exclude each other');
    let memoryBytes: bigint | undefined;
    try {
      memoryBytes = o.memory === undefined ? undefined : BigInt(parseMemory(o.memory)) << 20n;
    } catch (err) {
      throw new UsageError(`--memory: ${(err as Error).message}`);
    }
    const bootSeconds = wholeNumber('boot-timeout', o['boot-timeout']);
    const execArgv = !o['no-exec'] && (o.exec ?? o.simulated) ? ['uname', '-a'] : undefined;

    let system: System;
    let dispose = async (): Promise<void> => undefined;
    if (o.simulated) {
      const sim = new SimulatedSystem({ stateDir: o['state-dir'] });
      system = sim;
      dispose = () => sim.dispose();
    } else {
      system = new LinuxSystem();
    }
    const options: SelftestOptions = {
      // The simulated kernel is x86_64 unless told otherwise; it boots nothing, so a placeholder image will do.
      ...(o.kernel !== undefined ? { kernel: o.kernel } : { image: placeholderImage() }),
      initrd: o.initrd,
      cmdline: o.cmdline,
      name: o.name,
      cpus: wholeNumber('cpus', o.cpus),
      memoryBytes,
      exec: execArgv ?? false,
      lockPath: o.lock,
      bootTimeoutMs: bootSeconds === undefined ? undefined : bootSeconds * 1000,
      signal: io.signal,
      onStep: o.json ? undefined : (s) => io.stdout.write(`${s.step.padEnd(9)} ${s.detail} (${s.ms} ms)\n`),
    };
    try {
      const result = await runSelftest(system, options);
      if (o.json) {
        io.stdout.write(`${toJson(result)}\n`);
      } else {
        const log = result.console.trimEnd();
        if (log) io.stdout.write(`\nconsole of instance ${result.instance.id}:\n${log.replace(/^/gm, '  | ')}\n`);
        if (result.exec) io.stdout.write(`\nexec ${execArgv!.join(' ')}: exit ${result.exec.exitCode}\n${result.exec.stdout.trimEnd().replace(/^/gm, '  | ')}\n`);
        io.stdout.write(`\nselftest passed: instance "${result.instance.name}" (id ${result.instance.id}) went through its whole life\n`);
      }
      return EXIT.ok;
    } finally {
      await dispose();
    }
  },
};
