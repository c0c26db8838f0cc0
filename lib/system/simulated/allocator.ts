/**
 * Pool memory (mem.c, baseline.c): growing the pool from host RAM (alloc_contig_pages), carving
 * instance regions out of free pool memory, and returning whole chunks to the host.
 */
import { HOST_RESERVED_BYTES, KErr } from './props';
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

  /** alloc_contig_pages stand-in: first fit, 2 MiB aligned, in the node (or any node for -1). */
  allocHost(size: number, node: number): MemRange {
    const nodes = node < 0 ? [...Array(this.s.topology.numaNodes).keys()] : [node];
    for (const n of nodes) {
      if (n >= this.s.topology.numaNodes) continue;
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
    throw new KErr('ENOMEM');
  }

  /** Carve `size` bytes for an instance out of free pool memory (first fit inside one chunk). */
  allocPool(size: number): MemRange {
    for (const chunk of (this.s.pool?.memory ?? []).slice().sort((a, b) => a.base - b.base)) {
      const used = this.s.instances
        .flatMap((i) => i.memory)
        .filter((r) => r.base >= chunk.base && r.base < chunk.base + chunk.size)
        .sort((a, b) => a.base - b.base);
      let base = chunk.base;
      for (const r of used) {
        if (r.base - base >= size) break;
        base = r.base + r.size;
      }
      if (base + size <= chunk.base + chunk.size) return { base, size, node: chunk.node };
    }
    throw new KErr('ENOMEM');
  }

  growPool(size: number, node: number): void {
    const pool = this.s.pool!;
    const chunk = this.allocHost(size, node);
    pool.memory.push(chunk);
    pool.parkChunk ??= chunk.base;
  }

  /** mk_overlay_pool_mem_remove: a whole chunk, not in use, and not the park area while pool CPUs remain. */
  shrinkPool(base: number, size: number): void {
    const pool = this.s.pool!;
    const i = pool.memory.findIndex((m) => m.base === base && m.size === size);
    if (i < 0) throw new KErr('EINVAL');
    if (this.s.instances.some((inst) => inst.memory.some((r) => r.base >= base && r.base < base + size))) throw new KErr('EBUSY');
    if (pool.parkChunk === base && pool.cpus.length > 0) {
      this.log(`Overlay: chunk 0x${base.toString(16)}+0x${size.toString(16)} holds the pool park area; return every pool CPU first (-16)`);
      throw new KErr('EBUSY');
    }
    pool.memory.splice(i, 1);
    if (pool.parkChunk === base) pool.parkChunk = pool.memory[0]?.base ?? null;
  }
}
