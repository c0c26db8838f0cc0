/**
 * The whole life of one instance, end to end, on any `System`: the sequence an operator runs to
 * prove a host works (docs/kernel-interface.md, "End to end"), as a thin user of the lifecycle
 * API (Host, Pool, Instance), which re-reads the kernel's state at every step. A failure undoes
 * what the run did (force-halt, unload, delete, give back what it pooled) before it is reported.
 *
 * On the simulated kernel this is the package's demonstration (`mkctl selftest --simulated`);
 * on a real multikernel host it is a smoke test (`mkctl selftest --kernel vmlinux`).
 */
import { drainConsole, type ConsoleStream } from './console';
import { MultikernelError } from './errors';
import { Host } from './host';
import type { Instance } from './instance';
import { DEFAULT_LOCK_PATH, MK_CONSOLE_DEVICE } from './kernfs';
import { probeMultikernelSupport } from './support';
import type { System } from './system/system';
import { formatBytes } from './units';

const MIB = 1024n * 1024n;

export interface SelftestOptions {
  /** path of the instance kernel image (x86_64: ELF vmlinux; arm64: Image) */
  kernel?: string;
  /** the image bytes instead of a path (e.g. `placeholderImage()` from lib/image on the simulated kernel) */
  image?: Uint8Array;
  initrd?: string;
  /** default "console=mktty0 rdinit=/init panic=-1" */
  cmdline?: string;
  /** instance name (default "selftest") */
  name?: string;
  /** how many pool CPUs the instance gets (default 1) */
  cpus?: number;
  /** instance memory (default 256 MiB) */
  memoryBytes?: bigint;
  /** when a pool must be created: its memory (default twice the instance memory) */
  poolMemoryBytes?: bigint;
  /** run this command in the instance through the kerf-init agent; false skips (default: skip) */
  exec?: string[] | false;
  lockPath?: string;
  /** how long to wait for the first console output after start (default 30000) */
  bootTimeoutMs?: number;
  signal?: AbortSignal;
  /** called after each step */
  onStep?: (step: SelftestStep) => void;
}

export interface SelftestStep {
  step: string;
  /** what the kernel showed, in one line */
  detail: string;
  ms: number;
}

export interface SelftestResult {
  instance: { name: string; id: number; cpus: number[]; memoryBytes: bigint };
  steps: SelftestStep[];
  /** console output captured from start to stop */
  console: string;
  exec?: { exitCode: number; stdout: string; stderr: string };
}

function usage(message: string): never {
  throw new MultikernelError('ERR_MK_INVALID_SPEC', message);
}

/** What a run put into the pool, so that exactly that goes back. */
interface PoolAddition {
  /** the run made the pool: tear it all down */
  created: boolean;
  cpus: number[];
  memory: bigint[];
}

export async function runSelftest(system: System, options: SelftestOptions = {}): Promise<SelftestResult> {
  const name = options.name ?? 'selftest';
  const cpuCount = options.cpus ?? 1;
  const memoryBytes = options.memoryBytes ?? 256n * MIB;
  const poolMemoryBytes = options.poolMemoryBytes ?? memoryBytes * 2n;
  const cmdline = options.cmdline ?? 'console=mktty0 rdinit=/init panic=-1';
  const bootTimeoutMs = options.bootTimeoutMs ?? 30_000;
  const lockPath = options.lockPath ?? DEFAULT_LOCK_PATH;
  const signal = options.signal;
  if (!Number.isInteger(cpuCount) || cpuCount < 1) usage(`cpus must be a positive integer, got ${String(options.cpus)}`);
  if ((options.kernel === undefined) === (options.image === undefined)) usage('give exactly one of kernel (a path) or image (bytes)');

  const steps: SelftestStep[] = [];
  const record = (label: string, detail: string, ms: number): void => {
    const s = { step: label, detail, ms };
    steps.push(s);
    options.onStep?.(s);
  };
  const step = async <T>(label: string, fn: () => Promise<T>, detail: (value: T) => string): Promise<T> => {
    signal?.throwIfAborted();
    const t0 = performance.now();
    const value = await fn();
    record(label, detail(value), Math.round(performance.now() - t0));
    return value;
  };

  // What this run changed, so a failure can undo exactly that.
  let host: Host | undefined;
  let added: PoolAddition | undefined;
  let instance: Instance | undefined;
  let tty: ConsoleStream | undefined;
  let consoleText = '';
  let result: SelftestResult;

  try {
    const report = await step('probe', () => probeMultikernelSupport(system), (r) => r.findings.join('; '));
    // Nothing that changes the kernel (not even mount) runs on a kernel without multikernel support.
    if (!report.supported) {
      throw new MultikernelError('ERR_MK_NO_SUPPORT', `this kernel has no multikernel support; probed: ${report.findings.join('; ')}`, { details: { probes: report } });
    }
    host = await step(
      'mount',
      () => Host.open({ system, lockPath, signal }),
      () => (report.mounted ? 'already mounted' : 'mounted /sys/fs/multikernel'),
    );
    const opened = host;

    const before = await opened.pool.snapshot();
    const missingCpus = Math.max(0, cpuCount - before.freeCpus.length);
    const needMemory = before.freeMemoryBytes < memoryBytes;
    if (missingCpus > 0 || needMemory) {
      await step(
        'pool',
        async () => {
          const memory = needMemory ? poolMemoryBytes : undefined;
          const after = before.exists
            ? await opened.pool.grow({ ...(missingCpus > 0 ? { cpus: missingCpus } : {}), ...(memory !== undefined ? { memory } : {}) }, { signal })
            : await opened.pool.init({ cpus: missingCpus, memory: poolMemoryBytes }, { signal });
          added = {
            created: !before.exists,
            cpus: after.cpus.map((c) => c.physicalId).filter((c) => !before.cpus.some((b) => b.physicalId === c)),
            memory: after.memory.map((m) => m.base).filter((base) => !before.memory.some((b) => b.base === base)),
          };
          return after;
        },
        (p) =>
          `${before.exists ? 'grown' : 'created'}: cpus ${p.cpus.map((c) => c.physicalId).join(',')}, memory ${p.memory.map((m) => `${formatBytes(m.size)} at 0x${m.base.toString(16)}`).join(', ')}`,
      );
    } else {
      record('pool', `reusing: ${before.freeCpus.length} of ${before.cpus.length} CPUs free`, 0);
    }

    instance = await step(
      'create',
      () => opened.createInstance({ name, cpus: cpuCount, memory: memoryBytes }, { signal }),
      (i) => `instance "${name}" id ${i.id}: ${cpuCount} CPU${cpuCount > 1 ? 's' : ''}, ${formatBytes(memoryBytes)} granted`,
    );
    const created = instance;

    const info = await step(
      'verify',
      async () => {
        const i = await created.info();
        if (i.status !== 'ready') throw new MultikernelError('ERR_MK_TX_FAILED', `instance "${name}" is "${i.status}", expected "ready"`);
        return i;
      },
      (i) => `ready: cpus ${i.cpus.join(',')}, ${formatBytes(i.memoryBytes)}${i.memory[0] ? ` at 0x${i.memory[0].base.toString(16)}` : ''}`,
    );

    await step(
      'load',
      async () => {
        await created.load(options.kernel ?? options.image!, { ...(options.initrd !== undefined ? { initrd: options.initrd } : {}), cmdline, signal });
        return (await created.info()).image;
      },
      (row) => (row ? `loaded: /proc/kimage ${row.type}, ${row.segments} segments, entry 0x${row.start.toString(16)}` : 'loaded'),
    );

    tty = await step(
      'console',
      () => created.console(),
      () => `${MK_CONSOLE_DEVICE} selected instance ${created.id} (before start, so the boot log is kept)`,
    );

    await step(
      'start',
      async () => {
        await created.start({ signal });
        consoleText += await drainConsole(tty!, bootTimeoutMs, 300);
        return consoleText;
      },
      (out) => `active; console: ${out.split('\n').filter(Boolean).length} lines of boot log`,
    );

    let execResult: SelftestResult['exec'];
    if (options.exec) {
      const argv = options.exec;
      execResult = await step(
        'exec',
        async () => {
          const r = await created.execFile(argv, { signal });
          return { exitCode: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
        },
        (r) => `${argv.join(' ')} -> exit ${r.exitCode}: ${r.stdout.trim().split('\n')[0]}`,
      );
    }

    await step(
      'stop',
      // A hung spawn does not answer: the graceful halt times out in the kernel, then it is forced.
      () => created.stop({ force: true }),
      (r) => `${r.how === 'graceful' ? 'graceful halt' : 'graceful halt timed out; forced halt'}: loaded`,
    );
    consoleText += await drainConsole(tty, 200, 200);
    tty.destroy();
    tty = undefined;

    await step('unload', () => created.unload({ signal }), () => 'ready');
    await step(
      'remove',
      async () => {
        await created.delete({ signal });
        instance = undefined;
      },
      () => 'instance gone',
    );

    if (added) {
      const give = added;
      await step(
        'teardown',
        async () => {
          await giveBack(opened, give);
          added = undefined;
        },
        () => (give.created ? 'the pool this run made went back to the host' : 'the CPUs and memory this run pooled went back to the host'),
      );
    }

    result = { instance: { name, id: created.id, cpus: info.cpus, memoryBytes }, steps, console: consoleText, exec: execResult };
  } catch (err) {
    const ignore = () => undefined;
    await instance?.delete({ force: true }).catch(ignore);
    if (host && added) await giveBack(host, added).catch(ignore);
    throw err;
  } finally {
    tty?.destroy();
  }
  return result;
}

/** Exactly what the run pooled goes back: the whole pool when the run made it. */
async function giveBack(host: Host, added: PoolAddition): Promise<void> {
  if (added.created) {
    await host.pool.teardown();
    return;
  }
  const chunks = (await host.pool.snapshot()).memory.filter((m) => added.memory.includes(m.base));
  await host.pool.shrink({ cpus: added.cpus.length > 0 ? { physical: added.cpus } : undefined, memory: chunks.length > 0 ? chunks.map((c) => ({ base: c.base })) : undefined });
}
