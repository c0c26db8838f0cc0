/**
 * The simulated multikernel kernel: baseline pool, overlay transactions, instances, kexec and the
 * multikernel reboot commands, acting on a `SimState`. Every rule names the kernel source it
 * follows; docs/kernel-interface.md lists them with the errno of each refusal.
 *
 * Failures inside the kernel are thrown as `KErr` (an errno name) and turned into Node-shaped
 * system errors, or into a failed transaction, by the caller.
 */
import { constants as osConstants } from 'node:os';
import { decodeFdt } from '../../fdt/codec';
import type { FdtNode, FdtProperty } from '../../fdt/types';
import { systemError } from '../../errors';
import {
  COMMAND_LINE_SIZE,
  KEXEC_FILE_DEBUG,
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_ON_CRASH,
  KEXEC_FILE_UNLOAD,
  KEXEC_MK_ID_MASK,
  KEXEC_MULTIKERNEL,
  kexecGetMkId,
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
} from '../../uapi';
import type { FaultInjector } from './faults';
import { fdtCheckHeader, fdtTotalSize } from './fdtcheck';
import { GiB, MiB, type MemRange, type SimImage, type SimInstance, type SimState, type SimTx } from './state';

export const PAGE_SIZE = 4096;
/** x86 memory_block_size: hot-added memory of a running instance must be aligned to it */
export const MEMORY_BLOCK_SIZE = 128 * MiB;
/** first 1 GiB of node 0 belongs to the host kernel and is never given to the pool */
export const HOST_RESERVED_BYTES = 1 * GiB;
const MAX_NUMNODES = 64;
const MAX_VIRTIO_DEVICES = 16;
const MAX_OVERLAY_BYTES = 1024 * 1024;

/** A kernel-internal failure: an errno name. */
export class KErr extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

const errnoByName = osConstants.errno as Record<string, number>;

/** "-17" as the kernel prints an error code with %d */
function neg(code: string): string {
  return `-${errnoByName[code]}`;
}

export interface KernelEnv {
  faults: FaultInjector;
  arch: 'x86_64' | 'arm64';
  stockKernel: boolean;
  haltTimeoutMs: number;
  /** how long a resource change to a running instance waits for its acknowledgement (kernel: 10 s) */
  resourceAckTimeoutMs: number;
  sleep(ms: number): Promise<void>;
  /** tells the console/vsock side about instance life-cycle events, after the state was saved */
  events: { started(id: number): void; stopped(id: number, how: 'shutdown' | 'forced'): void };
}

export interface ImageFile {
  name: string;
  bytes: Uint8Array;
}

// ---------- property readers with the kernel's exact length rules ----------

function raw(n: FdtNode, name: string): Uint8Array | undefined {
  return n.properties.find((p: FdtProperty) => p.name === name)?.value;
}
function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
function u32At(b: Uint8Array, i: number): number {
  return dv(b).getUint32(i * 4);
}
function u64At(b: Uint8Array, i: number): number {
  return Number(dv(b).getBigUint64(i * 8));
}
/** a NUL-terminated string property, or undefined when it is missing or malformed */
function str(n: FdtNode, name: string): string | undefined {
  const b = raw(n, name);
  if (!b || b.length === 0 || b[b.length - 1] !== 0) return undefined;
  return Buffer.from(b.subarray(0, b.indexOf(0))).toString('utf8');
}
function child(n: FdtNode, name: string): FdtNode | undefined {
  return n.children.find((c) => c.name === name);
}
function childrenWithPrefix(n: FdtNode, prefix: string): FdtNode[] {
  return n.children.filter((c) => c.name.startsWith(prefix));
}
function numaOf(n: FdtNode): number {
  const b = raw(n, 'numa-node-id');
  if (!b) return -1;
  if (b.length !== 4 || u32At(b, 0) >= MAX_NUMNODES) throw new KErr('EINVAL');
  return u32At(b, 0);
}
function memSize(n: FdtNode): number {
  const b = raw(n, 'size');
  if (!b || b.length !== 8) throw new KErr('EINVAL');
  const size = u64At(b, 0);
  if (size === 0 || size % PAGE_SIZE !== 0) throw new KErr('EINVAL');
  return size;
}
function memReg(n: FdtNode): { base: number; size: number } {
  const b = raw(n, 'reg');
  if (!b || b.length !== 16) throw new KErr('EINVAL');
  return { base: u64At(b, 0), size: u64At(b, 1) };
}
function cpuReg(n: FdtNode): number {
  const b = raw(n, 'reg');
  if (!b || (b.length !== 4 && b.length !== 8)) throw new KErr('EINVAL');
  return b.length === 8 ? u64At(b, 0) : u32At(b, 0);
}
function pciId(n: FdtNode): string {
  const s = str(n, 'pci-id');
  const m = s === undefined ? null : /^([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\.([0-9a-f]+)/i.exec(s);
  if (!m) throw new KErr('EINVAL');
  const h = (x: string, w: number): string => parseInt(x, 16).toString(16).padStart(w, '0');
  return `${h(m[1]!, 4)}:${h(m[2]!, 2)}:${h(m[3]!, 2)}.${parseInt(m[4]!, 16).toString(16)}`;
}
/** u64 cells of a `cpus` property: non-zero multiple of 8 bytes */
function cpuList(b: Uint8Array): number[] {
  if (b.length === 0 || b.length % 8 !== 0) throw new KErr('EINVAL');
  return Array.from({ length: b.length / 8 }, (_, i) => u64At(b, i));
}

function decodeOrEinval(blob: Uint8Array): FdtNode {
  try {
    return decodeFdt(blob).root;
  } catch {
    throw new KErr('EINVAL');
  }
}

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

export class Kernel {
  constructor(readonly s: SimState, readonly env: KernelEnv) {}

  log(line: string): void {
    this.s.dmesg.push(line);
    if (this.s.dmesg.length > 2000) this.s.dmesg.splice(0, this.s.dmesg.length - 2000);
  }

  // ---------------------------------------------------------------- topology helpers

  cpuIndex(apicId: number): number {
    return this.s.topology.cpus.findIndex((c) => c.apicId === apicId);
  }
  isPoolCpu(apicId: number): boolean {
    return this.s.pool !== null && this.s.pool.cpus.includes(apicId);
  }
  owner(apicId: number): SimInstance | undefined {
    return this.s.instances.find((i) => i.cpus.includes(apicId));
  }
  instanceByName(name: string): SimInstance | undefined {
    return this.s.instances.find((i) => i.name === name);
  }
  instanceById(id: number): SimInstance | undefined {
    return this.s.instances.find((i) => i.id === id);
  }

  // ---------------------------------------------------------------- memory

  /** Ranges of host RAM per NUMA node: RAM is split evenly, node 0 starts after the host's own GiB. */
  private nodeRange(node: number): { start: number; end: number } {
    const per = Math.floor(this.s.topology.memoryBytes / this.s.topology.numaNodes);
    const start = node * per;
    return { start: node === 0 ? Math.min(HOST_RESERVED_BYTES, per) : start, end: start + per };
  }

  /** alloc_contig_pages stand-in: first fit, 2 MiB aligned, in the node (or any node for -1). */
  private allocHost(size: number, node: number): MemRange {
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
  private allocPool(size: number): MemRange {
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

  private growPool(size: number, node: number): void {
    const pool = this.s.pool!;
    const chunk = this.allocHost(size, node);
    pool.memory.push(chunk);
    pool.parkChunk ??= chunk.base;
  }

  // ---------------------------------------------------------------- baseline (kernfs.c, baseline.c)

  writeBaseline(data: Uint8Array): number {
    if (!fdtCheckHeader(data) || fdtTotalSize(data) !== data.length) throw new KErr('EINVAL');
    const root = decodeOrEinval(data);
    const instances = child(root, 'instances');
    if (instances && instances.children.length > 0) {
      this.log('Device tree contains kernel instances. Host kernel configuration must not contain instances.');
      throw new KErr('EINVAL');
    }
    if (this.s.pool) {
      this.log('Baseline validation and initialization failed: -16');
      throw new KErr('EBUSY');
    }
    const res = child(root, 'resources');
    if (!res) throw this.baselineFail('EINVAL');
    if (raw(res, 'memory-base') || raw(res, 'memory-bytes')) throw this.baselineFail('EINVAL');
    const cpusProp = raw(res, 'cpus');
    if (!cpusProp) throw this.baselineFail('EINVAL');
    const cpus = this.guard(() => cpuList(cpusProp));
    const mems = childrenWithPrefix(res, 'memory@').map((m) => this.guard(() => ({ size: memSize(m), node: numaOf(m) })));
    if (mems.length === 0) throw this.baselineFail('EINVAL');
    const devs = child(res, 'devices')?.children ?? [];
    const devices = devs.map((d) => ({ name: d.name, type: str(d, 'device-type'), pci: raw(d, 'pci-id') ? this.guard(() => pciId(d)) : undefined }));
    for (const id of cpus) this.checkJoinable(id, cpus.filter((c) => c === id).length > 1);
    for (const d of devices) {
      if (d.type === 'pci' && (d.pci === undefined || !this.s.topology.pciDevices.includes(d.pci))) throw this.baselineFail('ENODEV');
    }
    this.s.pool = { cpus: [], memory: [], devices: [], parkChunk: null };
    try {
      for (const m of mems) this.growPool(m.size, m.node);
    } catch (e) {
      this.s.pool = null;
      throw this.baselineFail((e as KErr).code);
    }
    this.s.pool.cpus.push(...cpus);
    for (const d of devices) if (d.pci !== undefined) this.s.pool.devices.push({ name: d.name, pciId: d.pci });
    this.log(`Multikernel pool initialized: ${cpus.length} CPUs, ${mems.reduce((a, m) => a + m.size, 0) >> 20} MB`);
    return data.length;
  }

  private baselineFail(code: string): KErr {
    this.log(`Baseline validation and initialization failed: ${neg(code)}`);
    return new KErr(code);
  }
  private guard<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw this.baselineFail((e as KErr).code);
    }
  }

  /** A host CPU that may depart into the pool (hotplug.c, baseline.c). */
  private checkJoinable(apicId: number, duplicate: boolean): void {
    const i = this.cpuIndex(apicId);
    if (i < 0) throw this.baselineFail('ENODEV');
    if (duplicate || this.isPoolCpu(apicId)) throw this.baselineFail('EEXIST');
    if (this.s.topology.cpus[i]!.online === false) throw this.baselineFail('EINVAL');
    if (i === 0) throw this.baselineFail('EBUSY'); // the boot CPU cannot be taken down
  }

  // ---------------------------------------------------------------- overlays (overlay.c)

  /**
   * The write handler of overlays/new; returns the byte count, also for a failed transaction.
   * (System.writeFile always writes at offset 0, so the kernel's `off != 0` refusal cannot arise.)
   */
  async writeOverlay(data: Uint8Array): Promise<number> {
    if (data.length === 0) throw new KErr('EINVAL');
    if (data.length > MAX_OVERLAY_BYTES) {
      this.log(`Overlay blob too large: ${data.length} bytes`);
      throw new KErr('EFBIG');
    }
    if (!fdtCheckHeader(data)) {
      this.log('Invalid overlay FDT header: -9');
      throw new KErr('EINVAL');
    }
    this.s.txCounter += 1;
    const tx: SimTx = {
      id: this.s.txCounter,
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
    this.log(`Applying overlay transaction ${tx.id} (target=${tx.targetPath}, resources=${tx.resources})`);
    try {
      const halfway = (await this.env.faults.hit('overlay.apply', { id: tx.id, path: '/sys/fs/multikernel/overlays/new', syscall: 'write' })) === 'halfway';
      if (!root) throw new KErr('EINVAL');
      await this.walk(tx, root, false, halfway);
      tx.status = 'applied';
      this.log(`Overlay transaction ${tx.id} applied successfully`);
    } catch (e) {
      const code = e instanceof Halfway ? 'EIO' : (e as KErr).code;
      tx.status = 'failed';
      this.log(`Failed to apply overlay transaction ${tx.id}: ${neg(code)}`);
    }
    this.s.txs.push(tx);
    return data.length;
  }

  /** mk_overlay_rmdir */
  async rmdirTx(tx: SimTx): Promise<void> {
    this.log(`Removing overlay transaction ${tx.id}`);
    try {
      await this.env.faults.hit('overlay.rollback', { id: tx.id, syscall: 'rmdir' });
      await this.walk(tx, decodeFdt(Buffer.from(tx.dtbo, 'base64')).root, true, false);
    } catch (e) {
      const code = (e as KErr).code;
      this.log(`Failed to rollback overlay transaction ${tx.id}: ${neg(code)}`);
      tx.status = 'failed';
      throw new KErr(code);
    }
    this.log(`Overlay transaction ${tx.id} rolled back successfully`);
    this.s.txs.splice(this.s.txs.indexOf(tx), 1);
  }

  private fragments(root: FdtNode): FdtNode[] {
    return childrenWithPrefix(root, 'fragment@');
  }

  private async walk(tx: SimTx, root: FdtNode, undo: boolean, halfway: boolean): Promise<void> {
    const frags = this.fragments(root).map((f) => {
      const unit = f.name.slice('fragment@'.length);
      if (!/^(0x)?[0-9a-f]+$/i.test(unit) || parseInt(unit, 16) > 0xffffffff) {
        this.log(`Overlay: '${f.name}' has no valid unit address`);
        throw new KErr('EINVAL');
      }
      return { unit: parseInt(unit, 16), node: f };
    });
    if (frags.length === 0) {
      this.log(`${undo ? 'Rollback' : 'Overlay'} tx${tx.id}: no usable fragment@N node: -22`);
      throw new KErr('EINVAL');
    }
    frags.sort((a, b) => a.unit - b.unit);
    if (undo) frags.reverse();
    let done = 0;
    for (const { node: frag } of frags) {
      const target = this.resolveTarget(tx, frag);
      const overlay = child(frag, '__overlay__');
      if (!overlay) {
        this.log(`Overlay tx${tx.id}: fragment for ${target.path} has no __overlay__ node`);
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
      this.log(`Overlay tx${tx.id}: fragment without a valid target-path`);
      throw new KErr('EINVAL');
    }
    if (path === '/resources') {
      if (!this.s.pool) {
        this.log(`Overlay tx${tx.id}: this kernel manages no pool, ${path} is not a valid target`);
        throw new KErr('EPERM');
      }
      return { kind: 'pool', path };
    }
    if (path === '/instances') return { kind: 'instances', path };
    const name = path.startsWith('/instances/') ? path.slice('/instances/'.length) : undefined;
    if (name === undefined || name === '' || name.includes('/')) {
      this.log(`Overlay tx${tx.id}: unsupported target-path '${path}'`);
      throw new KErr('EINVAL');
    }
    const instance = this.instanceByName(name);
    if (!instance) {
      this.log(`Overlay tx${tx.id}: instance '${name}' not found`);
      throw new KErr('ENOENT');
    }
    return { kind: 'instance', path, instance };
  }

  private async runOp(tx: SimTx, op: Op, n: FdtNode, target: Target, undo: boolean): Promise<void> {
    const namespaceOp = op === 'instance-create' || op === 'instance-remove';
    if (namespaceOp !== (target.kind === 'instances')) {
      this.log(`Overlay tx${tx.id}: ${op} rejected for ${target.path}`);
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
      this.log(`Overlay tx${tx.id}: ${op} requires a valid 'instance-name'`);
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
      this.log(`Overlay tx${tx.id}: instance-create requires a 'resources' subnode`);
      throw new KErr('EINVAL');
    }
    if (this.instanceByName(name)) {
      this.log(`Overlay tx${tx.id}: instance '${name}' already exists`);
      throw new KErr('EEXIST');
    }
    if (wanted >= 0 && this.instanceById(wanted)) {
      this.log(`Overlay tx${tx.id}: instance ID ${wanted} is already in use`);
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
      this.log('Instance ID 0 is reserved for the host kernel');
      throw new KErr('ENOMEM');
    }
    let id = wanted;
    if (id < 0) for (id = 1; this.instanceById(id); id++);
    const region = this.allocPool(u64At(mb, 0));
    const inst: SimInstance = { id, name, status: 'ready', panicked: false, cpus: [], memory: [region], devices: [] };
    for (const cpu of cpus) {
      if (this.isPoolCpu(cpu) && !this.owner(cpu) && !inst.cpus.includes(cpu)) inst.cpus.push(cpu);
      else this.log(`Instance '${name}': failed to reserve CPU ${cpu}, continuing without it`);
    }
    for (const dev of devices) {
      if (this.poolHasDevice(dev) && !this.deviceOwner(dev)) inst.devices.push(dev);
      else this.log(`Instance '${name}': failed to reserve device ${dev}, continuing without it`);
    }
    this.s.instances.push(inst);
    this.log(`Overlay tx${tx.id}: Instance '${name}' created successfully`);
  }

  private undoCreate(tx: SimTx, n: FdtNode): void {
    const name = this.instanceName(tx, n, 'instance-create');
    const inst = this.instanceByName(name);
    if (!inst) {
      this.log(`Rollback tx${tx.id}: instance '${name}' is already gone`);
      return;
    }
    this.destroy(tx, inst, 'Rollback');
  }

  private instanceRemove(tx: SimTx, n: FdtNode, undo: boolean): void {
    const name = this.instanceName(tx, n, 'instance-remove');
    if (undo) {
      this.log(`Rollback tx${tx.id}: cannot restore removed instance '${name}', apply an instance-create overlay`);
      return;
    }
    const inst = this.instanceByName(name);
    if (!inst) {
      this.log(`Overlay tx${tx.id}: instance '${name}' not found`);
      throw new KErr('ENOENT');
    }
    this.destroy(tx, inst, 'Overlay');
  }

  /** mk_instance_destroy (kernfs.c): only a `ready` instance goes; its resources return to the pool. */
  private destroy(tx: SimTx, inst: SimInstance, verb: string): void {
    if (inst.status !== 'ready') {
      this.log(`${verb} tx${tx.id}: Failed to remove instance '${inst.name}': -16`);
      throw new KErr('EBUSY');
    }
    this.s.instances.splice(this.s.instances.indexOf(inst), 1);
    this.log(`${verb} tx${tx.id}: Instance '${inst.name}' removed`);
  }

  /** A resource message to a running instance waits for its acknowledgement (messaging.c, core.c). */
  private async ack(inst: SimInstance): Promise<void> {
    if (inst.status !== 'active') return;
    await this.env.faults.hit('instance.ack', { id: inst.id });
    if (inst.panicked) {
      await this.env.sleep(this.env.resourceAckTimeoutMs);
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
            this.log(`Rollback tx${tx.id}: cannot release the ${size >> 20} MB the pool grew by`);
            continue;
          }
          this.growPool(size, node);
          continue;
        }
        const { base, size } = memReg(item);
        const node = numaOf(item);
        if (undo) {
          this.log(`Rollback tx${tx.id}: regrowing the pool by ${size >> 20} MB`);
          this.growPool(size, node);
          continue;
        }
        this.shrinkPool(base, size);
        continue;
      }
      const inst = t.instance!;
      const { base, size } = memReg(item);
      numaOf(item);
      if (give) {
        if (inst.status === 'active' && (base % MEMORY_BLOCK_SIZE !== 0 || size % MEMORY_BLOCK_SIZE !== 0)) throw new KErr('EINVAL');
        await this.ack(inst);
        inst.memory.push(this.allocPool(size));
      } else {
        const r = inst.memory.findIndex((m) => m.base === base && m.size === size);
        if (r < 0) throw new KErr('ENOENT');
        await this.ack(inst);
        inst.memory.splice(r, 1);
      }
    }
  }

  /** mk_overlay_pool_mem_remove: a whole chunk, not in use, and not the park area while pool CPUs remain. */
  private shrinkPool(base: number, size: number): void {
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

  private async cpus(tx: SimTx, op: FdtNode, t: Target, give: boolean): Promise<void> {
    for (const item of childrenWithPrefix(op, 'cpu@')) {
      const cpu = cpuReg(item);
      numaOf(item);
      if (t.kind === 'pool') {
        const pool = this.s.pool!;
        if (give) {
          const i = this.cpuIndex(cpu);
          if (i < 0) throw new KErr('ENODEV');
          if (pool.cpus.includes(cpu)) throw new KErr('EEXIST');
          if (this.s.topology.cpus[i]!.online === false) throw new KErr('EINVAL');
          if (i === 0) throw new KErr('EBUSY');
          if (pool.parkChunk === null) throw new KErr('ENOMEM');
          pool.cpus.push(cpu);
        } else {
          if (!pool.cpus.includes(cpu)) throw new KErr('EINVAL');
          if (this.owner(cpu)) throw new KErr('EBUSY');
          pool.cpus.splice(pool.cpus.indexOf(cpu), 1);
        }
        continue;
      }
      const inst = t.instance!;
      if (give) {
        if (!this.isPoolCpu(cpu)) throw new KErr('EINVAL');
        if (this.owner(cpu)) throw new KErr('EBUSY');
        await this.ack(inst);
        inst.cpus.push(cpu);
      } else {
        if (!inst.cpus.includes(cpu)) throw new KErr('EINVAL');
        await this.ack(inst);
        inst.cpus.splice(inst.cpus.indexOf(cpu), 1);
      }
      this.log(`Overlay tx${tx.id}: ${give ? '+' : '-'}cpu ${cpu} ${give ? '->' : 'from'} ${inst.name}`);
    }
  }

  private poolHasDevice(pci: string): boolean {
    return this.s.pool !== null && this.s.pool.devices.some((d) => d.pciId === pci);
  }
  private deviceOwner(pci: string): SimInstance | undefined {
    return this.s.instances.find((i) => i.devices.includes(pci));
  }

  private async devices(op: FdtNode, t: Target, give: boolean): Promise<void> {
    for (const item of childrenWithPrefix(op, 'pci@')) {
      const pci = pciId(item);
      if (t.kind === 'pool') {
        const pool = this.s.pool!;
        if (give) {
          if (!this.s.topology.pciDevices.includes(pci)) throw new KErr('ENODEV');
          if (this.poolHasDevice(pci)) throw new KErr('EEXIST');
          pool.devices.push({ name: str(item, 'alias') ?? item.name, pciId: pci });
        } else {
          if (!this.poolHasDevice(pci)) throw new KErr('ENOENT');
          if (this.deviceOwner(pci)) throw new KErr('EBUSY');
          pool.devices.splice(pool.devices.findIndex((d) => d.pciId === pci), 1);
        }
        continue;
      }
      const inst = t.instance!;
      if (give) {
        if (!this.poolHasDevice(pci)) throw new KErr('ENODEV');
        if (this.deviceOwner(pci)) throw new KErr('EBUSY');
        await this.ack(inst);
        inst.devices.push(pci);
      } else {
        if (!inst.devices.includes(pci)) throw new KErr('ENOENT');
        await this.ack(inst);
        inst.devices.splice(inst.devices.indexOf(pci), 1);
      }
    }
  }

  // ---------------------------------------------------------------- kexec (kexec_file.c, kexec_core.c)

  async kexecFileLoad(
    args: { kernelFd: number; initrdFd: number; cmdline: string; flags: number },
    fds: Map<number, ImageFile>,
  ): Promise<void> {
    const { flags } = args;
    const known = KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG
      | (this.env.stockKernel ? 0 : KEXEC_MULTIKERNEL | KEXEC_MK_ID_MASK);
    if (!Number.isInteger(flags) || flags < 0 || (flags & ~known) !== 0 || flags > 0xffffffff) throw new KErr('EINVAL');
    if (!(flags & KEXEC_MULTIKERNEL)) {
      // A host kexec (default/crash image) is outside what this simulator models.
      throw new KErr('EPERM');
    }
    if (flags & KEXEC_FILE_ON_CRASH) throw new KErr('EINVAL');
    const id = kexecGetMkId(flags);
    if (id <= 0) throw new KErr('EINVAL');
    await this.env.faults.hit('kexec_file_load', { id, syscall: 'kexec_file_load' });
    const inst = this.instanceById(id);
    if (flags & KEXEC_FILE_UNLOAD) {
      if (!inst || !inst.image) throw new KErr('ENOENT');
      if (inst.status === 'active') throw new KErr('EBUSY');
      delete inst.image;
      inst.status = 'ready';
      this.log(`Unloaded multikernel image for instance ${id}`);
      return;
    }
    if (!inst) throw new KErr('ENOENT');
    if (inst.image) throw new KErr('EBUSY');
    const kernel = fds.get(args.kernelFd);
    if (!kernel) throw new KErr('EBADF');
    let initrd: ImageFile | undefined;
    if (!(flags & KEXEC_FILE_NO_INITRAMFS)) {
      initrd = fds.get(args.initrdFd);
      if (!initrd) throw new KErr('EBADF');
    }
    const cmdlineLen = Buffer.byteLength(args.cmdline) + 1;
    if (args.cmdline.includes('\0') || cmdlineLen > COMMAND_LINE_SIZE) throw new KErr('EINVAL');
    const kind = this.probe(kernel.bytes);
    const total = kernel.bytes.length + (initrd?.bytes.length ?? 0);
    const memory = inst.memory.reduce((a, r) => a + r.size, 0);
    if (total > memory) throw new KErr('ENOMEM');
    const image: SimImage = {
      kind,
      kernelBytes: kernel.bytes.length,
      initrdBytes: initrd?.bytes.length ?? 0,
      cmdline: args.cmdline,
      segments: 2 + (initrd ? 1 : 0),
      entry: inst.memory[0]!.base,
    };
    inst.image = image;
    inst.status = 'loaded';
    if (flags & KEXEC_FILE_DEBUG) this.log(`kexec_file: Loaded kernel at 0x${image.entry.toString(16)} bufsz=0x${image.kernelBytes.toString(16)}`);
  }

  /** kexec_file's loader probe: x86_64 takes an ELF64 EM_X86_64 vmlinux, arm64 an `Image`. */
  private probe(b: Uint8Array): SimImage['kind'] {
    if (this.env.arch === 'x86_64') {
      const elf = b.length >= 64 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46 && b[4] === 2;
      if (elf && dv(b).getUint16(18, true) === 62) return 'elf';
    } else if (b.length >= 64 && dv(b).getUint32(56, true) === 0x644d5241) {
      return 'arm64-image';
    }
    throw new KErr('ENOEXEC');
  }

  // ---------------------------------------------------------------- reboot (reboot.c, kexec_core.c, core.c)

  /** Returns a follow-up to run after the state is saved (a graceful halt that waits). */
  async reboot(cmd: number, mkId: number): Promise<(() => Promise<void>) | undefined> {
    const mk = [LINUX_REBOOT_CMD_MULTIKERNEL, LINUX_REBOOT_CMD_MULTIKERNEL_HALT, LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE];
    if (this.env.stockKernel || !mk.includes(cmd)) throw new KErr('EINVAL');
    await this.env.faults.hit('reboot', { id: mkId, syscall: 'reboot' });
    const inst = this.instanceById(mkId);
    if (cmd === LINUX_REBOOT_CMD_MULTIKERNEL) {
      if (!inst || !inst.image) throw new KErr('EINVAL');
      if (inst.status !== 'loaded') throw new KErr('EBUSY');
      if (inst.cpus.length === 0) throw new KErr('EINVAL');
      inst.status = 'active';
      inst.panicked = false;
      this.log(`multikernel: starting instance ${inst.id} (${inst.name}) on CPU ${inst.cpus[0]}`);
      const id = inst.id;
      return async () => this.env.events.started(id);
    }
    if (!inst) throw new KErr('ENOENT');
    if (cmd === LINUX_REBOOT_CMD_MULTIKERNEL_HALT) {
      if (inst.status !== 'active') throw new KErr('EINVAL');
      if (inst.panicked) {
        this.log(`multikernel: instance ${inst.id} (${inst.name}) did not acknowledge the shutdown request`);
        return async () => {
          await this.env.sleep(this.env.haltTimeoutMs);
          throw systemError('ETIMEDOUT', 'reboot');
        };
      }
      this.stop(inst, 'halted');
      const id = inst.id;
      return async () => this.env.events.stopped(id, 'shutdown');
    }
    if (inst.status === 'ready') throw new KErr('EINVAL');
    if (inst.cpus.length === 0) throw new KErr('EINVAL');
    this.stop(inst, 'force-halted');
    const id = inst.id;
    return async () => this.env.events.stopped(id, 'forced');
  }

  stop(inst: SimInstance, how: string): void {
    inst.status = 'loaded';
    inst.panicked = false;
    this.log(`multikernel: instance ${inst.id} (${inst.name}) ${how}`);
  }
}
