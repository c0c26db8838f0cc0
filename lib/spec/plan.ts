/**
 * plan(): what apply would change to make the live host match a HostSpec (docs/spec-apply.md).
 *
 * Everything is read from the kernel now (the pool, every instance, /proc/kimage, the
 * transactions): nothing is remembered between runs, so a change made behind the spec's back,
 * a half-finished apply killed at any point, or an instance made by kerf is seen as it is.
 *
 * A loaded image is known to the kernel only by its /proc/kimage row, whose last field is the
 * command line. So apply loads the command line of the spec with a tag appended,
 * ` multikernel.spec=<16 hex>`: the first 16 hex digits of a SHA-256 over the kernel file, the
 * initrd file (or nothing) and the spec's command line. A dotted parameter names a module
 * parameter, which the guest kernel ignores when no such module exists. Comparing the live command
 * line with the spec's command line plus the tag tells whether the loaded image is the spec's.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { MultikernelError } from '../errors';
import type { Host } from '../host';
import { ACTIVE_MEMORY_ALIGN, type Instance, type InstanceInfo, type InstanceUpdate } from '../instance';
import { formatCpuList } from '../kernfs';
import { pciIds } from '../readback';
import { hostReport, type HostReport } from '../report';
import { wholePieces, type CpuRequest } from '../select';
import { LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE } from '../uapi';
import { formatBytes } from '../units';
import type { Drift, HostSpec, InstanceSpecEntry, Plan, PlanStep, SpecCpus, SpecIssue } from './types';

/** The kernel parameter apply appends to the command line it loads. */
export const SPEC_TAG_PARAM = 'multikernel.spec';

/** How long a stop by apply gives the graceful halt before it forces one, ms. */
export const APPLY_STOP_GRACE_MS = 10_000;

export interface PlanOptions {
  /** plan the deletion of instances the spec does not name (default false) */
  prune?: boolean;
  signal?: AbortSignal;
}

/** A step with what runs it; apply runs these, plan() shows the steps. */
export interface PlannedStep {
  step: PlanStep;
  run(): Promise<void>;
}

export interface ComputedPlan {
  plan: Plan;
  planned: PlannedStep[];
}

/**
 * The tag of an image: the first 16 hex digits of SHA-256 over the SHA-256 of each part, one per
 * line (kernel, initrd or "-", command line), so no two different triples hash alike. The files
 * are read as streams.
 */
export async function imageTag(kernel: string, initrd: string | undefined, cmdline: string): Promise<string> {
  const fileHash = async (path: string): Promise<string> => {
    const hash = createHash('sha256');
    await pipeline(fs.createReadStream(path), hash);
    return hash.digest('hex');
  };
  const parts = [await fileHash(kernel), initrd === undefined ? '-' : await fileHash(initrd), createHash('sha256').update(cmdline).digest('hex')];
  return createHash('sha256').update(`multikernel-spec-image/1\n${parts.join('\n')}\n`).digest('hex').slice(0, 16);
}

/** The command line apply loads: the spec's, then the tag. */
export function taggedCmdline(cmdline: string, tag: string): string {
  const param = `${SPEC_TAG_PARAM}=${tag}`;
  return cmdline === '' ? param : `${cmdline} ${param}`;
}

/** Splits a live command line into the text before the tag and the tag (undefined: no tag at its end). */
export function splitTag(cmdline: string): { text: string; tag?: string } {
  const m = new RegExp(`(?:^| )${SPEC_TAG_PARAM.replace('.', '\\.')}=([0-9a-f]{16})$`).exec(cmdline);
  return m === null ? { text: cmdline } : { text: cmdline.slice(0, m.index), tag: m[1]! };
}

function describeCpus(cpus: SpecCpus): string {
  if ('count' in cpus) return `${cpus.count} CPU${cpus.count === 1 ? '' : 's'}`;
  return `CPU${cpus.physical.length === 1 ? '' : 's'} ${formatCpuList(cpus.physical)}`;
}

function cpuRequest(cpus: SpecCpus): CpuRequest {
  return 'count' in cpus ? cpus.count : { physical: cpus.physical };
}

const orNone = (text: string): string => (text === '' ? 'none' : text);
const sorted = (ids: number[]): number[] => ids.slice().sort((a, b) => a - b);
const sameSet = <T>(a: T[], b: T[]): boolean => a.length === b.length && a.every((x) => b.includes(x));

/** The issue of an instance field, as the loader's SpecIssue. */
function issue(entry: InstanceSpecEntry, field: string, message: string): SpecIssue {
  return { pointer: `/instances/${entry.name}/${field}`, at: entry.at, message: `instance "${entry.name}": ${field}: ${message}` };
}

/**
 * Checks the spec against the host before any change: what the pool (the spec's, or the live
 * one when the spec does not manage it) cannot give is refused whole, naming instance and field.
 */
function validate(
  spec: HostSpec,
  prune: boolean,
  named: Set<string>,
  pool: { exists: boolean; cpus: number[]; memoryBytes: bigint; devices: string[] },
  hostCpus: { all: number[]; boot: number[] },
  taken: Map<number, string>,
): void {
  const issues: SpecIssue[] = [];
  const at = { file: spec.source, line: 1, column: 1 };
  const poolIssue = (field: string, message: string) => issues.push({ pointer: `/pool/${field}`, at, message: `pool: ${field}: ${message}` });
  if (spec.pool === undefined && !pool.exists && spec.instances.length > 0) {
    issues.push({ pointer: '/pool', at, message: 'the spec does not manage the pool and the host has none: add a pool section, or create the pool first (mkctl pool init)' });
  }
  if (spec.pool !== undefined && 'physical' in spec.pool.cpus) {
    const unknown = spec.pool.cpus.physical.filter((id) => !hostCpus.all.includes(id));
    if (unknown.length > 0) poolIssue('cpus', `the host has no CPU with physical id ${formatCpuList(unknown)} (it has ${formatCpuList(sorted(hostCpus.all))})`);
    const boot = spec.pool.cpus.physical.filter((id) => hostCpus.boot.includes(id));
    if (boot.length > 0) poolIssue('cpus', `physical CPU ${formatCpuList(boot)} is the host's boot CPU, which never joins a pool`);
  }
  // what instances can take: the pool as the spec will make it, or as it is
  const poolCpus = spec.pool === undefined ? pool.cpus : 'physical' in spec.pool.cpus ? spec.pool.cpus.physical : undefined;
  const poolCount = spec.pool === undefined ? pool.cpus.length : 'count' in spec.pool.cpus ? spec.pool.cpus.count : spec.pool.cpus.physical.length;
  const poolMemory = spec.pool?.memoryBytes ?? pool.memoryBytes;
  const poolDevices = spec.pool?.devices.map((d) => d.toLowerCase()) ?? pool.devices;
  let cpuSum = 0;
  let memorySum = 0n;
  const cpuOwner = new Map<number, string>();
  const deviceOwner = new Map<string, string>();
  for (const entry of spec.instances) {
    const holder = entry.id === undefined ? undefined : taken.get(entry.id);
    // an instance --prune deletes gives its id up first (apply retries the create after the delete)
    if (holder !== undefined && holder !== entry.name && (named.has(holder) || !prune)) issues.push(issue(entry, 'id', `id ${entry.id} is taken by instance "${holder}"`));
    if ('physical' in entry.cpus) {
      const outside = poolCpus === undefined ? [] : entry.cpus.physical.filter((id) => !poolCpus.includes(id));
      if (outside.length > 0) issues.push(issue(entry, 'cpus', `physical CPU ${formatCpuList(outside)} is not in the pool (pool CPUs: ${orNone(formatCpuList(sorted(poolCpus!)))})`));
      for (const id of entry.cpus.physical) {
        const other = cpuOwner.get(id);
        if (other !== undefined) issues.push(issue(entry, 'cpus', `physical CPU ${id} is given to instance "${other}" too`));
        cpuOwner.set(id, entry.name);
      }
    }
    cpuSum += 'count' in entry.cpus ? entry.cpus.count : entry.cpus.physical.length;
    if (cpuSum > poolCount) issues.push(issue(entry, 'cpus', `the instances up to this one want ${cpuSum} CPUs; the pool has ${poolCount}`));
    memorySum += entry.memoryBytes;
    if (memorySum > poolMemory) issues.push(issue(entry, 'memory', `the instances up to this one want ${formatBytes(memorySum)}; the pool has ${formatBytes(poolMemory)}`));
    for (const d of entry.devices.map((x) => x.toLowerCase())) {
      if (!poolDevices.includes(d)) issues.push(issue(entry, 'devices', `${d} is not in the pool (pool devices: ${orNone(poolDevices.join(', '))})`));
      const other = deviceOwner.get(d);
      if (other !== undefined) issues.push(issue(entry, 'devices', `${d} is given to instance "${other}" too`));
      deviceOwner.set(d, entry.name);
    }
  }
  if (issues.length > 0) {
    throw new MultikernelError('ERR_MK_INVALID_SPEC', `${spec.source}: the host cannot give what the spec asks:\n${issues.map((i) => `  ${i.message}`).join('\n')}`, {
      details: { issues },
    });
  }
}

/** Reads the spec's kernel and initrd of an instance for their tag; an unreadable file is a spec error. */
async function tagOf(entry: InstanceSpecEntry & { kernel: string }): Promise<string> {
  try {
    return await imageTag(entry.kernel, entry.initrd, entry.cmdline);
  } catch (err) {
    const bad: SpecIssue = issue(entry, 'kernel', `cannot read ${entry.kernel}${entry.initrd === undefined ? '' : ` or ${entry.initrd}`}: ${(err as Error).message}`);
    throw new MultikernelError('ERR_MK_INVALID_SPEC', bad.message, { cause: err, details: { issues: [bad] } });
  }
}

/**
 * The host as hostReport reads it. An instance deleted by another process between the listing
 * and the reading of its details makes the reading fail (ERR_MK_INSTANCE_NOT_FOUND): read again.
 */
async function readHost(host: Host, signal: AbortSignal | undefined): Promise<HostReport> {
  for (let attempt = 1; attempt < 3; attempt++) {
    try {
      return await hostReport(host, { signal });
    } catch (err) {
      if (!(err instanceof MultikernelError && err.code === 'ERR_MK_INSTANCE_NOT_FOUND')) throw err;
    }
  }
  return hostReport(host, { signal });
}

/** Computes the plan and what runs each step (apply's view; plan() returns the first part). */
export async function computePlan(host: Host, spec: HostSpec, options: PlanOptions = {}): Promise<ComputedPlan> {
  const signal = options.signal;
  signal?.throwIfAborted();
  const report = await readHost(host, signal);
  const live = new Map(report.instances.map((i) => [i.name, i]));
  const named = new Set(spec.instances.map((e) => e.name));
  const poolDevices = [...new Set([...pciIds(report.pool.devices), ...report.instances.flatMap((i) => pciIds(i.devices))])];
  const poolCpuIds = report.pool.cpus.map((c) => c.physicalId);
  const topology = await host.topology();
  const hostCpus = { all: [...new Set([...topology.cpus.map((c) => c.physicalId), ...poolCpuIds])], boot: topology.cpus.filter((c) => c.boot).map((c) => c.physicalId) };
  validate(spec, options.prune === true, named, { exists: report.pool.exists, cpus: poolCpuIds, memoryBytes: report.pool.memoryBytes, devices: poolDevices }, hostCpus, new Map(report.instances.map((i) => [i.id, i.name])));

  const first: PlannedStep[] = [];
  const existing: PlannedStep[] = [];
  const created: PlannedStep[] = [];
  const pruned: PlannedStep[] = [];
  const deletes: PlannedStep[] = [];
  const last: PlannedStep[] = [];
  const drift: Drift[] = [];
  const instance = (name: string): Promise<Instance> => host.instance(name);
  const stopOptions = { force: true, timeoutMs: APPLY_STOP_GRACE_MS, signal };
  const at = { signal };

  // ---------------------------------------------------------------- the pool
  if (spec.pool !== undefined) {
    const want = spec.pool;
    const wantDevices = want.devices.map((d) => d.toLowerCase());
    if (!report.pool.exists) {
      first.push({
        step: { action: 'pool-init', subject: 'pool', reason: `no pool: ${describeCpus(want.cpus)}, ${formatBytes(want.memoryBytes)}${wantDevices.length > 0 ? `, devices ${wantDevices.join(', ')}` : ''}` },
        run: async () => {
          await host.pool.init({ cpus: cpuRequest(want.cpus), memory: want.memoryBytes, devices: wantDevices }, at);
        },
      });
    } else {
      const grow: { cpus?: CpuRequest; memory?: bigint; devices?: string[] } = {};
      const shrink: { cpus?: number | { physical: number[] }; memory?: bigint; devices?: string[] } = {};
      const growWhy: string[] = [];
      const shrinkWhy: string[] = [];
      const have = poolCpuIds.length;
      if ('count' in want.cpus) {
        if (want.cpus.count > have) grow.cpus = want.cpus.count - have;
        if (want.cpus.count < have) shrink.cpus = have - want.cpus.count;
        if (want.cpus.count !== have) (want.cpus.count > have ? growWhy : shrinkWhy).push(`CPUs ${have} -> ${want.cpus.count}`);
      } else {
        const wanted = want.cpus.physical;
        const add = wanted.filter((id) => !poolCpuIds.includes(id));
        const remove = poolCpuIds.filter((id) => !wanted.includes(id));
        if (add.length > 0) {
          grow.cpus = { physical: add };
          growWhy.push(`CPUs + ${formatCpuList(add)}`);
        }
        if (remove.length > 0) {
          shrink.cpus = { physical: remove };
          shrinkWhy.push(`CPUs - ${formatCpuList(remove)}`);
        }
      }
      const memory = report.pool.memoryBytes;
      if (want.memoryBytes > memory) grow.memory = want.memoryBytes - memory;
      if (want.memoryBytes < memory) shrink.memory = memory - want.memoryBytes;
      if (want.memoryBytes !== memory) (want.memoryBytes > memory ? growWhy : shrinkWhy).push(`memory ${formatBytes(memory)} -> ${formatBytes(want.memoryBytes)}`);
      const addDevices = wantDevices.filter((d) => !poolDevices.includes(d));
      const removeDevices = poolDevices.filter((d) => !wantDevices.includes(d));
      if (addDevices.length > 0) {
        grow.devices = addDevices;
        growWhy.push(`devices + ${addDevices.join(', ')}`);
      }
      if (removeDevices.length > 0) {
        shrink.devices = removeDevices;
        shrinkWhy.push(`devices - ${removeDevices.join(', ')}`);
      }
      if (growWhy.length > 0) {
        first.push({
          step: { action: 'pool-grow', subject: 'pool', reason: growWhy.join(', ') },
          run: async () => {
            await host.pool.grow(grow, at);
          },
        });
      }
      if (shrinkWhy.length > 0) {
        last.push({
          step: { action: 'pool-shrink', subject: 'pool', reason: shrinkWhy.join(', ') },
          run: async () => {
            await host.pool.shrink(shrink, at);
          },
        });
      }
    }
  }

  // ---------------------------------------------------------------- instances
  const failedStop = (info: InstanceInfo): PlannedStep => ({
    step: { action: 'stop', subject: info.name, reason: 'it is in the kernel\'s failed state (its CPUs could not be settled after a halt): halted by force' },
    // Instance.stop() refuses any status but active: the forced halt is the kernel's own call
    run: async () => {
      signal?.throwIfAborted();
      await host.system.reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, info.id);
    },
  });
  const expected = async (entry: InstanceSpecEntry & { kernel: string }): Promise<string> => taggedCmdline(entry.cmdline, await tagOf(entry));
  const load = async (entry: InstanceSpecEntry & { kernel: string }, target: Instance): Promise<void> => {
    // the tag is computed again now: a file changed since the plan gets its own tag
    await target.load(entry.kernel, { cmdline: taggedCmdline(entry.cmdline, await tagOf(entry)), initrd: entry.initrd, signal });
  };
  const loadReason = (entry: InstanceSpecEntry & { kernel: string }): string => `kernel ${entry.kernel}${entry.initrd !== undefined ? `, initrd ${entry.initrd}` : ''}`;
  const startStep = (entry: InstanceSpecEntry, reason: string): PlannedStep => ({
    step: { action: 'start', subject: entry.name, reason },
    run: async () => {
      await (await instance(entry.name)).start(at);
    },
  });

  for (const entry of spec.instances) {
    const info = live.get(entry.name);
    const kernel = entry.kernel;
    if (info === undefined) {
      created.push({
        step: {
          action: 'create',
          subject: entry.name,
          reason: `${describeCpus(entry.cpus)}, ${formatBytes(entry.memoryBytes)}${entry.devices.length > 0 ? `, devices ${entry.devices.join(', ')}` : ''}${entry.id !== undefined ? `, id ${entry.id}` : ''}`,
        },
        run: async () => {
          await host.createInstance(
            {
              name: entry.name,
              cpus: cpuRequest(entry.cpus),
              memory: entry.memoryBytes,
              devices: entry.devices,
              ...(entry.id !== undefined ? { id: entry.id } : {}),
              ...(entry.numaNode !== undefined ? { numaNode: entry.numaNode } : {}),
            },
            at,
          );
        },
      });
      if (kernel !== undefined) {
        const withKernel = { ...entry, kernel };
        await expected(withKernel);
        created.push({
          step: { action: 'load', subject: entry.name, reason: loadReason(withKernel) },
          run: async () => load(withKernel, await instance(entry.name)),
        });
        if (entry.autostart) created.push(startStep(entry, 'autostart'));
      }
      continue;
    }
    const steps: PlannedStep[] = [];
    if (entry.id !== undefined && entry.id !== info.id) {
      drift.push({ subject: entry.name, expected: `id ${entry.id}`, actual: `id ${info.id}`, message: `instance "${entry.name}" has id ${info.id}, not ${entry.id}: an id cannot change; delete the instance to have apply create it again` });
    }
    if (info.status === 'failed') {
      existing.push(failedStop(info));
      continue;
    }
    const active = info.status === 'active';
    const loaded = active || info.status === 'loaded';

    // resources
    const change: InstanceUpdate = {};
    const why: string[] = [];
    if ('count' in entry.cpus ? entry.cpus.count !== info.cpus.length : !sameSet(entry.cpus.physical, info.cpus)) {
      change.cpus = 'count' in entry.cpus ? entry.cpus.count : { physical: entry.cpus.physical };
      why.push('count' in entry.cpus ? `CPUs ${info.cpus.length} -> ${entry.cpus.count}` : `CPUs ${formatCpuList(sorted(info.cpus))} -> ${formatCpuList(sorted(entry.cpus.physical))}`);
    }
    if (entry.memoryBytes !== info.memoryBytes) {
      const from = `memory ${formatBytes(info.memoryBytes)} -> ${formatBytes(entry.memoryBytes)}`;
      const grows = entry.memoryBytes > info.memoryBytes;
      const delta = grows ? entry.memoryBytes - info.memoryBytes : info.memoryBytes - entry.memoryBytes;
      if (active && delta % ACTIVE_MEMORY_ALIGN !== 0n) {
        drift.push({
          subject: entry.name,
          expected: formatBytes(entry.memoryBytes),
          actual: formatBytes(info.memoryBytes),
          message: `instance "${entry.name}" runs, and a running instance's memory changes in steps of ${formatBytes(ACTIVE_MEMORY_ALIGN)} only: apply leaves its memory; stop it and apply again`,
        });
      } else if (!grows && wholePieces(info.memory.slice(1), delta) === undefined) {
        drift.push({
          subject: entry.name,
          expected: formatBytes(entry.memoryBytes),
          actual: formatBytes(info.memoryBytes),
          message:
            `instance "${entry.name}" can give back whole memory regions only, never its first (regions: ${orNone(info.memory.map((r) => formatBytes(r.size)).join(', '))}): ` +
            `apply cannot take it to ${formatBytes(entry.memoryBytes)}; delete it to have apply create it again`,
        });
      } else {
        change.memory = entry.memoryBytes;
        why.push(from);
      }
    }
    const held = pciIds(info.devices);
    const wantDevices = entry.devices.map((d) => d.toLowerCase());
    if (!sameSet(held, wantDevices)) {
      change.devices = wantDevices;
      why.push(`devices [${held.join(', ')}] -> [${wantDevices.join(', ')}]`);
    }
    if (why.length > 0) {
      steps.push({
        step: { action: 'update', subject: entry.name, reason: why.join(', ') },
        run: async () => (await instance(entry.name)).update(change, at),
      });
    }

    // the image
    let running = active;
    if (kernel === undefined) {
      if (loaded) {
        steps.push({
          step: { action: 'unload', subject: entry.name, reason: `the spec names no kernel${active ? ': it runs, so it is stopped first' : ''}` },
          run: async () => {
            const target = await instance(entry.name);
            if ((await target.status()) === 'active') await target.stop(stopOptions);
            await target.unload(at);
          },
        });
        running = false;
      }
    } else if (!loaded) {
      const withKernel = { ...entry, kernel };
      await expected(withKernel);
      steps.push({
        step: { action: 'load', subject: entry.name, reason: loadReason(withKernel) },
        run: async () => load(withKernel, await instance(entry.name)),
      });
      if (entry.autostart) steps.push(startStep(entry, 'autostart'));
      running = entry.autostart;
    } else {
      const withKernel = { ...entry, kernel };
      const want = await expected(withKernel);
      const row = info.image?.cmdline;
      let reload: string | undefined;
      if (!host.features.kimage || row === undefined) {
        drift.push({
          subject: entry.name,
          expected: want,
          actual: 'unknown',
          message: host.features.kimage
            ? `instance "${entry.name}" has a kernel loaded but /proc/kimage has no row for it: whether it is the spec's cannot be told; apply leaves it`
            : `this kernel has no /proc/kimage, so whether the image loaded in "${entry.name}" is the spec's cannot be told; apply leaves it (unload it to have apply load the spec's)`,
        });
      } else if (row !== want) {
        const { text, tag } = splitTag(row);
        const wantText = entry.cmdline;
        if (tag === undefined) {
          drift.push({ subject: entry.name, expected: want, actual: row, message: `the image loaded in "${entry.name}" was not loaded by apply (no ${SPEC_TAG_PARAM} tag): apply reloads it once to adopt it` });
          reload = 'the loaded image was not made by apply (no tag)';
        } else if (text !== wantText) {
          reload = `command line "${text}" -> "${wantText}"`;
        } else {
          reload = `the kernel or initrd file changed since it was loaded (tag ${tag} -> ${splitTag(want).tag!})`;
        }
      }
      if (reload !== undefined) {
        steps.push({
          step: { action: 'reload', subject: entry.name, reason: reload },
          run: async () => {
            const target = await instance(entry.name);
            const status = await target.status();
            if (status === 'active') await target.stop(stopOptions);
            if (status !== 'ready') await target.unload(at);
            await load(withKernel, target);
            if (entry.autostart) await target.start(at);
          },
        });
        running = entry.autostart;
      } else if (entry.autostart && !active) {
        steps.push(startStep(entry, 'autostart: it is loaded, not running'));
        running = true;
      }
    }
    if (!entry.autostart && running) {
      drift.push({ subject: entry.name, expected: 'not started by apply (autostart: false)', actual: 'active', message: `instance "${entry.name}" runs although its autostart is false: apply does not stop it` });
    }
    existing.push(...steps);
  }

  // ---------------------------------------------------------------- instances the spec does not name
  const unmanaged: string[] = [];
  for (const info of report.instances) {
    if (named.has(info.name)) continue;
    if (!options.prune) {
      unmanaged.push(info.name);
      drift.push({ subject: info.name, expected: 'absent (not in the spec)', actual: info.status, message: `instance "${info.name}" is not in the spec: left alone (apply --prune deletes it)` });
      continue;
    }
    const reason = 'not in the spec (--prune)';
    if (info.status === 'failed') pruned.push(failedStop(info));
    if (info.status === 'active') {
      pruned.push({
        step: { action: 'stop', subject: info.name, reason },
        run: async () => {
          await (await instance(info.name)).stop(stopOptions);
        },
      });
    }
    if (info.status !== 'ready') {
      pruned.push({
        step: { action: 'unload', subject: info.name, reason },
        run: async () => (await instance(info.name)).unload(at),
      });
    }
    deletes.push({
      step: { action: 'delete', subject: info.name, reason },
      run: async () => (await instance(info.name)).delete(at),
    });
  }

  // ---------------------------------------------------------------- what apply does not fix
  for (const tx of report.transactions.filter((x) => x.status === 'failed')) {
    // Not removed by apply: without the view from before it (which only its writer had), its
    // rollback cannot be checked, and it runs the inverse of every operation against the host as
    // it is now, which apply has converged since (docs/spec-apply.md, "Crash safety").
    drift.push({
      subject: `tx_${tx.id}`,
      expected: 'no failed transaction',
      actual: 'failed',
      message:
        `transaction ${tx.id} (resources "${tx.resources}") is left "failed": its writer stopped before rolling it back (killed?), or the rollback failed. ` +
        'What it did is part of what plan reads; apply leaves it, since its rollback (rmdir) would run the inverse of its operations against the host as it is now: read dmesg before removing it',
    });
  }
  for (const a of report.attention.filter((x) => x.kind === 'kerf-lock')) drift.push({ subject: a.subject, expected: 'no kerf lock left behind', actual: 'present', message: a.message });

  const planned = [...first, ...existing, ...created, ...pruned, ...deletes, ...last];
  const steps = planned.map((p) => p.step);
  return { plan: { steps, drift, unmanaged, converged: steps.length === 0 }, planned };
}

/**
 * What apply would change to make the live host match `spec`, read from the kernel now. Throws
 * ERR_MK_INVALID_SPEC (details.issues, one per instance and field) when the host cannot give what
 * the spec asks, before anything is changed.
 */
export async function plan(host: Host, spec: HostSpec, options: PlanOptions = {}): Promise<Plan> {
  return (await computePlan(host, spec, options)).plan;
}
