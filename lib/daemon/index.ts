/**
 * `multikernel/daemon`: the supervising daemon behind `mkctl daemon` (lib/daemon/daemon.ts), for
 * programs that run it in a process of their own making. Its metrics (prom-client) are in
 * lib/daemon/metrics.ts, loaded only by whoever wants them.
 */
export { DAEMON_EXIT, Daemon, PRIORITY, formatMs, journalLine, livenessOf } from './daemon';
export type { Clock, DaemonLog, DaemonMetricsSink, DaemonOptions, Priority, RestartReason } from './daemon';
export type { DaemonMetrics, MetricsAddress, MetricsServer } from './metrics';

/** The metrics module (prom-client and node:http), loaded when called: `(await loadMetrics()).DaemonMetrics`. */
export function loadMetrics(): Promise<typeof import('./metrics')> {
  return import('./metrics');
}
