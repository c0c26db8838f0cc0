/**
 * mkctl watch: the host's events (lib/watch.ts) as they happen, one line each or one JSON object
 * per line, until Ctrl-C.
 */
import { parseArgs } from 'node:util';
import type { WatchEvent } from '../../watch';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { HOST_OPTIONS, HOST_OPTIONS_HELP, JSON_VERSION, withHost } from '../common';

const WATCH_HELP = `usage: mkctl watch [--liveness] [options]

The host's events as they happen, one line each, until Ctrl-C (exit status 130):

  12:00:01.123 added web id 1 ready
  12:00:02.456 status web ready->loaded requested
  12:00:09.789 status web active->loaded crashed
  12:00:10.000 removed web id 1
  12:00:10.001 pool changed
  12:00:10.002 transaction 7 applied "instance web"
  12:00:11.000 hung web            (with --liveness)
  12:00:12.000 responsive web      (with --liveness)

A status change's cause is "requested" (asked through this process: never, for mkctl watch),
"crashed" (active -> loaded that nobody asked for: a panic, a poweroff inside) or "external"
(another tool). Times are local. "watching ..." on stderr says when the first reading is taken.

options:
  --liveness           probe active instances every second and report hung and responsive ones
${HOST_OPTIONS_HELP}
--json: JSON lines, one object per event: {"version": 1, "time": ISO 8601, "type":
"instance-added", "name", "id", "status"} · {..., "type": "instance-removed", "name", "id"} ·
{..., "type": "status", "name", "id", "from", "to", "cause"} · {..., "type": "pool-changed"} ·
{..., "type": "transaction", "id", "status": "applied"|"failed", "resources"} · {..., "type":
"hung"|"responsive", "name", "id"}
`;

function two(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** One event as a line of text, at local time `at`. */
export function eventLine(event: WatchEvent, at: Date): string {
  const time = `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}.${two(at.getMilliseconds(), 3)}`;
  const what = (() => {
    switch (event.type) {
      case 'instance-added':
        return `added ${event.name} id ${event.id} ${event.status}`;
      case 'instance-removed':
        return `removed ${event.name} id ${event.id}`;
      case 'status':
        return `status ${event.name} ${event.from}->${event.to} ${event.cause}`;
      case 'pool-changed':
        return 'pool changed';
      case 'transaction':
        return `transaction ${event.id} ${event.status} ${JSON.stringify(event.resources)}`;
      default:
        return `${event.type} ${event.name}`;
    }
  })();
  return `${time} ${what}\n`;
}

/** One event as a JSON line. */
export function eventJson(event: WatchEvent, at: Date): string {
  return `${JSON.stringify({ version: JSON_VERSION, time: at.toISOString(), ...event })}\n`;
}

export const watch: Command = {
  path: ['watch'],
  summary: 'the host events as they happen (lines or JSON lines), until Ctrl-C',
  help: WATCH_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: { ...HOST_OPTIONS, liveness: { type: 'boolean' } }, allowPositionals: true, strict: true });
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    return withHost(values, io, async ({ host }) => {
      const watcher = host.watch({ signal: io.signal, liveness: values.liveness === true });
      void watcher.ready.then(() => io.stderr.write('watching the host (Ctrl-C stops)\n'));
      const print = values.json === true ? eventJson : eventLine;
      for await (const event of watcher) io.stdout.write(print(event, new Date()));
      // the watcher ends only when the signal closes it: Ctrl-C or SIGTERM
      return EXIT.interrupted;
    });
  },
};
