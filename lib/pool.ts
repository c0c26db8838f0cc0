/**
 * The resource pool: the CPUs, memory and PCI devices the host has given up for instances
 * (docs/kernel-interface.md, "Baseline" and "Overlays"). A snapshot is read fresh from the kernel
 * every time; each change is one baseline write or one `/resources` transaction, checked against
 * the snapshot first so that a request the kernel would refuse half way is refused whole here.
 */
import { MultikernelError } from './errors';
import { allInstanceRegions, pciIds } from './readback';
import { MK_DEVICE_TREE } from './kernfs';
import { encodeBaseline } from './model/baseline';
import { parsePool, type PoolState, type TreeDevice } from './model/trees';
import type { OverlayOp } from './model/overlay';
import { candidateOf, selectCpus, checkCpuRequest, wholePieces, type CpuCandidate, type CpuRequest } from './select';
import type { System } from './system/system';
import type { HostTopology } from './topology';
import type { TxResult } from './transaction';
import { formatBytes, parseBytes } from './units';

/** What a Pool needs from its Host (lib/host.ts). */
export interface PoolHost {
  readonly system: System;
  topology(): Promise<HostTopology>;
  /** every CPU whose logical number or node the host has shown, pooled ones included */
  knownCpus(): Promise<CpuCandidate[]>;
  instanceResources(): Promise<{ name: string; cpus: number[]; memoryBytes: bigint }[]>;
  writeBaseline(blob: Uint8Array, signal?: AbortSignal): Promise<void>;
  applyOverlay(ops: OverlayOp[], description: string, signal?: AbortSignal): Promise<TxResult>;
  /** one transaction whose operations `plan` makes under the writers' locks (none: nothing written) */
  applyPlannedOverlay(plan: () => Promise<OverlayOp[]>, description: string, signal?: AbortSignal): Promise<TxResult | undefined>;
}

export interface PoolCpu {
  physicalId: number;
  /** Linux CPU number, when the host showed the CPU (a pooled CPU departs from the host's lists) */
  logical?: number;
  node?: number;
  /** the instance holding it; undefined when free */
  instance?: string;
}

export interface PoolChunk {
  base: bigint;
  size: bigint;
  node?: number;
  /** bytes of instance memory inside it (from /proc/iomem; 0n when unreadable) */
  usedBytes: bigint;
}

export interface PoolSnapshot {
  /** false until a baseline was written (or after a full teardown) */
  exists: boolean;
  /** how the kernel renders pool memory: 'memory-nodes' (newest) or 'base-bytes' (older) */
  format: PoolState['format'];
  cpus: PoolCpu[];
  /** physical ids of the free CPUs, in the kernel's order */
  freeCpus: number[];
  memory: PoolChunk[];
  memoryBytes: bigint;
  /** memory no instance holds */
  freeMemoryBytes: bigint;
  /** PCI and platform devices free in the pool */
  devices: TreeDevice[];
  /** names of the instances, which hold the rest */
  instances: string[];
}

/** Memory: one size (any node), or a size per NUMA node. Sizes are bytes or "512M", "2G". */
export type MemoryRequest = bigint | number | string | { size: bigint | number | string; node?: number }[];

export interface PoolRequest {
  /** required by init() (a baseline lists at least one CPU) */
  cpus?: CpuRequest;
  memory?: MemoryRequest;
  /** PCI addresses "DDDD:BB:SS.F" of host devices */
  devices?: string[];
}

export interface PoolShrinkRequest {
  /** free CPUs to give back: a count (the last free ones) or exact physical ids */
  cpus?: number | { physical: number[] };
  /** free chunks to give back: by total size (whole chunks, newest first) or by base */
  memory?: bigint | number | string | { base: bigint }[];
  devices?: string[];
}

const PAGE = 4096n;

function invalid(message: string): never {
  throw new MultikernelError('ERR_MK_INVALID_SPEC', message);
}

function memoryList(where: string, request: MemoryRequest): { size: bigint; numaNode?: number }[] {
  const list = Array.isArray(request) ? request : [{ size: request }];
  if (list.length === 0) invalid(`${where} is an empty list`);
  return list.map((m, i) => {
    let size: bigint;
    try {
      size = parseBytes(m.size, `${where}[${i}].size`);
    } catch (err) {
      return invalid((err as Error).message);
    }
    if (size % PAGE !== 0n) invalid(`${where}[${i}].size must be a whole number of 4 KiB pages, got ${size}`);
    const node = (m as { node?: number }).node;
    if (node !== undefined && (!Number.isSafeInteger(node) || node < 0 || node > 63)) invalid(`${where}[${i}].node must be a NUMA node 0..63, got ${String(node)}`);
    return { size, numaNode: node };
  });
}

function pciList(where: string, devices: unknown): string[] {
  if (!Array.isArray(devices)) invalid(`${where} must be an array of PCI addresses`);
  return devices.map((d) => {
    if (typeof d !== 'string' || !/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(d)) invalid(`${where}: ${JSON.stringify(d)} is not a PCI address like 0000:00:04.0`);
    return d.toLowerCase();
  });
}

export class Pool {
  readonly #host: PoolHost;

  /** The pool of a Host: `host.pool`. */
  constructor(host: PoolHost) {
    this.#host = host;
  }

  /** What the pool holds now, read from the kernel. */
  async snapshot(): Promise<PoolSnapshot> {
    const system = this.#host.system;
    const tree = parsePool(await system.readFile(MK_DEVICE_TREE));
    const instances = await this.#host.instanceResources();
    const regions = await allInstanceRegions(system);
    const known = await this.#host.knownCpus();
    const annotate = (physicalId: number): PoolCpu => {
      const k = known.find((c) => c.physicalId === physicalId);
      const holder = instances.find((i) => i.cpus.includes(physicalId));
      return {
        physicalId,
        ...(k?.logical !== undefined ? { logical: k.logical } : {}),
        ...(k?.node !== undefined ? { node: k.node } : {}),
        ...(holder ? { instance: holder.name } : {}),
      };
    };
    const cpus = tree.hasPool ? tree.cpus.map(annotate) : [];
    const memory = tree.memory.map((m) => ({
      base: m.base,
      size: m.size,
      node: m.numaNode,
      usedBytes: regions.filter((r) => r.base >= m.base && r.base < m.base + m.size).reduce((a, r) => a + r.size, 0n),
    }));
    const memoryBytes = memory.reduce((a, m) => a + m.size, 0n);
    const held = instances.reduce((a, i) => a + i.memoryBytes, 0n);
    return {
      exists: tree.hasPool,
      format: tree.format,
      cpus,
      freeCpus: tree.hasPool ? tree.cpusAvailable.slice() : [],
      memory,
      memoryBytes,
      freeMemoryBytes: memoryBytes > held ? memoryBytes - held : 0n,
      devices: tree.hasPool ? tree.devices : [],
      instances: instances.map((i) => i.name),
    };
  }

  /** Host CPUs that may join the pool, highest logical number first: never the boot CPU, never an offline one. */
  async #hostCandidates(): Promise<{ candidates: CpuCandidate[]; all: CpuCandidate[] }> {
    const topology = await this.#host.topology();
    const known = topology.cpus.filter((c) => c.physicalId >= 0);
    const all = known.map(candidateOf);
    const candidates = known
      .filter((c) => c.online && !c.boot)
      .sort((a, b) => b.cpu - a.cpu)
      .map(candidateOf);
    return { candidates, all };
  }

  /**
   * Creates the pool: moves host CPUs into it (the kernel takes each offline and parks it) and
   * allocates its memory, with one baseline write; PCI devices follow in one transaction. If
   * that fails, the pool is torn down again. ERR_MK_POOL_EXISTS when a pool holds resources.
   */
  async init(request: PoolRequest, options: { signal?: AbortSignal } = {}): Promise<PoolSnapshot> {
    if (request.memory === undefined) invalid('a pool needs memory: its CPUs park in it (a pool CPU without pool memory halts for good)');
    if (request.cpus === undefined) invalid('a pool needs CPUs: the baseline\'s cpus property must not be empty (baseline.c)');
    const memory = memoryList('memory', request.memory);
    checkCpuRequest('cpus', request.cpus);
    const devices = request.devices === undefined ? [] : pciList('devices', request.devices);
    options.signal?.throwIfAborted();
    const before = await this.snapshot();
    if (before.exists) {
      throw new MultikernelError(
        'ERR_MK_POOL_EXISTS',
        `a pool exists (${before.cpus.length} CPUs, ${formatBytes(before.memoryBytes)}): grow() or shrink() it, or teardown() it first`,
        { details: { cpus: before.cpus.length, memoryBytes: before.memoryBytes } },
      );
    }
    const { candidates, all } = await this.#hostCandidates();
    const cpus = selectCpus('cpus', request.cpus, candidates, all);
    await this.#host.writeBaseline(encodeBaseline({ cpus, memory }), options.signal);
    if (devices.length > 0) {
      try {
        await this.#host.applyOverlay(
          devices.map((pciId) => ({ op: 'device-add', target: 'pool', pciId })),
          'pool devices',
          options.signal,
        );
      } catch (err) {
        await this.teardown().catch(() => undefined);
        throw err;
      }
    }
    return this.snapshot();
  }

  /** Adds host CPUs, memory and devices to an existing pool, in one transaction. */
  async grow(request: PoolRequest, options: { signal?: AbortSignal } = {}): Promise<PoolSnapshot> {
    const memory = request.memory === undefined ? [] : memoryList('memory', request.memory);
    if (request.cpus !== undefined) checkCpuRequest('cpus', request.cpus);
    const devices = request.devices === undefined ? [] : pciList('devices', request.devices);
    options.signal?.throwIfAborted();
    // read and chosen under the writers' locks: no writer that takes them can take the same host CPUs meanwhile
    let before: PoolSnapshot | undefined;
    const tx = await this.#host.applyPlannedOverlay(
      async () => {
        before = await this.snapshot();
        if (!before.exists) throw new MultikernelError('ERR_MK_NO_POOL', 'there is no pool to grow: init() it first');
        const { candidates, all } = await this.#hostCandidates();
        const cpus = request.cpus === undefined ? [] : selectCpus('cpus', request.cpus, candidates, all);
        return [
          ...memory.map((m) => ({ op: 'memory-add' as const, target: 'pool' as const, size: m.size, numaNode: m.numaNode })),
          ...cpus.map((id) => ({ op: 'cpu-add' as const, target: 'pool' as const, id })),
          ...devices.map((pciId) => ({ op: 'device-add' as const, target: 'pool' as const, pciId })),
        ];
      },
      'pool grow',
      options.signal,
    );
    return tx === undefined ? before! : this.snapshot();
  }

  /** Gives free CPUs, whole free memory chunks and free devices back to the host, in one transaction. */
  async shrink(request: PoolShrinkRequest, options: { signal?: AbortSignal } = {}): Promise<PoolSnapshot> {
    const devices = request.devices === undefined ? [] : pciList('devices', request.devices);
    options.signal?.throwIfAborted();
    // read and chosen under the writers' locks: no writer that takes them can take the same free CPUs meanwhile
    let before: PoolSnapshot | undefined;
    const tx = await this.#host.applyPlannedOverlay(
      async () => {
        const pool = await this.snapshot();
        before = pool;
        if (!pool.exists) throw new MultikernelError('ERR_MK_NO_POOL', 'there is no pool to shrink');
        const free = pool.freeCpus.map((physicalId) => ({ physicalId }));
        const cpus =
          request.cpus === undefined
            ? []
            : typeof request.cpus === 'number'
              ? selectCpus('cpus', request.cpus, free.slice().reverse())
              : selectCpus('cpus', request.cpus, free);
        const chunks = request.memory === undefined ? [] : this.#chunksToRemove(pool, request.memory);
        const freeDevices = pciIds(pool.devices);
        const notFree = devices.filter((d) => !freeDevices.includes(d));
        if (notFree.length > 0) {
          throw new MultikernelError('ERR_MK_RESOURCES', `device ${notFree.join(', ')} is not free in the pool (free: ${freeDevices.join(', ') || 'none'})`, { details: { notFree } });
        }
        return [
          ...cpus.map((id) => ({ op: 'cpu-remove' as const, target: 'pool' as const, id })),
          ...devices.map((pciId) => ({ op: 'device-remove' as const, target: 'pool' as const, pciId })),
          ...chunks.map((c) => ({ op: 'memory-remove' as const, target: 'pool' as const, base: c.base, size: c.size, numaNode: c.node })),
        ];
      },
      'pool shrink',
      options.signal,
    );
    return tx === undefined ? before! : this.snapshot();
  }

  #chunksToRemove(pool: PoolSnapshot, memory: NonNullable<PoolShrinkRequest['memory']>): PoolChunk[] {
    const unused = pool.memory.filter((c) => c.usedBytes === 0n);
    if (Array.isArray(memory)) {
      return memory.map(({ base }) => {
        const chunk = pool.memory.find((c) => c.base === base);
        if (chunk === undefined) invalid(`the pool has no memory chunk at 0x${base.toString(16)} (chunks: ${pool.memory.map((c) => `0x${c.base.toString(16)}`).join(', ')})`);
        if (chunk.usedBytes > 0n) {
          throw new MultikernelError('ERR_MK_RESOURCES', `the chunk at 0x${base.toString(16)} holds ${formatBytes(chunk.usedBytes)} of instance memory: delete those instances first`);
        }
        return chunk;
      });
    }
    const out = wholePieces(unused, parseBytes(memory, 'memory'));
    if (out === undefined) {
      throw new MultikernelError(
        'ERR_MK_RESOURCES',
        `the pool gives back whole chunks only (the kernel removes a chunk by its exact base and size); its unused chunks are ` +
          `${unused.map((c) => formatBytes(c.size)).join(', ') || 'none'}, which do not add up to ${formatBytes(parseBytes(memory))}`,
      );
    }
    return out;
  }

  /**
   * Gives everything back to the host: every CPU comes back online, every chunk is freed, every
   * device returns, in one transaction. Refused while instances exist (ERR_MK_POOL_BUSY).
   */
  async teardown(options: { signal?: AbortSignal } = {}): Promise<PoolSnapshot> {
    options.signal?.throwIfAborted();
    const before = await this.snapshot();
    if (before.instances.length > 0) {
      throw new MultikernelError('ERR_MK_POOL_BUSY', `the pool lends resources to ${before.instances.map((n) => `"${n}"`).join(', ')}: delete those instances first`, {
        details: { instances: before.instances },
      });
    }
    const ops: OverlayOp[] = [
      ...before.cpus.map((c) => ({ op: 'cpu-remove' as const, target: 'pool' as const, id: c.physicalId })),
      ...pciIds(before.devices).map((pciId) => ({ op: 'device-remove' as const, target: 'pool' as const, pciId })),
      ...before.memory.map((c) => ({ op: 'memory-remove' as const, target: 'pool' as const, base: c.base, size: c.size, numaNode: c.node })),
    ];
    if (ops.length === 0) return before;
    await this.#host.applyOverlay(ops, 'pool teardown', options.signal);
    return this.snapshot();
  }
}
