/**
 * mkctl demo: the whole story on a fresh simulated host, in memory (nothing on this machine
 * changes, no state directory is touched): a pool, two instances, load, start with the boot log,
 * a command run inside one, a crash of the other seen by a watcher, stop, unload, delete,
 * teardown. Every step is a call of the public API (Host, Pool, Instance, host.watch()); on a
 * terminal the steps are paced so they can be read.
 */
import { parseArgs } from 'node:util';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { styles } from '../common';

const HELP = `usage: mkctl demo [--fast]

The whole story on a fresh simulated multikernel host, in memory: a pool, two instances, load,
start with the boot log, a command run inside one, a crash of the other seen as an event,
stop, unload, delete, teardown. Nothing on this machine changes. Every step is one call of the
public API; the source is lib/cli/commands/demo.ts.

options:
  --fast               no pauses between steps (the default when stdout is not a terminal)
  -h, --help           this text
`;

export const demo: Command = {
  path: ['demo'],
  summary: 'the whole story on a fresh simulated host, in memory',
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: { fast: { type: 'boolean' } }, allowPositionals: true, strict: true });
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    const [{ Host }, { SimulatedSystem, placeholderImage }, { drainConsole }, { formatCpuList }, { formatBytes }] = await Promise.all([
      import('../../host'),
      import('../../simulated'),
      import('../../console'),
      import('../../kernfs'),
      import('../../units'),
    ]);
    const s = styles(io);
    const pace = values.fast !== true && io.stdout.isTTY === true ? 700 : 0;
    const signal = io.signal;
    const say = async (step: string, text: string): Promise<void> => {
      signal.throwIfAborted();
      io.stdout.write(`${s.bold(step.padEnd(8))} ${text}\n`);
      if (pace > 0) await new Promise((r) => setTimeout(r, pace));
    };
    const indent = (text: string): string => text.trimEnd().replace(/^/gm, `         ${s.dim('|')} `);

    const system = new SimulatedSystem();
    const lockPath = `/run/mkctl-demo-${process.pid}.lock`;
    try {
      io.stdout.write(`${s.bold('mkctl demo')}: a fresh simulated multikernel host, in memory; nothing on this machine changes\n\n`);
      const host = await Host.open({ system, lockPath, signal });
      const topo = await host.topology();
      await say('host', `${topo.cpus.length} CPUs on ${topo.nodes.length} NUMA nodes (the simulated kernel's default machine)`);

      const watcher = host.watch({ signal });
      await watcher.ready;
      const events: string[] = [];
      watcher.on('event', (e: import('../../watch').WatchEvent) => {
        if (e.type === 'status') events.push(`${e.name} ${e.from} -> ${e.to} (${e.cause})`);
      });
      await say('watch', `host.watch(): woken by the kernel log (${watcher.mode}), it reports every change and its cause`);

      const pool = await host.pool.init({ cpus: 4, memory: '2G' }, { signal });
      await say('pool', `init: CPUs ${formatCpuList(pool.cpus.map((c) => c.physicalId))} (physical ids), ${formatBytes(pool.memoryBytes)}, taken from the host by one baseline`);

      const web = await host.createInstance({ name: 'web', cpus: 2, memory: '512M' }, { signal });
      const db = await host.createInstance({ name: 'db', cpus: 1, memory: '256M' }, { signal });
      const [wi, di] = [await web.info(), await db.info()];
      await say('create', `web (id ${wi.id}): CPUs ${formatCpuList(wi.cpus)}, ${formatBytes(wi.memoryBytes)}; db (id ${di.id}): CPU ${formatCpuList(di.cpus)}, ${formatBytes(di.memoryBytes)}; each one overlay transaction`);

      await web.load(placeholderImage(), { signal });
      await db.load(placeholderImage(), { signal });
      await say('load', 'web and db: kexec_file_load of an image (the simulated kernel boots none: a placeholder will do)');

      const tty = await web.start({ console: true, signal });
      const bootLog = await drainConsole(tty, 5000, 300);
      tty.destroy();
      await say('start', `web, with its console selected first, so the boot log is kept:\n${indent(bootLog.split('\n').slice(0, 6).join('\n'))}`);
      await db.start({ signal });
      await say('start', 'db');

      const uname = await web.execFile(['uname', '-a'], { signal });
      await say('exec', `web: uname -a, through the kerf-init agent on vsock port 1023: exit ${uname.code}\n${indent(uname.stdout.toString())}`);

      const crashed = new Promise<void>((resolve) => watcher.on('event', (e: import('../../watch').WatchEvent) => e.type === 'status' && e.name === 'db' && e.to === 'loaded' && resolve()));
      await system.panic(db.id);
      await crashed;
      await say('crash', `db panics (the simulator's kernel does it): the watcher saw "${events.at(-1)}"`);
      const probe = await db.probe({ signal });
      await say('probe', `db: ${probe}; web: ${await web.probe({ signal })}`);

      const stopped = await web.stop({ signal });
      await say('stop', `web: ${stopped.how} halt, its CPUs park in the pool`);
      await web.unload({ signal });
      await db.unload({ signal });
      await say('unload', 'web and db');
      await web.delete({ signal });
      await db.delete({ signal });
      await say('delete', 'web and db: their CPUs and memory return to the pool');
      await host.pool.teardown({ signal });
      await say('pool', 'teardown: everything back to the host');
      // the last events arrive with the kernel log: wait for the reading they woke
      await new Promise((r) => setTimeout(r, 100));
      watcher.close();
      io.stdout.write(`\n${s.bold('events')}   what host.watch() reported:\n${events.map((e) => `         ${e}`).join('\n')}\n`);
      io.stdout.write(`\n${s.green('done')}: the same calls run on a real multikernel host (Host.open() with no system)\n`);
      return EXIT.ok;
    } finally {
      await system.dispose();
    }
  },
};
