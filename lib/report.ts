/**
 * One view of a host for operators (`mkctl status`, a daemon's health endpoint): the kernel's
 * features, the pool, every instance with what it holds, and what needs attention: instances in
 * the kernel's `failed` state, active ones that do not answer the liveness probe, transactions
 * left `failed` (their partial effects stay until an rmdir succeeds), and kerf's lock file left
 * behind. Everything is read now; nothing is cached.
 */
import type { Host, HostFeatures } from './host';
import type { InstanceInfo } from './instance';
import { KERF_LOCK_PATHS, MK_OVERLAYS, txDir, txIds } from './kernfs';
import type { PoolSnapshot } from './pool';

export interface InstanceReport extends InstanceInfo {
  /** with `probe`: the answer of the liveness probe for an active instance */
  liveness?: 'alive' | 'hung';
}

export interface Attention {
  /** what kind of trouble */
  kind: 'instance-failed' | 'instance-hung' | 'transaction-failed' | 'kerf-lock';
  /** one line: what is wrong and what to do */
  message: string;
  /** the instance, transaction id or lock path it is about */
  subject: string;
}

export interface HostReport {
  features: HostFeatures;
  pool: PoolSnapshot;
  instances: InstanceReport[];
  /** transactions the kernel keeps, with their status and tag */
  transactions: { id: number; status: string; resources: string }[];
  attention: Attention[];
}

export interface ReportOptions {
  /** probe every active instance's liveness (up to 5 x 100 ms each, in parallel; default false) */
  probe?: boolean;
  /** kerf's lock file older than this is reported, ms (default 60000: kerf holds it for one command) */
  kerfLockAgeMs?: number;
  signal?: AbortSignal;
}

async function text(host: Host, path: string): Promise<string | undefined> {
  return host.system.readFile(path).then(
    (b) => b.toString('utf8').trim(),
    () => undefined,
  );
}

export async function hostReport(host: Host, options: ReportOptions = {}): Promise<HostReport> {
  const kerfLockAgeMs = options.kerfLockAgeMs ?? 60_000;
  const pool = await host.pool.snapshot();
  const attention: Attention[] = [];
  const instances: InstanceReport[] = [];
  for (const instance of await host.instances()) {
    options.signal?.throwIfAborted();
    const info: InstanceReport = await instance.info();
    if (info.status === 'failed') {
      attention.push({
        kind: 'instance-failed',
        subject: info.name,
        message: `instance "${info.name}" is in the kernel's failed state (its CPUs could not be settled after a halt): force-stop it (mkctl stop --force ${info.name}) or delete it`,
      });
    }
    instances.push(info);
  }
  if (options.probe === true) {
    await Promise.all(
      instances
        .filter((i) => i.status === 'active')
        .map(async (info) => {
          const instance = await host.instance(info.id);
          const liveness = await instance.probe({ ...(options.signal ? { signal: options.signal } : {}) });
          if (liveness === 'stopped') return;
          info.liveness = liveness;
          if (liveness === 'hung') {
            attention.push({
              kind: 'instance-hung',
              subject: info.name,
              message: `instance "${info.name}" is active but its kernel answers nothing: it hangs (or is still booting); stop it with --force`,
            });
          }
        }),
    );
  }
  const transactions: HostReport['transactions'] = [];
  const listed = await host.system.readdir(MK_OVERLAYS).catch(() => [] as string[]);
  for (const id of txIds(listed)) {
    const status = (await text(host, `${txDir(id)}/status`)) ?? 'unknown';
    const resources = (await text(host, `${txDir(id)}/resources`)) ?? '';
    transactions.push({ id, status, resources });
    if (status === 'failed') {
      attention.push({
        kind: 'transaction-failed',
        subject: `tx_${id}`,
        message: `transaction ${id}${resources ? ` (${resources})` : ''} failed and its partial effects may remain: see dmesg, then remove it (rmdir ${txDir(id)}) to undo them`,
      });
    }
  }
  for (const path of KERF_LOCK_PATHS) {
    const stat = await host.system.stat(path).catch(() => undefined);
    if (stat === undefined) continue;
    const age = Date.now() - stat.mtimeMs;
    if (age >= kerfLockAgeMs) {
      attention.push({
        kind: 'kerf-lock',
        subject: path,
        message: `kerf's lock ${path} has existed for ${Math.round(age / 1000)} s: a kerf command still runs, or one that was killed left it; if no kerf runs (pgrep -f kerf), remove it (rm ${path})`,
      });
    }
  }
  return { features: host.features, pool, instances, transactions, attention };
}
