/**
 * mkctl daemon -c SPEC: applies a host spec and supervises its instances, as a systemd
 * Type=notify (or notify-reload) service (lib/daemon). Runs until SIGTERM or SIGINT.
 */
import { parseArgs } from 'node:util';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { HOST_OPTIONS, positionalArgs, withHost } from '../common';

const HELP = `usage: mkctl daemon -c SPEC [--prune] [--metrics ADDR [--metrics-public]] [options]

Applies the host spec SPEC (YAML or JSON, docs/spec.md), then keeps the instances it names as
it says, until SIGTERM: an instance that stops by itself (a panic) or hangs (with a health check)
is restarted after a backoff, preserved or left stopped, by its restart policy; one deleted or
unloaded behind the daemon's back is logged as drift and put right at the next reload.
Under systemd: examples/multikernel.service, docs/daemon.md.

sd_notify (to $NOTIFY_SOCKET, when set):
  READY=1                   once the spec is applied (also after a reload)
  STATUS=...                one line whenever it changes ("2/2 instances running",
                            "applying: 3 steps", "web restarting in 4 s (attempt 2/5)")
  WATCHDOG=1                every WATCHDOG_USEC/2 when WATCHDOG_USEC is set (and WATCHDOG_PID
                            is unset or this process), after the host answered a read
  RELOADING=1, MONOTONIC_USEC=...   on SIGHUP (Type=notify-reload, systemd 253+)
  STOPPING=1                on SIGTERM/SIGINT

signals:
  SIGHUP                    read SPEC again and apply it; an invalid spec keeps the old one
  SIGTERM, SIGINT           stop the instances whose spec says onDaemonStop: stop (gracefully,
                            by force after --stop-timeout), then exit 0

The log goes to stderr, one line per event, with the journald priority prefix (<3> error,
<4> warning, <5> notice, <6> info, <7> debug) and no timestamps (journald adds them).
Exit status: 0 after a clean stop, 2 when SPEC cannot be loaded at start, 1 when the host
cannot be opened (said in one <3> line).

options:
  -c, --config SPEC         the host spec file (required; -f SPEC too, as mkctl plan and apply)
  --prune                   delete instances the spec does not name (default: leave them)
  --metrics ADDR            serve Prometheus metrics on GET /metrics at HOST:PORT (loopback
                            only, e.g. 127.0.0.1:9464) or unix:/PATH
  --metrics-public          allow a --metrics address that is not a loopback one
  --stop-timeout SECONDS    how long a graceful halt at the stop may take (default 20)
  --simulate               act on the built-in simulated host (also MULTIKERNEL_BACKEND=simulated);
                            sd_notify still goes to the real $NOTIFY_SOCKET
  --state-dir DIR           the simulated host's state (default MULTIKERNEL_SIM_DIR, ...)
  --lock PATH               the overlay writers' lock (default /run/multikernel.lock)
  -h, --help                this text
`;

const { json: _json, ...HOST } = HOST_OPTIONS;

export const daemon: Command = {
  path: ['daemon'],
  summary: 'apply a host spec, then supervise its instances under systemd (Type=notify)',
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      options: {
        ...HOST,
        config: { type: 'string', short: 'c' },
        file: { type: 'string', short: 'f' },
        prune: { type: 'boolean' },
        metrics: { type: 'string' },
        'metrics-public': { type: 'boolean' },
        'stop-timeout': { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
    positionalArgs(positionals, []);
    if (values.config !== undefined && values.file !== undefined) throw new UsageError('-c and -f both name the spec: give one');
    const config = values.config ?? values.file;
    if (config === undefined) throw new UsageError('missing -c SPEC: the host spec to apply');
    const stopTimeout = values['stop-timeout'] ?? '20';
    if (!/^\d+(?:\.\d+)?$/.test(stopTimeout)) throw new UsageError(`--stop-timeout takes seconds, got ${JSON.stringify(stopTimeout)}`);
    if (values['metrics-public'] === true && values.metrics === undefined) throw new UsageError('--metrics-public goes with --metrics');
    const path = await import('node:path');
    const specPath = path.resolve(io.cwd, config);
    const { Daemon, journalLine } = await import('../../daemon/daemon');
    let address: import('../../daemon/metrics').MetricsAddress | undefined;
    if (values.metrics !== undefined) {
      const { parseMetricsAddress } = await import('../../daemon/metrics');
      try {
        address = parseMetricsAddress(values.metrics, values['metrics-public'] === true);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }
    const log = (priority: Parameters<typeof journalLine>[0], message: string) => io.stderr.write(journalLine(priority, message));
    // a host that cannot be opened (or a state directory that cannot be used) ends the daemon
    // with one line at error priority, as journald should file it; an interruption is no error
    return withHost(
      values,
      io,
      async ({ host }) => {
        let server: import('../../daemon/metrics').MetricsServer | undefined;
        let metrics: import('../../daemon/metrics').DaemonMetrics | undefined;
        if (address !== undefined) {
          const m = await import('../../daemon/metrics');
          metrics = new m.DaemonMetrics(host);
          server = await m.serveMetrics(metrics, address);
          log(6, `metrics: ${server.address} (GET /metrics)`);
        }
        const d = new Daemon({
          host,
          specPath,
          notify: (state) => host.system.notify(state),
          log,
          ...(metrics ? { metrics } : {}),
          prune: values.prune === true,
          env: io.env,
          stopTimeoutMs: Number(stopTimeout) * 1000,
        });
        const unlisten = io.onSignal?.('SIGHUP', () => d.reload());
        try {
          const code = await d.run(io.signal);
          return code === 0 ? EXIT.ok : EXIT.usage;
        } finally {
          unlisten?.();
          await server?.close();
        }
      },
      { simulated: { forwardNotify: true } },
    ).catch((err: unknown) => {
      if (io.signal.aborted) throw err;
      log(3, `cannot run: ${(err as Error).message}`);
      return EXIT.failure;
    });
  },
};
