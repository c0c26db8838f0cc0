/**
 * The whole life of one instance, end to end, on any `System`: the sequence an operator runs to
 * prove a host works (docs/kernel-interface.md, "End to end"). Every step re-reads the kernel's
 * own state rather than trusting what it just wrote, and a failure undoes what the run did
 * (force-halt, unload, remove, tear the pool down) before it is reported.
 *
 * On the simulated kernel this is the package's demonstration (`mkctl selftest --simulated`);
 * on a real multikernel host it is a smoke test (`mkctl selftest --kernel vmlinux`).
 */
import { MultikernelError, isSystemError } from './errors';
import { execOverStream } from './exec/client';
import { AGENT_PORT } from './exec/protocol';
import { DEFAULT_LOCK_PATH, MK_CONSOLE_DEVICE, MK_DEVICE_TREE, MK_INSTANCES, PROC_CPUINFO, PROC_KIMAGE, instanceDir, parseCpuinfo, parseKimage } from './kernfs';
import { encodeBaseline, parseInstance, parsePool } from './model';
import { probeMultikernelSupport } from './support';
import type { DeviceHandle, System } from './system/system';
import { applyOverlay } from './transaction';
import {
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_UNLOAD,
  KEXEC_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
  MK_ID_MAX,
  MK_ID_MIN,
  kexecMkId,
} from './uapi';

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


async function text(system: System, path: string): Promise<string> {
  return (await system.readFile(path)).toString('utf8');
}

async function status(system: System, name: string): Promise<string | undefined> {
  try {
    return (await text(system, `${instanceDir(name)}/status`)).trim();
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/**
 * Re-reads the status and requires `want` (undefined: the instance is gone). Every transition
 * happens inside the system call that causes it (docs/kernel-interface.md, "Instance states"),
 * so one read after the call is the truth; there is nothing to poll for.
 */
async function expectStatus(system: System, name: string, want: string | undefined): Promise<void> {
  const now = await status(system, name);
  if (now !== want) {
    throw new MultikernelError('ERR_MK_TX_FAILED', `instance "${name}" is ${now === undefined ? 'gone' : `"${now}"`}, expected ${want === undefined ? 'it gone' : `"${want}"`}`);
  }
}

async function freeId(system: System): Promise<number> {
  const used = new Set<number>();
  for (const entry of await system.readdir(MK_INSTANCES)) {
    used.add(Number((await text(system, `${instanceDir(entry)}/id`)).trim()));
  }
  for (let id = MK_ID_MIN; id <= MK_ID_MAX; id++) if (!used.has(id)) return id;
  return usage('every instance id 1..2047 is taken');
}

/** Physical ids of online host CPUs that may join the pool: never the boot CPU. */
async function hostCpuCandidates(system: System): Promise<number[]> {
  const cpus = parseCpuinfo(await text(system, PROC_CPUINFO));
  if (cpus.some((c) => c.apicId === undefined)) {
    return usage(`${PROC_CPUINFO} shows no apicid: create the pool yourself with explicit physical CPU ids`);
  }
  return cpus.filter((c) => c.processor !== 0 && c.apicId !== 0).map((c) => c.apicId!);
}

/** Reads the console until `idleMs` passes without output, or `timeoutMs` with none at all. */
async function drainConsole(tty: DeviceHandle, timeoutMs: number, idleMs: number): Promise<string> {
  let out = '';
  let wait = timeoutMs;
  for (;;) {
    let chunk: Buffer;
    // A ref'd timer (AbortSignal.timeout's is not): waiting on the console must keep the process alive.
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), wait);
    try {
      chunk = await tty.read({ signal: timeout.signal });
    } catch (err) {
      if (timeout.signal.aborted) return out;
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (chunk.length === 0) return out;
    out += chunk.toString('utf8');
    wait = idleMs;
  }
}

async function connectAgent(system: System, id: number, signal?: AbortSignal) {
  // kerf-init trusts only reserved source ports: take the first free one from 1023 down.
  for (let port = 1023; port >= 512; port--) {
    try {
      return await system.vsockConnect({ cid: id, port: AGENT_PORT, localPort: port, signal });
    } catch (err) {
      if (!isSystemError(err, 'EADDRINUSE')) throw err;
    }
  }
  return usage('no free local vsock port in 512..1023 to reach the kerf-init agent');
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
  const step = async <T>(label: string, fn: () => Promise<T>, detail: (value: T) => string): Promise<T> => {
    signal?.throwIfAborted();
    const t0 = performance.now();
    const value = await fn();
    const s = { step: label, detail: detail(value), ms: Math.round(performance.now() - t0) };
    steps.push(s);
    options.onStep?.(s);
    return value;
  };

  // What this run changed, so a failure can undo exactly that.
  let added: PoolAddition | undefined;
  let created = false;
  let id = 0;
  let tty: DeviceHandle | undefined;
  let consoleText = '';
  const fds: number[] = [];
  let result: SelftestResult;

  try {
    const report = await step('probe', () => probeMultikernelSupport(system), (r) => r.findings.join('; '));
    // Nothing that changes the kernel (not even mount) runs on a kernel without multikernel support.
    if (!report.supported) {
      throw new MultikernelError('ERR_MK_NO_SUPPORT', `this kernel has no multikernel support; probed: ${report.findings.join('; ')}`, { details: { probes: report } });
    }
    await step(
      'mount',
      () => (report.mounted ? Promise.resolve() : system.mountMultikernel()),
      () => (report.mounted ? 'already mounted' : 'mounted /sys/fs/multikernel'),
    );

    const before = parsePool(await system.readFile(MK_DEVICE_TREE));
    const missingCpus = Math.max(0, cpuCount - before.cpusAvailable.length);
    const needMemory = before.memory.length === 0;
    let pool = before;
    if (missingCpus > 0 || needMemory) {
      pool = await step(
        'pool',
        async () => {
          // A pool without memory has no CPUs either (each pool CPU parks in pool memory:
          // kernel/multikernel/overlay.c), so CPUs are always missing here.
          const candidates = await hostCpuCandidates(system);
          if (candidates.length < missingCpus) usage(`the host has ${candidates.length} CPUs to spare besides the boot CPU; ${missingCpus} more are needed`);
          const cpus = candidates.slice(-missingCpus);
          const memory = needMemory ? [poolMemoryBytes] : [];
          if (!before.hasPool) {
            // The first baseline creates the pool; once one exists the kernel answers EBUSY and
            // the pool only grows through /resources overlays.
            await system.writeFile(MK_DEVICE_TREE, encodeBaseline({ cpus, memory: memory.map((size) => ({ size })) }));
          } else {
            const ops = [
              ...cpus.map((id) => ({ op: 'cpu-add' as const, target: 'pool' as const, id })),
              ...memory.map((size) => ({ op: 'memory-add' as const, target: 'pool' as const, size })),
            ];
            await applyOverlay(system, ops, { description: 'selftest pool', lockPath, signal });
          }
          const after = parsePool(await system.readFile(MK_DEVICE_TREE));
          // Without a pool, /resources lists the host's CPUs (dts.c), not pool members.
          const pooledBefore = before.hasPool ? before.cpus : [];
          added = {
            cpus: after.cpus.filter((c) => !pooledBefore.includes(c)),
            memory: after.memory.filter((m) => !before.memory.some((b) => b.base === m.base)),
          };
          return after;
        },
        (p) =>
          `${before.hasPool ? 'grown' : 'created'}: cpus ${p.cpus.join(',')}, memory ${p.memory.map((m) => `${m.size / MIB} MiB at 0x${m.base.toString(16)}`).join(', ')}`,
      );
    } else {
      steps.push({ step: 'pool', detail: `reusing: ${pool.cpusAvailable.length} of ${pool.cpus.length} CPUs free`, ms: 0 });
      options.onStep?.(steps.at(-1)!);
    }
    // Enough are free now; should a concurrent writer take some, 'verify' catches it.
    const cpus = pool.cpusAvailable.slice(-cpuCount);

    id = await freeId(system);
    await step(
      'create',
      async () => {
        const result = await applyOverlay(system, [{ op: 'instance-create', name, id, memoryBytes, cpus }], { description: `selftest ${name}`, lockPath, signal });
        created = true;
        return result;
      },
      (r) => `tx_${r.id} applied: instance "${name}" id ${id}`,
    );

    await step(
      'verify',
      async () => {
        await expectStatus(system, name, 'ready');
        const tree = parseInstance(await system.readFile(`${instanceDir(name)}/device_tree`));
        // CPU and device reservations that fail inside instance-create only warn: check what was granted.
        const missing = cpus.filter((c) => !tree.cpus.includes(c));
        if (tree.id !== id || missing.length > 0 || tree.memoryBytes < memoryBytes) {
          throw new MultikernelError('ERR_MK_TX_FAILED', `instance "${name}" was not granted what was asked: id ${tree.id}, cpus [${tree.cpus.join(',')}], ${tree.memoryBytes} bytes`);
        }
        return tree;
      },
      (tree) => `ready: cpus ${tree.cpus.join(',')}, ${tree.memoryBytes / MIB} MiB at 0x${tree.memoryBase!.toString(16)}`,
    );

    await step(
      'load',
      async () => {
        const kernelFd = options.kernel !== undefined ? await system.openImage(options.kernel) : await system.openImageBytes('selftest-kernel', options.image!);
        fds.push(kernelFd);
        const initrdFd = options.initrd !== undefined ? await system.openImage(options.initrd) : -1;
        if (initrdFd !== -1) fds.push(initrdFd);
        const flags = KEXEC_MULTIKERNEL | kexecMkId(id) | (initrdFd === -1 ? KEXEC_FILE_NO_INITRAMFS : 0);
        await system.kexecFileLoad({ kernelFd, initrdFd, cmdline, flags });
        await expectStatus(system, name, 'loaded');
        return parseKimage(await text(system, PROC_KIMAGE).catch(() => '')).find((r) => r.id === id);
      },
      (row) => (row ? `loaded: /proc/kimage ${row.type}, ${row.segments} segments, entry 0x${row.start.toString(16)}` : 'loaded'),
    );

    tty = await step(
      'console',
      async () => {
        const handle = await system.openDevice(MK_CONSOLE_DEVICE);
        try {
          await handle.write(Buffer.from(`${id}\n`));
        } catch (err) {
          await handle.close();
          throw err;
        }
        return handle;
      },
      () => `${MK_CONSOLE_DEVICE} selected instance ${id} (before start, so the boot log is kept)`,
    );

    await step(
      'start',
      async () => {
        await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL, id);
        await expectStatus(system, name, 'active');
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
          const stream = await connectAgent(system, id, signal);
          try {
            const r = await execOverStream(stream, { argv, signal });
            return { exitCode: r.exitCode, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
          } finally {
            stream.destroy();
          }
        },
        (r) => `${argv.join(' ')} -> exit ${r.exitCode}: ${r.stdout.trim().split('\n')[0]}`,
      );
    }

    await step(
      'stop',
      async () => {
        let how = 'graceful halt';
        try {
          await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, id);
        } catch (err) {
          // A hung spawn does not answer: the graceful halt times out.
          if (!isSystemError(err, 'ETIMEDOUT')) throw err;
          await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, id);
          how = 'graceful halt timed out; forced halt';
        }
        await expectStatus(system, name, 'loaded');
        return how;
      },
      (how) => `${how}: loaded`,
    );
    consoleText += await drainConsole(tty, 200, 200);
    await tty.close();
    tty = undefined;

    await step(
      'unload',
      async () => {
        await system.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(id) });
        await expectStatus(system, name, 'ready');
      },
      () => 'ready',
    );

    await step(
      'remove',
      async () => {
        const r = await applyOverlay(system, [{ op: 'instance-remove', name }], { description: `selftest ${name}`, lockPath, signal });
        created = false;
        await expectStatus(system, name, undefined);
        return r;
      },
      (r) => `tx_${r.id} applied: instance gone`,
    );

    if (added) {
      const give = added;
      await step(
        'teardown',
        async () => {
          const r = await applyOverlay(system, teardownOps(give), { description: 'selftest pool', lockPath, signal });
          added = undefined;
          return r;
        },
        (r) => `tx_${r.id} applied: the CPUs and memory this run pooled went back to the host`,
      );
    }

    result = { instance: { name, id, cpus, memoryBytes }, steps, console: consoleText, exec: execResult };
  } catch (err) {
    await undo(system, { name, id, created, added, lockPath });
    throw err;
  } finally {
    await tty?.close();
    await Promise.allSettled(fds.map((fd) => system.closeImage(fd)));
  }
  return result;
}

/** What a run put into the pool, so that exactly that goes back. */
interface PoolAddition {
  cpus: number[];
  memory: { base: bigint; size: bigint }[];
}

function teardownOps(added: PoolAddition) {
  return [
    ...added.cpus.map((cpu) => ({ op: 'cpu-remove' as const, target: 'pool' as const, id: cpu })),
    ...added.memory.map((m) => ({ op: 'memory-remove' as const, target: 'pool' as const, base: m.base, size: m.size })),
  ];
}

/** Best-effort undo after a failure, driven by what the kernel shows now, not by what we think. */
async function undo(
  system: System,
  run: { name: string; id: number; created: boolean; added: PoolAddition | undefined; lockPath: string },
): Promise<void> {
  const ignore = () => undefined;
  if (run.created) {
    const st = await status(system, run.name).catch(ignore);
    if (st === 'active') await system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, run.id).catch(ignore);
    if (st === 'active' || st === 'loaded') {
      await system.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(run.id) }).catch(ignore);
    }
    if ((await status(system, run.name).catch(ignore)) !== undefined) {
      await applyOverlay(system, [{ op: 'instance-remove', name: run.name }], { description: `selftest ${run.name} undo`, lockPath: run.lockPath }).catch(ignore);
    }
  }
  if (run.added) {
    await applyOverlay(system, teardownOps(run.added), { description: 'selftest pool undo', lockPath: run.lockPath }).catch(ignore);
  }
}
