/**
 * Choosing CPUs for a request, shared by the pool (host CPUs to move into it) and instances (free
 * pool CPUs to give them). Pure: the callers read the kernel state and pass the candidates.
 */
import { MultikernelError } from './errors';
import type { HostCpu } from './topology';

/**
 * Which CPUs: a count, a count on one NUMA node, whole cores (every SMT sibling of each), or
 * explicit ids. The kernel's trees use physical ids (x86 APIC id, arm64 MPIDR, riscv hart id);
 * `logical` takes Linux's CPU numbers (cpuN, what `taskset` and `lscpu` show) and maps them.
 */
export type CpuRequest =
  | number
  | { count: number; node?: number }
  | { cores: number; node?: number }
  | { physical: number[] }
  | { logical: number[] };

export interface CpuCandidate {
  physicalId: number;
  /** Linux CPU number, when the host still shows the CPU */
  logical?: number;
  node?: number;
  /** "package:core", when known; CPUs with the same key are SMT siblings */
  core?: string;
}

/** A host CPU as a candidate: what the topology does not know (-1) is left out. */
export function candidateOf(c: HostCpu): CpuCandidate {
  return {
    physicalId: c.physicalId,
    logical: c.cpu,
    ...(c.node >= 0 ? { node: c.node } : {}),
    ...(c.package >= 0 && c.core >= 0 ? { core: `${c.package}:${c.core}` } : {}),
  };
}

function invalid(message: string): never {
  throw new MultikernelError('ERR_MK_INVALID_SPEC', message);
}

function short(message: string, details: Record<string, unknown>): never {
  throw new MultikernelError('ERR_MK_RESOURCES', message, { details });
}

function positive(where: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) invalid(`${where} must be a positive integer, got ${String(v)}`);
  return v;
}

function idList(where: string, v: unknown): number[] {
  if (!Array.isArray(v) || v.length === 0) invalid(`${where} must be a non-empty array of CPU ids`);
  for (const id of v) if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) invalid(`${where} holds ${String(id)}, not a CPU id`);
  if (new Set(v).size !== v.length) invalid(`${where} names a CPU twice: [${v.join(', ')}]`);
  return v as number[];
}

/** Checks the shape of a request before anything is read from the kernel. */
export function checkCpuRequest(where: string, request: unknown): CpuRequest {
  if (typeof request === 'number') return positive(where, request);
  if (typeof request !== 'object' || request === null) invalid(`${where} must be a count, { count }, { cores }, { physical } or { logical }`);
  const r = request as Record<string, unknown>;
  const keys = ['count', 'cores', 'physical', 'logical'].filter((k) => r[k] !== undefined);
  if (keys.length !== 1) invalid(`${where} must give exactly one of count, cores, physical or logical`);
  if (r.node !== undefined && (typeof r.node !== 'number' || !Number.isSafeInteger(r.node) || r.node < 0)) invalid(`${where}.node must be a NUMA node number`);
  if (r.node !== undefined && (keys[0] === 'physical' || keys[0] === 'logical')) invalid(`${where}.node goes with count or cores, not with explicit ids`);
  if (keys[0] === 'count' || keys[0] === 'cores') positive(`${where}.${keys[0]}`, r[keys[0]]);
  else idList(`${where}.${keys[0]}`, r[keys[0]]);
  return request as CpuRequest;
}

/**
 * Picks physical ids from `candidates` (in their order of preference). `all` is every CPU whose
 * core membership is known (for `cores`: a core counts only when all its siblings are candidates).
 */
export function selectCpus(where: string, request: CpuRequest, candidates: CpuCandidate[], all: CpuCandidate[] = candidates): number[] {
  const r = checkCpuRequest(where, request);
  const free = candidates.map((c) => c.physicalId);
  if (typeof r === 'number') return take(where, r, candidates, undefined);
  if ('count' in r) return take(where, r.count, candidates, r.node);
  if ('physical' in r) {
    const missing = r.physical.filter((id) => !free.includes(id));
    if (missing.length > 0) short(`${where}: CPU ${missing.join(', ')} (physical) ${missing.length > 1 ? 'are' : 'is'} not available; available: [${free.join(', ')}]`, { missing, available: free });
    return r.physical.slice();
  }
  if ('logical' in r) {
    const ids = r.logical.map((n) => {
      if (n === 0) short(`${where}: CPU 0 boots the host and is never offered`, { logical: n });
      const c = all.find((x) => x.logical === n);
      if (c === undefined) short(`${where}: the host shows no CPU ${n} (logical)`, { logical: n });
      return c.physicalId;
    });
    return selectCpus(where, { physical: ids }, candidates, all);
  }
  // whole cores: group the candidates by core, keep the cores all of whose siblings are candidates
  const byCore = new Map<string, number[]>();
  for (const c of candidates) {
    if (c.core === undefined) continue;
    if (r.node !== undefined && c.node !== r.node) continue;
    byCore.set(c.core, [...(byCore.get(c.core) ?? []), c.physicalId]);
  }
  const whole = [...byCore].filter(([core, ids]) => all.filter((c) => c.core === core).length === ids.length);
  if (whole.length < r.cores) {
    short(`${where}: ${r.cores} whole cores wanted${r.node === undefined ? '' : ` on node ${r.node}`}, ${whole.length} available (a core counts when every SMT sibling is free)`, {
      wanted: r.cores,
      available: whole.length,
    });
  }
  return whole.slice(0, r.cores).flatMap(([, ids]) => ids);
}

function take(where: string, count: number, candidates: CpuCandidate[], node: number | undefined): number[] {
  const pool = node === undefined ? candidates : candidates.filter((c) => c.node === node);
  if (pool.length < count) {
    short(`${where}: ${count} CPUs wanted${node === undefined ? '' : ` on node ${node}`}, ${pool.length} available`, { wanted: count, available: pool.length, node });
  }
  return pool.slice(0, count).map((c) => c.physicalId);
}

/**
 * Whole pieces (memory chunks or regions) whose sizes add up to exactly `bytes`, taken newest
 * (last) first, skipping a piece larger than what is left: the kernel removes memory only by a
 * piece's exact base and size. undefined when no such set is found that way.
 */
export function wholePieces<T extends { size: bigint }>(pieces: T[], bytes: bigint): T[] | undefined {
  let left = bytes;
  const out: T[] = [];
  for (const piece of pieces.slice().reverse()) {
    if (piece.size <= left) {
      out.push(piece);
      left -= piece.size;
    }
  }
  return left === 0n ? out : undefined;
}
