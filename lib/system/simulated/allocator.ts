/**
 * Pool memory (mem.c@26ba325b, arch/x86/multikernel/spawn.c@077c53dc for the park area): growing
 * the pool from host RAM (mk_pool_mem_grow, alloc_contig_pages), carving instance memory out of
 * the per-node gen_pools (multikernel_alloc, multikernel_create_instance_pool), and returning
 * whole chunks (mk_pool_mem_shrink).
 *
 * gen_pool_add puts a chunk at the head of its pool's list, so an allocation looks at the newest
 * chunk of a node first and takes the lowest free range there (first fit). The pool park area
 * (page tables, park page, wake slot) is pool memory in the kernel; the simulator does not carve
 * its few pages out of a chunk, it only records which chunk holds it.
 */
import { HOST_RESERVED_BYTES, KErr, MAX_NUMNODES, PAGE_SIZE, hex, mb, pa } from './props';
import { MiB, type MemRange, type SimState } from './state';

export class MemoryAllocator {
  constructor(
    private readonly s: SimState,
    private readonly log: (line: string) => void,
  ) {}

  /** Ranges of host RAM per NUMA node: RAM is split evenly, node 0 starts after the host's own GiB. */
  private nodeRange(node: number): { start: number; end: number } {
    const per = Math.floor(this.s.topology.memoryBytes / this.s.topology.numaNodes);
    const start = node * per;
    return { start: node === 0 ? Math.min(HOST_RESERVED_BYTES, per) : start, end: start + per };
  }

  nodeOnline(node: number): boolean {
    return node >= 0 && node < this.s.topology.numaNodes;
  }

  /** alloc_contig_pages stand-in: first fit, 2 MiB aligned, in the node (or any node for -1). */
  private allocHost(size: number, node: number): MemRange | undefined {
    const nodes = node < 0 ? [...Array(this.s.topology.numaNodes).keys()] : [node];
    for (const n of nodes) {
      const { start, end } = this.nodeRange(n);
      const taken = this.s.pool!.memory.slice().sort((a, b) => a.base - b.base);
      let base = start;
      for (const t of taken) {
        if (t.base + t.size <= base || t.base >= end) continue;
        if (t.base - base >= size) break;
        base = Math.ceil((t.base + t.size) / (2 * MiB)) * 2 * MiB;
      }
      if (base + size <= end) return { base, size, node: n };
    }
    return undefined;
  }

  /** mk_pool_mem_grow: EINVAL for a node that is out of range or offline, ENOMEM when no range fits. */
  growPool(size: number, node: number): MemRange {
    const pool = this.s.pool!;
    if (node !== -1 && (node < 0 || node >= MAX_NUMNODES || !this.nodeOnline(node))) throw new KErr('EINVAL');
    const chunk = this.allocHost(size, node);
    if (!chunk) throw new KErr('ENOMEM');
    pool.memory.push(chunk);
    // mk_arch_pool_chunk_added: a pool without a park area builds it in the chunk that refills it
    pool.parkChunk ??= chunk.base;
    this.log(`Multikernel pool: added ${pa(chunk.base)} (${mb(size)} MB) on node ${chunk.node}`);
    return chunk;
  }

  /** Allocations inside a chunk: instance regions (and `extra` ones being made), ascending. */
  private used(chunk: MemRange, extra: MemRange[] = []): MemRange[] {
    return [...this.s.instances.flatMap((i) => i.memory), ...extra]
      .filter((r) => r.base >= chunk.base && r.base < chunk.base + chunk.size)
      .sort((a, b) => a.base - b.base);
  }

  /** Free bytes over every chunk (mk_pool_avail_bytes). */
  availBytes(): number {
    return (this.s.pool?.memory ?? []).reduce((a, c) => a + c.size - this.used(c).reduce((u, r) => u + r.size, 0), 0);
  }

  /** Chunks in the order an allocation tries them: online nodes ascending, newest chunk first. */
  private allocOrder(node: number): MemRange[] {
    const chunks = (this.s.pool?.memory ?? []).slice().reverse();
    if (node >= 0) return chunks.filter((c) => c.node === node);
    return chunks.sort((a, b) => a.node - b.node);
  }

  /** multikernel_alloc: the first free range of `size` bytes, or undefined. */
  alloc(size: number, node: number, pending: MemRange[] = []): MemRange | undefined {
    for (const chunk of this.allocOrder(node)) {
      let base = chunk.base;
      for (const r of this.used(chunk, pending)) {
        if (r.base - base >= size) break;
        base = Math.max(base, r.base + r.size);
      }
      if (base + size <= chunk.base + chunk.size) return { base, size, node: chunk.node };
    }
    return undefined;
  }

  /**
   * multikernel_create_instance_pool (mem.c) for mk_instance_transfer_memory (core.c): take
   * `size` bytes in pieces, halving a piece that does not fit until it does. The instance's
   * regions are its gen_pool's chunks, which list the newest piece first.
   */
  instancePool(size: number, node: number, instanceId: number): MemRange[] {
    const pieces: MemRange[] = [];
    let remaining = size;
    while (remaining > 0) {
      let piece = remaining;
      let got = this.alloc(piece, node, pieces);
      while (!got && piece > PAGE_SIZE) {
        piece = Math.floor(piece / 2 / PAGE_SIZE) * PAGE_SIZE;
        got = this.alloc(piece, node, pieces);
      }
      if (!got) {
        this.log(`Failed to allocate chunk ${pieces.length + 1} for instance ${instanceId} (remaining: ${remaining} bytes)`);
        throw new KErr('ENOMEM');
      }
      pieces.push(got);
      remaining -= piece;
    }
    return pieces.reverse();
  }

  /** mk_pool_park_uses */
  parkUses(base: number, size: number): boolean {
    const park = this.s.pool!.parkChunk;
    return park !== null && park >= base && park < base + size;
  }

  /** __mk_pool_park_setup: the park area goes where a NUMA_NO_NODE page allocation lands. */
  parkSetup(): void {
    const pool = this.s.pool!;
    pool.parkChunk = this.allocOrder(-1)[0]?.base ?? null;
  }

  /** mk_pool_mem_shrink: ENOENT unless base and size name a chunk exactly, EBUSY while it has allocations. */
  private shrink(base: number, size: number): void {
    const pool = this.s.pool!;
    const i = pool.memory.findIndex((m) => m.base === base && m.size === size);
    if (i < 0) throw new KErr('ENOENT');
    if (this.used(pool.memory[i]!).length > 0 || pool.parkChunk === base) throw new KErr('EBUSY');
    pool.memory.splice(i, 1);
    this.log(`Multikernel pool: removed ${pa(base)}-${pa(base + size - 1)} (${mb(size)} MB)`);
  }

  /**
   * mk_overlay_pool_mem_remove (overlay.c@14213ee5): a chunk the park area pins comes out only
   * once every pool CPU is home (mk_pool_park_teardown), and the area is rebuilt in what is left.
   */
  removeChunk(txId: number, base: number, size: number): void {
    const pool = this.s.pool!;
    try {
      this.shrink(base, size);
      return;
    } catch (e) {
      if ((e as KErr).code !== 'EBUSY' || !this.parkUses(base, size)) {
        this.log(`Failed to resize the pool: -${(e as KErr).code === 'ENOENT' ? 2 : 16}`);
        throw e;
      }
    }
    if (pool.cpus.length > 0) {
      this.log(`Overlay tx${txId}: chunk 0x${hex(base)}+0x${hex(size)} holds the pool park area; return every pool CPU first (-16)`);
      throw new KErr('EBUSY');
    }
    pool.parkChunk = null;
    try {
      this.shrink(base, size);
    } catch (e) {
      this.log('Failed to resize the pool: -16');
      this.parkSetup();
      throw e;
    }
    this.parkSetup();
  }
}
