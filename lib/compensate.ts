/**
 * Undoing what a failed transaction left in effect, when the kernel's own undo cannot.
 *
 * `rmdir tx_N` runs the inverse of every operation of the transaction in reverse order, also of
 * those the failed transaction never reached (overlay.c mk_overlay_rmdir). The inverse of an
 * operation that never ran usually fails (removing a CPU that was never added: EBUSY), which
 * stops the rollback before it reaches the operations that did run; and some inverses only warn
 * (a pool memory-add, an instance-remove). So after a failed transaction the library compares
 * what the kernel shows with what it showed before the write, for the resources the operations
 * name, and writes one compensating transaction for what is still in effect.
 */
import { MK_DEVICE_TREE, instanceDir } from './kernfs';
import { parseInstance, parsePool, type InstanceTree, type PoolState } from './model/trees';
import type { OverlayOp } from './model/overlay';
import { allInstanceRegions, pciIds } from './readback';
import type { System } from './system/system';

interface InstanceView {
  tree: InstanceTree;
  regions: { base: bigint; size: bigint }[];
}

/** What the kernel shows of the resources a list of operations names. */
export interface StateView {
  pool: PoolState | undefined;
  instances: Map<string, InstanceView | undefined>;
}

function targets(ops: OverlayOp[]): string[] {
  const names = new Set<string>();
  for (const op of ops) {
    if (op.op === 'instance-create' || op.op === 'instance-remove') names.add(op.name);
    else if (op.target !== 'pool') names.add(op.target.instance);
  }
  return [...names];
}

export async function readView(system: System, ops: OverlayOp[]): Promise<StateView> {
  const pool = await system.readFile(MK_DEVICE_TREE).then(parsePool, () => undefined);
  const regions = await allInstanceRegions(system);
  const instances = new Map<string, InstanceView | undefined>();
  for (const name of targets(ops)) {
    const tree = await system.readFile(`${instanceDir(name)}/device_tree`).then(parseInstance, () => undefined);
    instances.set(name, tree && { tree, regions: regions.filter((r) => r.id === tree.id).map(({ base, size }) => ({ base, size })) });
  }
  return { pool, instances };
}

export interface Compensation {
  ops: OverlayOp[];
  /** what is in effect and cannot be undone, one line each */
  irreversible: string[];
}

/** The changes that take `now` back to `was` for the ids named, as add/remove pairs. */
function membership<T>(named: T[], was: T[], now: T[]): { add: T[]; remove: T[] } {
  const ids = [...new Set(named)];
  return { add: ids.filter((id) => was.includes(id) && !now.includes(id)), remove: ids.filter((id) => !was.includes(id) && now.includes(id)) };
}

function chunks<T extends { base: bigint }>(was: T[], now: T[]): { added: T[]; removed: T[] } {
  return { added: now.filter((c) => !was.some((w) => w.base === c.base)), removed: was.filter((w) => !now.some((c) => c.base === w.base)) };
}

/**
 * The operations that take the resources `ops` name from what `after` shows back to what
 * `before` showed. Memory is compared as a whole for each target an operation changes memory
 * of, since the kernel's rollback of a memory-remove that never ran grows a new chunk.
 */
export function compensatingOps(ops: OverlayOp[], before: StateView, after: StateView): Compensation {
  const out: OverlayOp[] = [];
  const irreversible: string[] = [];
  for (const op of ops) {
    if (op.op === 'instance-create' && !before.instances.get(op.name) && after.instances.get(op.name)) out.push({ op: 'instance-remove', name: op.name });
    if (op.op === 'instance-remove' && before.instances.get(op.name) && !after.instances.get(op.name)) irreversible.push(`instance "${op.name}" was removed and cannot be restored`);
  }
  const resourceOps = ops.filter((o): o is Exclude<OverlayOp, { op: 'instance-create' | 'instance-remove' }> => o.op !== 'instance-create' && o.op !== 'instance-remove');
  const on = (target: string | undefined) => resourceOps.filter((o) => (o.target === 'pool' ? undefined : o.target.instance) === target);
  const cpuIds = (list: typeof resourceOps) => list.flatMap((o) => (o.op === 'cpu-add' || o.op === 'cpu-remove' ? [o.id] : []));
  const devIds = (list: typeof resourceOps) => list.flatMap((o) => (o.op === 'device-add' || o.op === 'device-remove' ? [o.pciId] : []));
  const touchesMemory = (list: typeof resourceOps) => list.some((o) => o.op === 'memory-add' || o.op === 'memory-remove');

  const poolOps = on(undefined);
  if (poolOps.length > 0 && before.pool && after.pool) {
    const target = 'pool' as const;
    const cpus = membership(cpuIds(poolOps), before.pool.cpus, after.pool.cpus);
    out.push(...cpus.remove.map((id) => ({ op: 'cpu-remove' as const, target, id })), ...cpus.add.map((id) => ({ op: 'cpu-add' as const, target, id })));
    const devs = membership(devIds(poolOps), pciIds(before.pool.devices), pciIds(after.pool.devices));
    out.push(...devs.remove.map((pciId) => ({ op: 'device-remove' as const, target, pciId })), ...devs.add.map((pciId) => ({ op: 'device-add' as const, target, pciId })));
    if (touchesMemory(poolOps)) {
      const mem = chunks(before.pool.memory, after.pool.memory);
      out.push(...mem.added.map((c) => ({ op: 'memory-remove' as const, target, base: c.base, size: c.size, numaNode: c.numaNode })));
      out.push(...mem.removed.map((c) => ({ op: 'memory-add' as const, target, size: c.size, numaNode: c.numaNode })));
    }
  }
  for (const [name, was] of before.instances) {
    const now = after.instances.get(name);
    const list = on(name);
    if (!was || !now || list.length === 0) continue;
    const target = { instance: name };
    const cpus = membership(cpuIds(list), was.tree.cpus, now.tree.cpus);
    out.push(...cpus.remove.map((id) => ({ op: 'cpu-remove' as const, target, id })), ...cpus.add.map((id) => ({ op: 'cpu-add' as const, target, id })));
    const devs = membership(devIds(list), pciIds(was.tree.devices), pciIds(now.tree.devices));
    out.push(...devs.remove.map((pciId) => ({ op: 'device-remove' as const, target, pciId })), ...devs.add.map((pciId) => ({ op: 'device-add' as const, target, pciId })));
    if (touchesMemory(list)) {
      const mem = chunks(was.regions, now.regions);
      out.push(...mem.added.map((r) => ({ op: 'memory-remove' as const, target, base: r.base, size: r.size })));
      out.push(...mem.removed.map((r) => ({ op: 'memory-add' as const, target, base: 0n, size: r.size })));
    }
  }
  return { ops: out, irreversible };
}
