/**
 * The daemon's Prometheus metrics (opt-in: `mkctl daemon --metrics ADDR`). prom-client is the
 * maintained Prometheus client for Node; this module is the only one that loads it, and the
 * command imports this module only when --metrics is given (prom-client costs start-up time).
 * It gets a Registry of its own, without prom-client's default process metrics: those sample
 * /proc, the heap and an event-loop-delay histogram at every scrape, and node_exporter and
 * systemd's own accounting already see the process.
 *
 * Statuses and the pool are read from the host when scraped (a scrape is the one moment they are
 * wanted: nothing is polled); counters and the probe histogram are fed by the daemon.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Host } from '../host';
import type { InstanceStatus } from '../instance';
import type { PlanStep } from '../spec/types';
import type { ProbeReport } from '../watch';
import type { DaemonMetricsSink, RestartReason } from './daemon';

const STATUSES: readonly InstanceStatus[] = ['empty', 'ready', 'loaded', 'active', 'failed'];

export class DaemonMetrics implements DaemonMetricsSink {
  readonly registry: import('prom-client').Registry;
  readonly #restarts: import('prom-client').Counter<'instance' | 'reason'>;
  readonly #gaveUp: import('prom-client').Counter<'instance'>;
  readonly #probe: import('prom-client').Histogram<never>;
  readonly #txFailures: import('prom-client').Counter<never>;
  readonly #steps: import('prom-client').Counter<'action' | 'result'>;

  constructor(host: Host) {
    const prom = require('prom-client') as typeof import('prom-client');
    const registry = new prom.Registry();
    this.registry = registry;
    const registers = [registry];
    new prom.Gauge({
      name: 'multikernel_instance_status',
      help: 'The status of each instance: 1 for the one it has, 0 for the others (read when scraped).',
      labelNames: ['instance', 'status'],
      registers,
      async collect() {
        this.reset();
        for (const instance of await host.instances()) {
          const now = await instance.status().catch(() => undefined);
          for (const status of STATUSES) this.set({ instance: instance.name, status }, now === status ? 1 : 0);
        }
      },
    });
    this.#restarts = new prom.Counter({
      name: 'multikernel_instance_restarts_total',
      help: 'Restarts the daemon made, by instance and reason (crashed, external, hung, failed-start).',
      labelNames: ['instance', 'reason'],
      registers,
    });
    this.#gaveUp = new prom.Counter({
      name: 'multikernel_instance_restart_limit_total',
      help: 'Times the daemon gave up restarting an instance (its restart limit was reached).',
      labelNames: ['instance'],
      registers,
    });
    this.#probe = new prom.Histogram({
      name: 'multikernel_probe_latency_seconds',
      help: 'How long a liveness probe of a running instance took to be answered, or to count it as hung.',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.#txFailures = new prom.Counter({
      name: 'multikernel_transaction_failures_total',
      help: 'Overlay transactions the kernel failed, seen while the daemon ran (any writer).',
      registers,
    });
    this.#steps = new prom.Counter({
      name: 'multikernel_apply_steps_total',
      help: 'Steps the daemon applied, by action and result (ok, failed).',
      labelNames: ['action', 'result'],
      registers,
    });
    new prom.Gauge({
      name: 'multikernel_pool_cpus',
      help: 'The CPUs of the pool: free, and used by instances (read when scraped).',
      labelNames: ['state'],
      registers,
      async collect() {
        const p = await host.pool.snapshot();
        this.set({ state: 'free' }, p.freeCpus.length);
        this.set({ state: 'used' }, p.cpus.length - p.freeCpus.length);
      },
    });
    new prom.Gauge({
      name: 'multikernel_pool_memory_bytes',
      help: 'The memory of the pool: free, and used by instances (read when scraped).',
      labelNames: ['state'],
      registers,
      async collect() {
        const p = await host.pool.snapshot();
        this.set({ state: 'free' }, Number(p.freeMemoryBytes));
        this.set({ state: 'used' }, Number(p.memoryBytes - p.freeMemoryBytes));
      },
    });
  }

  restart(instance: string, reason: RestartReason): void {
    this.#restarts.inc({ instance, reason });
  }

  gaveUp(instance: string): void {
    this.#gaveUp.inc({ instance });
  }

  probe(report: ProbeReport): void {
    this.#probe.observe(report.durationMs / 1000);
  }

  transactionFailed(): void {
    this.#txFailures.inc();
  }

  applyStep(step: PlanStep, failed: boolean): void {
    this.#steps.inc({ action: step.action, result: failed ? 'failed' : 'ok' });
  }

  /** The metrics in Prometheus text format, and its content type. */
  async render(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }
}

export type MetricsAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(?:\.\d{1,3}){3}$/.test(host);
}

/**
 * `host:port` (`[::1]:9464` for IPv6) or `unix:/path`. A TCP address must be a loopback one
 * unless `allowPublic` (the metrics name the host's instances: not for every network by default).
 */
export function parseMetricsAddress(text: string, allowPublic = false): MetricsAddress {
  if (text.startsWith('unix:')) {
    const p = text.slice('unix:'.length);
    if (!p.startsWith('/')) throw new RangeError(`--metrics unix:PATH takes an absolute path, got ${JSON.stringify(text)}`);
    return { kind: 'unix', path: p };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (m === null || port > 65535) throw new RangeError(`--metrics takes HOST:PORT (e.g. 127.0.0.1:9464) or unix:/PATH, got ${JSON.stringify(text)}`);
  const host = (m[1] ?? m[2])!;
  if (!allowPublic && !isLoopback(host)) {
    throw new RangeError(`--metrics ${text} is not a loopback address: the metrics name this host's instances; add --metrics-public to serve them there anyway`);
  }
  return { kind: 'tcp', host, port };
}

export interface MetricsServer {
  /** where it listens: "127.0.0.1:9464", "[::1]:9464" or "unix:/run/multikernel/metrics.sock" */
  address: string;
  close(): Promise<void>;
}

/** Serves GET /metrics (and nothing else) with node:http at `address`. */
export async function serveMetrics(metrics: DaemonMetrics, address: MetricsAddress): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://metrics');
    if (url.pathname !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET' }).end('only GET\n');
      return;
    }
    metrics.render().then(
      ({ contentType, text }) => res.writeHead(200, { 'content-type': contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`),
    );
  });
  if (address.kind === 'unix') {
    // a socket left by an earlier run of the daemon (the path is the daemon's): listen() would fail EADDRINUSE
    if (fs.lstatSync(address.path, { throwIfNoEntry: false })?.isSocket()) fs.unlinkSync(address.path);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (address.kind === 'unix') server.listen(address.path, resolve);
    else server.listen(address.port, address.host, resolve);
  });
  const bound = server.address() as AddressInfo | string;
  const where = typeof bound === 'string' ? `unix:${bound}` : bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
  return {
    address: where,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
