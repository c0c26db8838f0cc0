/**
 * Overlay transactions (overlay.c): the write handler of overlays/new, the operations of each
 * fragment in the kernel's order, and rmdir of a tx_N (the inverse operations in reverse order).
 */
import { decodeFdt } from '../../fdt/codec';
import type { FdtNode } from '../../fdt/types';
import { fdtCheckHeader } from './fdtcheck';
import type { Kernel } from './kernel';
import {
  child, childrenWithPrefix, cpuList, cpuReg, KErr, MAX_OVERLAY_BYTES, MAX_VIRTIO_DEVICES, MEMORY_BLOCK_SIZE, memReg,
  memSize, neg, numaOf, PAGE_SIZE, pciId, raw, str, u32At, u64At,
} from './props';
import type { SimInstance, SimTx } from './state';

type TargetKind = 'pool' | 'instances' | 'instance';
interface Target {
  kind: TargetKind;
  path: string;
  instance?: SimInstance;
}
type Op =
  | 'instance-create' | 'memory-remove' | 'memory-add' | 'cpu-remove' | 'cpu-add'
  | 'device-remove' | 'device-add' | 'instance-remove';
const ORDER: Op[] = [
  'instance-create', 'memory-remove', 'memory-add', 'cpu-remove', 'cpu-add', 'device-remove', 'device-add', 'instance-remove',
];
const POOL_ORDER: Op[] = [
  'instance-create', 'cpu-remove', 'device-remove', 'memory-remove', 'memory-add', 'cpu-add', 'device-add', 'instance-remove',
];

/** thrown by the 'overlay.apply' halfway fault after the first operation */
class Halfway extends Error {}

export class OverlayEngine {
  constructor(private readonly k: Kernel) {}

  /**
   * The write handler of overlays/new; returns the byte count, also for a failed transaction.
   * (System.writeFile always writes at offset 0, so the kernel's `off != 0` refusal cannot arise.)
   */
  async write(data: Uint8Array): Promise<number> {
    if (data.length === 0) throw new KErr('EINVAL');
    if (data.length > MAX_OVERLAY_BYTES) {
      this.k.log(`Overlay blob too large: ${data.length} bytes`);
      throw new KErr('EFBIG');
    }
    if (!fdtCheckHeader(data)) {
      this.k.log('Invalid overlay FDT header: -9');
      throw new KErr('EINVAL');
    }
    this.k.s.txCounter += 1;
    const tx: SimTx = {
      id: this.k.s.txCounter,
      status: 'pending',
      targetPath: 'unknown',
      resources: 'unknown',
      dtbo: Buffer.from(data).toString('base64'),
    };
    let root: FdtNode | undefined;
    try {
      root = decodeFdt(data).root;
    } catch {
      root = undefined;
    }
    if (root) {
      const res = str(root, 'mk,resources');
      if (res !== undefined && res.length > 0) tx.resources = res.slice(0, 255);
      const frags = this.fragments(root);
      const tp = frags.length > 0 ? str(frags[0]!, 'target-path') : undefined;
      if (tp) tx.targetPath = tp.slice(0, 127);
    }
    this.k.log(`Applying overlay transaction ${tx.id} (target=${tx.targetPath}, resources=${tx.resources})`);
    try {
      const halfway = (await this.k.env.faults.hit('overlay.apply', { id: tx.id, path: '/sys/fs/multikernel/overlays/new', syscall: 'write' })) === 'halfway';
      if (!root) throw new KErr('EINVAL');
      await this.walk(tx, root, false, halfway);
      tx.status = 'applied';
      this.k.log(`Overlay transaction ${tx.id} applied successfully`);
    } catch (e) {
      const code = e instanceof Halfway ? 'EIO' : (e as KErr).code;
      tx.status = 'failed';
      this.k.log(`Failed to apply overlay transaction ${tx.id}: ${neg(code)}`);
    }
    this.k.s.txs.push(tx);
    return data.length;
  }

  /** mk_overlay_rmdir */
  async rmdir(tx: SimTx): Promise<void> {
    this.k.log(`Removing overlay transaction ${tx.id}`);
    try {
      await this.k.env.faults.hit('overlay.rollback', { id: tx.id, syscall: 'rmdir' });
      await this.walk(tx, decodeFdt(Buffer.from(tx.dtbo, 'base64')).root, true, false);
    } catch (e) {
      const code = (e as KErr).code;
      this.k.log(`Failed to rollback overlay transaction ${tx.id}: ${neg(code)}`);
      tx.status = 'failed';
      throw new KErr(code);
    }
    this.k.log(`Overlay transaction ${tx.id} rolled back successfully`);
    this.k.s.txs.splice(this.k.s.txs.indexOf(tx), 1);
  }

  private fragments(root: FdtNode): FdtNode[] {
    return childrenWithPrefix(root, 'fragment@');
  }

  private async walk(tx: SimTx, root: FdtNode, undo: boolean, halfway: boolean): Promise<void> {
    const frags = this.fragments(root).map((f) => {
      const unit = f.name.slice('fragment@'.length);
      if (!/^(0x)?[0-9a-f]+$/i.test(unit) || parseInt(unit, 16) > 0xffffffff) {
        this.k.log(`Overlay: '${f.name}' has no valid unit address`);
        throw new KErr('EINVAL');
      }
      return { unit: parseInt(unit, 16), node: f };
    });
    if (frags.length === 0) {
      this.k.log(`${undo ? 'Rollback' : 'Overlay'} tx${tx.id}: no usable fragment@N node: -22`);
      throw new KErr('EINVAL');
    }
    frags.sort((a, b) => a.unit - b.unit);
    if (undo) frags.reverse();
    let done = 0;
    for (const { node: frag } of frags) {
      const target = this.resolveTarget(tx, frag);
      const overlay = child(frag, '__overlay__');
      if (!overlay) {
        this.k.log(`Overlay tx${tx.id}: fragment for ${target.path} has no __overlay__ node`);
        throw new KErr('EINVAL');
      }
      const order = target.kind === 'pool' ? POOL_ORDER : ORDER;
      for (const op of undo ? order.slice().reverse() : order) {
        const opNode = child(overlay, op);
        if (!opNode) continue;
        await this.runOp(tx, op, opNode, target, undo);
        done += 1;
        if (halfway && done === 1) throw new Halfway();
      }
    }
  }

  private resolveTarget(tx: SimTx, frag: FdtNode): Target {
    const path = str(frag, 'target-path');
    if (path === undefined) {
      this.k.log(`Overlay tx${tx.id}: fragment without a valid target-path`);
      throw new KErr('EINVAL');
    }
    if (path === '/resources') {
      if (!this.k.s.pool) {
        this.k.log(`Overlay tx${tx.id}: this kernel manages no pool, ${path} is not a valid target`);
        throw new KErr('EPERM');
      }
      return { kind: 'pool', path };
    }
    if (path === '/instances') return { kind: 'instances', path };
    const name = path.startsWith('/instances/') ? path.slice('/instances/'.length) : undefined;
    if (name === undefined || name === '' || name.includes('/')) {
      this.k.log(`Overlay tx${tx.id}: unsupported target-path '${path}'`);
      throw new KErr('EINVAL');
    }
    const instance = this.k.instanceByName(name);
    if (!instance) {
      this.k.log(`Overlay tx${tx.id}: instance '${name}' not found`);
      throw new KErr('ENOENT');
    }
    return { kind: 'instance', path, instance };
  }

  private async runOp(tx: SimTx, op: Op, n: FdtNode, target: Target, undo: boolean): Promise<void> {
    const namespaceOp = op === 'instance-create' || op === 'instance-remove';
    if (namespaceOp !== (target.kind === 'instances')) {
      this.k.log(`Overlay tx${tx.id}: ${op} rejected for ${target.path}`);
      throw new KErr('EINVAL');
    }
    switch (op) {
      case 'instance-create':
        return undo ? this.undoCreate(tx, n) : this.instanceCreate(tx, n);
      case 'instance-remove':
        return this.instanceRemove(tx, n, undo);
      case 'memory-add':
        return this.memory(tx, n, target, !undo, undo, true);
      case 'memory-remove':
        return this.memory(tx, n, target, undo, undo, false);
      case 'cpu-add':
        return this.cpus(tx, n, target, !undo);
      case 'cpu-remove':
        return this.cpus(tx, n, target, undo);
      case 'device-add':
        return this.devices(n, target, !undo);
      case 'device-remove':
        return this.devices(n, target, undo);
    }
  }

  private instanceName(tx: SimTx, n: FdtNode, op: string): string {
    const name = str(n, 'instance-name');
    if (name === undefined || name === '' || name.includes('/')) {
      this.k.log(`Overlay tx${tx.id}: ${op} requires a valid 'instance-name'`);
      throw new KErr('EINVAL');
    }
    return name;
  }

  private instanceCreate(tx: SimTx, n: FdtNode): void {
    const name = this.instanceName(tx, n, 'instance-create');
    const idProp = raw(n, 'id');
    const wanted = idProp && idProp.length === 4 ? u32At(idProp, 0) : -1;
    const res = child(n, 'resources');
    if (!res) {
      this.k.log(`Overlay tx${tx.id}: instance-create requires a 'resources' subnode`);
      throw new KErr('EINVAL');
    }
    if (this.k.instanceByName(name)) {
      this.k.log(`Overlay tx${tx.id}: instance '${name}' already exists`);
      throw new KErr('EEXIST');
    }
    if (wanted >= 0 && this.k.instanceById(wanted)) {
      this.k.log(`Overlay tx${tx.id}: instance ID ${wanted} is already in use`);
      throw new KErr('EEXIST');
    }
    // mk_dt_parse_resources (dts.c)
    if (raw(res, 'device-names')) throw new KErr('EINVAL');
    const mb = raw(res, 'memory-bytes');
    if (!mb || mb.length !== 8 || u64At(mb, 0) === 0 || u64At(mb, 0) % PAGE_SIZE !== 0) throw new KErr('EINVAL');
    const cpusProp = raw(res, 'cpus');
    const cpus = cpusProp ? cpuList(cpusProp) : [];
    const devices = (child(res, 'devices')?.children ?? []).filter((d) => raw(d, 'pci-id')).map(pciId);
    if ((child(res, 'virtio')?.children.length ?? 0) > MAX_VIRTIO_DEVICES) throw new KErr('E2BIG');
    // mk_create_instance_from_dtb (kernfs.c)
    if (wanted === 0) {
      this.k.log('Instance ID 0 is reserved for the host kernel');
      throw new KErr('ENOMEM');
    }
    let id = wanted;
    if (id < 0) for (id = 1; this.k.instanceById(id); id++);
    const region = this.k.mem.allocPool(u64At(mb, 0));
    const inst: SimInstance = { id, name, status: 'ready', panicked: false, cpus: [], memory: [region], devices: [] };
    for (const cpu of cpus) {
      if (this.k.isPoolCpu(cpu) && !this.k.owner(cpu) && !inst.cpus.includes(cpu)) inst.cpus.push(cpu);
      else this.k.log(`Instance '${name}': failed to reserve CPU ${cpu}, continuing without it`);
    }
    for (const dev of devices) {
      if (this.k.poolHasDevice(dev) && !this.k.deviceOwner(dev)) inst.devices.push(dev);
      else this.k.log(`Instance '${name}': failed to reserve device ${dev}, continuing without it`);
    }
    this.k.s.instances.push(inst);
    this.k.log(`Overlay tx${tx.id}: Instance '${name}' created successfully`);
  }

  private undoCreate(tx: SimTx, n: FdtNode): void {
    const name = this.instanceName(tx, n, 'instance-create');
    const inst = this.k.instanceByName(name);
    if (!inst) {
      this.k.log(`Rollback tx${tx.id}: instance '${name}' is already gone`);
      return;
    }
    this.destroy(tx, inst, 'Rollback');
  }

  private instanceRemove(tx: SimTx, n: FdtNode, undo: boolean): void {
    const name = this.instanceName(tx, n, 'instance-remove');
    if (undo) {
      this.k.log(`Rollback tx${tx.id}: cannot restore removed instance '${name}', apply an instance-create overlay`);
      return;
    }
    const inst = this.k.instanceByName(name);
    if (!inst) {
      this.k.log(`Overlay tx${tx.id}: instance '${name}' not found`);
      throw new KErr('ENOENT');
    }
    this.destroy(tx, inst, 'Overlay');
  }

  /** mk_instance_destroy (kernfs.c): only a `ready` instance goes; its resources return to the pool. */
  private destroy(tx: SimTx, inst: SimInstance, verb: string): void {
    if (inst.status !== 'ready') {
      this.k.log(`${verb} tx${tx.id}: Failed to remove instance '${inst.name}': -16`);
      throw new KErr('EBUSY');
    }
    this.k.s.instances.splice(this.k.s.instances.indexOf(inst), 1);
    this.k.log(`${verb} tx${tx.id}: Instance '${inst.name}' removed`);
  }

  /** A resource message to a running instance waits for its acknowledgement (messaging.c, core.c). */
  private async ack(inst: SimInstance): Promise<void> {
    if (inst.status !== 'active') return;
    await this.k.env.faults.hit('instance.ack', { id: inst.id });
    if (inst.panicked) {
      await this.k.env.sleep(this.k.env.resourceAckTimeoutMs);
      throw new KErr('ETIMEDOUT');
    }
  }

  private async memory(tx: SimTx, op: FdtNode, t: Target, give: boolean, undo: boolean, isAdd: boolean): Promise<void> {
    for (const item of childrenWithPrefix(op, 'memory@')) {
      if (t.kind === 'pool') {
        if (isAdd) {
          const node = numaOf(item);
          if (raw(item, 'reg')) throw new KErr('EINVAL');
          const size = memSize(item);
          if (undo) {
            this.k.log(`Rollback tx${tx.id}: cannot release the ${size >> 20} MB the pool grew by`);
            continue;
          }
          this.k.mem.growPool(size, node);
          continue;
        }
        const { base, size } = memReg(item);
        const node = numaOf(item);
        if (undo) {
          this.k.log(`Rollback tx${tx.id}: regrowing the pool by ${size >> 20} MB`);
          this.k.mem.growPool(size, node);
          continue;
        }
        this.k.mem.shrinkPool(base, size);
        continue;
      }
      const inst = t.instance!;
      const { base, size } = memReg(item);
      numaOf(item);
      if (give) {
        if (inst.status === 'active' && (base % MEMORY_BLOCK_SIZE !== 0 || size % MEMORY_BLOCK_SIZE !== 0)) throw new KErr('EINVAL');
        await this.ack(inst);
        inst.memory.push(this.k.mem.allocPool(size));
      } else {
        const r = inst.memory.findIndex((m) => m.base === base && m.size === size);
        if (r < 0) throw new KErr('ENOENT');
        await this.ack(inst);
        inst.memory.splice(r, 1);
      }
    }
  }

  private async cpus(tx: SimTx, op: FdtNode, t: Target, give: boolean): Promise<void> {
    for (const item of childrenWithPrefix(op, 'cpu@')) {
      const cpu = cpuReg(item);
      numaOf(item);
      if (t.kind === 'pool') {
        const pool = this.k.s.pool!;
        if (give) {
          const i = this.k.cpuIndex(cpu);
          if (i < 0) throw new KErr('ENODEV');
          if (pool.cpus.includes(cpu)) throw new KErr('EEXIST');
          if (this.k.s.topology.cpus[i]!.online === false) throw new KErr('EINVAL');
          if (i === 0) throw new KErr('EBUSY');
          if (pool.parkChunk === null) throw new KErr('ENOMEM');
          pool.cpus.push(cpu);
        } else {
          if (!pool.cpus.includes(cpu)) throw new KErr('EINVAL');
          if (this.k.owner(cpu)) throw new KErr('EBUSY');
          pool.cpus.splice(pool.cpus.indexOf(cpu), 1);
        }
        continue;
      }
      const inst = t.instance!;
      if (give) {
        if (!this.k.isPoolCpu(cpu)) throw new KErr('EINVAL');
        if (this.k.owner(cpu)) throw new KErr('EBUSY');
        await this.ack(inst);
        inst.cpus.push(cpu);
      } else {
        if (!inst.cpus.includes(cpu)) throw new KErr('EINVAL');
        await this.ack(inst);
        inst.cpus.splice(inst.cpus.indexOf(cpu), 1);
      }
      this.k.log(`Overlay tx${tx.id}: ${give ? '+' : '-'}cpu ${cpu} ${give ? '->' : 'from'} ${inst.name}`);
    }
  }

  private async devices(op: FdtNode, t: Target, give: boolean): Promise<void> {
    for (const item of childrenWithPrefix(op, 'pci@')) {
      const pci = pciId(item);
      if (t.kind === 'pool') {
        const pool = this.k.s.pool!;
        if (give) {
          if (!this.k.s.topology.pciDevices.includes(pci)) throw new KErr('ENODEV');
          if (this.k.poolHasDevice(pci)) throw new KErr('EEXIST');
          pool.devices.push({ name: str(item, 'alias') ?? item.name, pciId: pci });
        } else {
          if (!this.k.poolHasDevice(pci)) throw new KErr('ENOENT');
          if (this.k.deviceOwner(pci)) throw new KErr('EBUSY');
          pool.devices.splice(pool.devices.findIndex((d) => d.pciId === pci), 1);
        }
        continue;
      }
      const inst = t.instance!;
      if (give) {
        if (!this.k.poolHasDevice(pci)) throw new KErr('ENODEV');
        if (this.k.deviceOwner(pci)) throw new KErr('EBUSY');
        await this.ack(inst);
        inst.devices.push(pci);
      } else {
        if (!inst.devices.includes(pci)) throw new KErr('ENOENT');
        await this.ack(inst);
        inst.devices.splice(inst.devices.indexOf(pci), 1);
      }
    }
  }
}
