/**
 * Overlay transactions (overlay.c@14213ee5): the write handler of overlays/new, the operations of
 * each fragment in the kernel's order, and rmdir of a tx_N (the inverse operations in reverse
 * order). The operations call the kernel's move primitives, written here after their sources:
 * hotplug.c@3dc6b66f (mk_pool_cpu_*, mk_pool_device_*, mk_send_*), core.c@843ebe12
 * (mk_instance_transfer_cpus, mk_instance_return_cpus, mk_instance_*_pci_device, instance
 * resources), mem.c@26ba325b (instance memory regions), dts.c@0a54b0b4 (instance-create
 * resources), kernfs.c@14213ee5 (mk_create_instance_from_dtb, mk_instance_destroy). Every
 * refusal logs the kernel's own pr_err/pr_warn line before the transaction's
 * "Failed to apply overlay transaction N: -E".
 */
import { decodeFdt, encodeFdt } from '../../fdt/codec';
import type { FdtNode } from '../../fdt/types';
import { fdtCheckHeader } from './fdtcheck';
import type { Kernel } from './kernel';
import {
  child, childrenWithPrefix, cpuSetFormat, hex, KErr, MAX_NUMNODES, MAX_VIRTIO_DEVICES, MAX_VIRTIO_QUEUES, MEMORY_BLOCK_SIZE,
  mb, neg, PAGE_SIZE, parseBdf, raw, SIM_PCI_DEVICE, SIM_PCI_VENDOR, str, u32At, u64At,
} from './props';
import type { MemRange, SimInstance, SimPlatformDevice, SimTx } from './state';

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

/** A spawn that never acknowledges: hung (or, in older state files, marked panicked). */
function answersNothing(inst: SimInstance): boolean {
  const i = inst as unknown as { hung?: boolean; panicked?: boolean };
  return i.hung === true || i.panicked === true;
}

function fail(k: Kernel, line: string, code: string): never {
  k.log(line);
  throw new KErr(code);
}

/** %04x:%02x:%02x.%x — the form parseBdf already normalised to */
const vd = (pci: string): string => `${SIM_PCI_VENDOR.toString(16).padStart(4, '0')}:${SIM_PCI_DEVICE.toString(16).padStart(4, '0')}@${pci}`;
const range = (base: number, size: number): string => `0x${hex(base)}-0x${hex(base + size - 1)}`;

// ------------------------------------------------------------ hotplug.c@3dc6b66f move primitives

/** mk_pool_cpu_add: a present, online host CPU (not the boot CPU) departs into the pool. */
export function poolCpuAdd(k: Kernel, cpu: number): void {
  const i = k.cpuIndex(cpu);
  const present = i >= 0 && !k.isPoolCpu(cpu);
  if (!present) k.log(`Multikernel hotplug: Physical CPU ${cpu} not found in present CPUs`);
  if (!present || k.s.topology.cpus[i]!.online === false) fail(k, `Multikernel hotplug: CPU ${cpu} must be online to join the pool`, 'EINVAL');
  if (i === 0) fail(k, 'Multikernel hotplug: Cannot remove boot CPU', 'EINVAL');
  k.s.pool!.cpus.push(cpu);
  k.log(`Multikernel hotplug: Successfully removed CPU ${i} (phys ${cpu})`);
}

/** mk_pool_cpu_remove: only a free pool CPU comes home. */
export function poolCpuRemove(k: Kernel, cpu: number, node: number, flags: number): void {
  if (!k.isPoolCpu(cpu) || k.owner(cpu)) fail(k, `Multikernel hotplug: CPU ${cpu} is not free in the pool`, 'EBUSY');
  const i = k.cpuIndex(cpu);
  k.log(`Multikernel hotplug: Adding CPU ${cpu} (numa=${node}, flags=0x${hex(flags)})`);
  k.log(`Multikernel hotplug: Physical CPU ${cpu} not found in present CPUs`);
  const pool = k.s.pool!;
  pool.cpus.splice(pool.cpus.indexOf(cpu), 1);
  k.log(`Multikernel hotplug: Successfully added CPU ${i} (phys ${cpu})`);
}

/** mk_do_device_remove / mk_do_device_add: the host function must exist (ENODEV). */
function hostDevice(k: Kernel, pci: string): void {
  const bus = pci.slice(0, 7);
  if (!k.s.topology.pciDevices.some((d) => d.startsWith(bus))) fail(k, `Multikernel hotplug: PCI bus ${bus} not found`, 'ENODEV');
  if (!k.s.topology.pciDevices.includes(pci)) fail(k, `Multikernel hotplug: PCI device ${pci} not found`, 'ENODEV');
}

/** mk_pool_device_add: unbind from the host, then list as free (already listed: EEXIST, ignored). */
export function poolDeviceAdd(k: Kernel, pci: string, alias: string | undefined): void {
  k.log(`Multikernel hotplug: Removing device ${pci}`);
  hostDevice(k, pci);
  k.log(`Multikernel hotplug: Successfully removed device ${pci}`);
  const pool = k.s.pool!;
  if (pool.devices.some((d) => d.pciId === pci)) return;
  pool.devices.push(alias ? { pciId: pci, alias } : { pciId: pci });
  pool.devicesValid = true;
  k.log(`PCI device ${vd(pci)} is free in the root pool`);
}

/** mk_pool_device_remove: only a free pool device goes back to the host. */
export function poolDeviceRemove(k: Kernel, pci: string): void {
  const pool = k.s.pool!;
  const i = pool.devices.findIndex((d) => d.pciId === pci);
  if (i < 0) fail(k, `Multikernel hotplug: device ${pci} is not free in the pool`, 'EBUSY');
  k.log(`Multikernel hotplug: Adding device ${pci} driver=none flags=0x0`);
  hostDevice(k, pci);
  k.log(`Multikernel hotplug: Successfully configured device ${pci}`);
  pool.devices.splice(i, 1);
}

// ------------------------------------------------------------ core.c@843ebe12 instance transfers

/** mk_instance_transfer_cpus: all or nothing; a CPU that is not free in the pool → EBUSY. */
function transferCpus(k: Kernel, inst: SimInstance, cpus: number[]): void {
  if (!k.s.pool) fail(k, 'Invalid CPU sets for transfer', 'EINVAL');
  if (cpus.length === 0) {
    k.log(`No CPUs requested for instance ${inst.id} (${inst.name})`);
    return;
  }
  const missing = cpus.filter((c) => !k.isPoolCpu(c) || k.owner(c));
  for (const c of missing) k.log(`CPU ${c} not available in the pool`);
  if (missing.length > 0) fail(k, `Instance ${inst.id} (${inst.name}): ${missing.length} CPUs are not available`, 'EBUSY');
  inst.cpus.push(...cpus);
  k.log(`Transferred ${cpus.length} CPUs from pool to instance ${inst.id} (${inst.name}): ${cpuSetFormat(inst.cpus)}`);
}

/** mk_instance_return_cpus: all must be the instance's (EINVAL); back-to-front into the free set. */
function returnCpus(k: Kernel, inst: SimInstance, cpus: number[]): void {
  const pool = k.s.pool!;
  const foreign = cpus.filter((c) => !inst.cpus.includes(c));
  for (const c of foreign) k.log(`CPU ${c} not assigned to instance ${inst.id} (${inst.name})`);
  if (foreign.length > 0) fail(k, `Instance ${inst.id} (${inst.name}): ${foreign.length} CPUs are not assigned to this instance`, 'EINVAL');
  const list = cpuSetFormat(cpus);
  for (const c of cpus.slice().reverse()) {
    pool.cpus.splice(pool.cpus.indexOf(c), 1);
    pool.cpus.push(c);
    inst.cpus.splice(inst.cpus.indexOf(c), 1);
  }
  k.log(`Returned ${cpus.length} CPUs from instance ${inst.id} (${inst.name}) to the pool: ${list}`);
}

/** mk_instance_add_pci_device: from the free list; EINVAL before the pool ever listed a device. */
function addPciDevice(k: Kernel, inst: SimInstance, pci: string): void {
  const pool = k.s.pool;
  if (!pool?.devicesValid) fail(k, 'No self instance or PCI devices not initialized', 'EINVAL');
  const i = pool.devices.findIndex((d) => d.pciId === pci);
  if (i < 0) fail(k, `PCI device ${pci} not found in root pool`, 'ENOENT');
  const [dev] = pool.devices.splice(i, 1);
  inst.devices.push(pci);
  if (dev!.alias) (inst.deviceAliases ??= {})[pci] = dev!.alias;
  k.log(`Transferred PCI device ${vd(pci)} to instance ${inst.id}`);
}

/** mk_instance_remove_pci_device: back to the end of the free list; ENOENT if not held. */
function removePciDevice(k: Kernel, inst: SimInstance, pci: string): void {
  if (!inst.devices.includes(pci)) fail(k, `PCI device ${pci} not found in instance ${inst.id}`, 'ENOENT');
  giveBackDevice(k, inst, pci);
  k.log(`Returned PCI device ${vd(pci)} from instance ${inst.id} to root`);
}

function giveBackDevice(k: Kernel, inst: SimInstance, pci: string): void {
  const pool = k.s.pool!;
  const alias = inst.deviceAliases?.[pci];
  pool.devices.push(alias ? { pciId: pci, alias } : { pciId: pci });
  pool.devicesValid = true;
  inst.devices.splice(inst.devices.indexOf(pci), 1);
  if (inst.deviceAliases) delete inst.deviceAliases[pci];
}

// ------------------------------------------------------------ mem.c@26ba325b instance regions

/** mk_instance_add_memory_region: one allocation of `size` from the pool (the base is not used). */
function addMemoryRegion(k: Kernel, inst: SimInstance, size: number, node: number): void {
  const r = k.mem.alloc(size, node);
  if (!r) fail(k, `Failed to allocate ${size} bytes from multikernel pool for instance ${inst.id}`, 'ENOMEM');
  inst.memory.push(r);
  k.log(`Added memory region ${range(r.base, size)} (${mb(size)} MB) to instance ${inst.id} (${inst.name})`);
}

/**
 * mk_instance_remove_memory_region: only a whole region, named by its exact base and size, comes
 * out (ENOENT otherwise; no partial removal in either public mem.c); not while the loaded image
 * lives in the range (EBUSY).
 */
function removeMemoryRegion(k: Kernel, inst: SimInstance, base: number, size: number): void {
  const img = inst.image;
  const first = inst.memory[0];
  // the kexec segments sit at the start of the first region (boot.ts loads them there)
  if (img && first && base < first.base + img.kernelBytes + img.initrdBytes + PAGE_SIZE && first.base < base + size) {
    fail(k, `Refusing to remove ${range(base, size)} from instance ${inst.id} (${inst.name}): the loaded kernel image lives there`, 'EBUSY');
  }
  const i = inst.memory.findIndex((m) => m.base === base && m.size === size);
  if (i < 0) fail(k, `Memory region ${range(base, size)} not found in instance ${inst.id} (${inst.name})`, 'ENOENT');
  inst.memory.splice(i, 1);
  k.log(`Removed memory region ${range(base, size)} (${mb(size)} MB) from instance ${inst.id} (${inst.name})`);
}

// ------------------------------------------------------------ dts.c@0a54b0b4 instance-create resources

interface CreateConfig {
  memory: number;
  cpus: number[];
  node: number;
  pci: { pci: string; vendor: number; device: number; alias?: string }[];
  platform: SimPlatformDevice[];
}

/** mk_dt_parse_resources: memory, cpus, numa-nodes, devices, virtio, each with its pr_err lines. */
function parseResources(k: Kernel, res: FdtNode, name: string): CreateConfig {
  const step = <T>(what: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      k.log(`Failed to parse ${what} for '${name}': ${neg((e as KErr).code)}`);
      throw e;
    }
  };
  const memory = step('memory regions', () => {
    const b = raw(res, 'memory-bytes');
    if (!b) return 0;
    if (b.length !== 8) fail(k, `Invalid memory-bytes property length: ${b.length} (must be 8 bytes for u64 size)`, 'EINVAL');
    const size = u64At(b, 0);
    if (size === 0) fail(k, 'Invalid memory size 0 in memory-bytes', 'EINVAL');
    if (size % PAGE_SIZE !== 0) fail(k, `Memory size 0x${hex(size)} not page-aligned`, 'EINVAL');
    return size;
  });
  const cpus = step('CPU resources', () => {
    const b = raw(res, 'cpus');
    if (!b) return [];
    if (b.length % 8 !== 0) fail(k, `Invalid cpus property length: ${b.length} (must be an array of 64-bit physical CPU IDs)`, 'EINVAL');
    if (b.length === 0) fail(k, 'Empty CPU list in cpus', 'EINVAL');
    const set: number[] = [];
    for (let i = 0; i < b.length / 8; i++) if (!set.includes(u64At(b, i))) set.push(u64At(b, i));
    return set;
  });
  const node = step('NUMA nodes', () => {
    const b = raw(res, 'numa-nodes');
    if (!b) return -1;
    if (b.length < 4 || b.length % 4 !== 0) fail(k, `Invalid numa-nodes property length: ${b.length} (must be an array of 32-bit node IDs)`, 'EINVAL');
    if (u32At(b, 0) >= MAX_NUMNODES) fail(k, `Invalid NUMA node ${u32At(b, 0)} in numa-nodes`, 'EINVAL');
    return u32At(b, 0);
  });
  const { pci, platform } = step('device resources', () => {
    if (raw(res, 'device-names')) fail(k, 'device-names is not supported; assign devices with device-add', 'EINVAL');
    const out: CreateConfig['pci'] = [];
    const plat: SimPlatformDevice[] = [];
    for (const d of child(res, 'devices')?.children ?? []) {
      const type = str(d, 'device-type');
      if (type === 'pci') {
        try {
          const id = str(d, 'pci-id');
          if (id === undefined) fail(k, `No pci-id property in device '${d.name}'`, 'EINVAL');
          const pciId = parseBdf(id);
          if (pciId === undefined) fail(k, `Invalid pci-id format: '${id}' (expected domain:bus:slot.func)`, 'EINVAL');
          const v = raw(d, 'vendor-id');
          if (!v || v.length !== 4) fail(k, `Missing or invalid vendor-id in device '${d.name}' (node '${d.name}')`, 'EINVAL');
          const dv = raw(d, 'device-id');
          if (!dv || dv.length !== 4) fail(k, `Missing or invalid device-id in device '${d.name}' (node '${d.name}')`, 'EINVAL');
          out.push({ pci: pciId, vendor: u32At(v, 0) & 0xffff, device: u32At(dv, 0) & 0xffff });
        } catch (e) {
          k.log(`Failed to parse embedded PCI device '${d.name}': ${neg((e as KErr).code)}`);
          throw e;
        }
      } else if (type === 'platform') {
        const devName = str(d, 'device-name');
        const hid = str(d, 'acpi-hid');
        if (devName === undefined && hid === undefined) {
          k.log(`Platform device '${d.name}' (node '${d.name}') has neither acpi-hid nor device-name`);
          k.log(`Failed to parse embedded platform device '${d.name}': -22`);
          throw new KErr('EINVAL');
        }
        // matched by name only (mk_instance_transfer_platform_devices); the hid is not kept
        plat.push({ name: (devName ?? '').slice(0, 31) });
      }
    }
    return { pci: out, platform: plat };
  });
  step('virtio devices', () => {
    let n = 0;
    for (const v of child(res, 'virtio')?.children ?? []) {
      const id = raw(v, 'device-id');
      const queues = raw(v, 'queues');
      if (!id || !queues) throw new KErr('EINVAL');
      if (n === MAX_VIRTIO_DEVICES) throw new KErr('E2BIG');
      const q = queues.length >= 4 ? u32At(queues, 0) : 0;
      if (q === 0 || q > MAX_VIRTIO_QUEUES) throw new KErr('EINVAL');
      n++;
    }
  });
  return { memory, cpus, node, pci, platform };
}

/** mk_dt_parse_chosen: only a multikernel,host-tree subnode, kept as a tree of its own. */
function parseChosen(k: Kernel, chosen: FdtNode, name: string): string | undefined {
  if (chosen.properties.length > 0) fail(k, `Instance '${name}': chosen carries properties; only a multikernel,host-tree node is accepted`, 'EINVAL');
  let tree: string | undefined;
  for (const c of chosen.children) {
    if (c.name !== 'multikernel,host-tree') fail(k, `Instance '${name}': unsupported chosen node '${c.name}'`, 'EINVAL');
    tree = encodeFdt({ name: '', properties: c.properties, children: c.children }).toString('base64');
  }
  return tree;
}

// ------------------------------------------------------------ the engine

export class OverlayEngine {
  constructor(private readonly k: Kernel) {}

  /**
   * The write handler of overlays/new; returns the byte count, also for a failed transaction.
   * (System.writeFile always writes at offset 0, so the kernel's `off != 0` refusal cannot arise.)
   */
  async write(data: Uint8Array): Promise<number> {
    if (data.length === 0) throw new KErr('EINVAL');
    // No EFBIG (props.ts MK_OVERLAY_HANDLER_MAX_BYTES): kernfs hands the handler at most
    // PAGE_SIZE bytes per write(2) (index.ts, overlays/new), so the check cannot trigger.
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
      const frags = childrenWithPrefix(root, 'fragment@');
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
      tx.reason = code;
      this.k.log(`Failed to apply overlay transaction ${tx.id}: ${neg(code)}`);
    }
    this.k.s.txs.push(tx);
    // a harness setting, not a kernel rule (SimulatedSystemOptions.keepAppliedTransactions)
    const keep = this.k.env.keepAppliedTransactions;
    if (keep !== undefined) {
      const applied = this.k.s.txs.filter((t) => t.status === 'applied');
      for (const old of applied.slice(0, Math.max(0, applied.length - keep))) this.k.s.txs.splice(this.k.s.txs.indexOf(old), 1);
    }
    return data.length;
  }

  /** mk_overlay_rmdir */
  async rmdir(tx: SimTx): Promise<void> {
    this.k.log(`Removing overlay transaction ${tx.id}`);
    try {
      await this.k.env.faults.hit('overlay.rollback', { id: tx.id, syscall: 'rmdir' });
      // A blob nothing can be read from (cut at 4096 bytes by kernfs) has no usable fragment: EINVAL.
      let root: FdtNode = { name: '', properties: [], children: [] };
      try {
        root = decodeFdt(Buffer.from(tx.dtbo, 'base64')).root;
      } catch {
        // keep the empty root
      }
      await this.walk(tx, root, true, false);
    } catch (e) {
      const code = (e as KErr).code;
      this.k.log(`Failed to rollback overlay transaction ${tx.id}: ${neg(code)}`);
      tx.status = 'failed';
      throw new KErr(code);
    }
    this.k.log(`Overlay transaction ${tx.id} rolled back successfully`);
    this.k.s.txs.splice(this.k.s.txs.indexOf(tx), 1);
  }

  private async walk(tx: SimTx, root: FdtNode, undo: boolean, halfway: boolean): Promise<void> {
    const verb = undo ? 'Rollback' : 'Overlay';
    const frags = childrenWithPrefix(root, 'fragment@').map((f) => {
      const unit = f.name.slice('fragment@'.length);
      if (!/^(0x)?[0-9a-f]+$/i.test(unit) || parseInt(unit, 16) > 0xffffffff) {
        this.k.log(`Overlay: '${f.name}' has no valid unit address`);
        this.k.log(`${verb} tx${tx.id}: no usable fragment@N node: -22`);
        throw new KErr('EINVAL');
      }
      return { unit: parseInt(unit, 16), node: f };
    });
    if (frags.length === 0) fail(this.k, `${verb} tx${tx.id}: no usable fragment@N node: -22`, 'EINVAL');
    frags.sort((a, b) => a.unit - b.unit);
    if (undo) frags.reverse();
    let done = 0;
    for (const { node: frag } of frags) {
      const target = this.resolveTarget(tx, frag);
      const overlay = child(frag, '__overlay__');
      if (!overlay) fail(this.k, `Overlay tx${tx.id}: fragment for ${target.path} has no __overlay__ node`, 'EINVAL');
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

  /** mk_overlay_resolve_target */
  private resolveTarget(tx: SimTx, frag: FdtNode): Target {
    const path = str(frag, 'target-path');
    if (path === undefined) fail(this.k, `Overlay tx${tx.id}: fragment without a valid target-path`, 'EINVAL');
    if (path === '/resources') {
      if (!this.k.s.pool) fail(this.k, `Overlay tx${tx.id}: this kernel manages no pool, ${path} is not a valid target`, 'EPERM');
      return { kind: 'pool', path };
    }
    if (path === '/instances') return { kind: 'instances', path };
    if (!path.startsWith('/instances/')) fail(this.k, `Overlay tx${tx.id}: unsupported target-path '${path}'`, 'EINVAL');
    const name = path.slice('/instances/'.length);
    if (name === '' || name.includes('/')) fail(this.k, `Overlay tx${tx.id}: '${path}' does not name an instance`, 'EINVAL');
    const instance = this.k.instanceByName(name);
    if (!instance) fail(this.k, `Overlay tx${tx.id}: instance '${name}' not found`, 'ENOENT');
    return { kind: 'instance', path, instance };
  }

  private async runOp(tx: SimTx, op: Op, n: FdtNode, target: Target, undo: boolean): Promise<void> {
    const namespaceOp = op === 'instance-create' || op === 'instance-remove';
    if (namespaceOp && target.kind !== 'instances') {
      fail(this.k, `Overlay tx${tx.id}: ${op} belongs under /instances, not ${target.path}`, 'EINVAL');
    }
    if (!namespaceOp && target.kind === 'instances') {
      const what = op.startsWith('cpu') ? 'cpu operation' : op.startsWith('device') ? 'device operation' : op;
      fail(this.k, `Overlay tx${tx.id}: ${target.path} is not a resource holder, ${what} rejected`, 'EINVAL');
    }
    switch (op) {
      case 'instance-create':
        return undo ? this.undoCreate(tx, n) : this.instanceCreate(tx, n);
      case 'instance-remove':
        return this.instanceRemove(tx, n, undo);
      case 'memory-add':
        return this.memoryAdd(tx, n, target, undo);
      case 'memory-remove':
        return this.memoryRemove(tx, n, target, undo);
      case 'cpu-add':
        return this.cpus(tx, n, target, !undo, undo);
      case 'cpu-remove':
        return this.cpus(tx, n, target, undo, undo);
      case 'device-add':
        return this.devices(tx, n, target, !undo, undo);
      case 'device-remove':
        return this.devices(tx, n, target, undo, undo);
    }
  }

  /** mk_overlay_instance_name */
  private instanceName(tx: SimTx, n: FdtNode, verb: string, op: string): string {
    const name = str(n, 'instance-name');
    if (name === undefined || name === '') fail(this.k, `${verb} tx${tx.id}: ${op} requires a valid 'instance-name'`, 'EINVAL');
    if (name.includes('/')) fail(this.k, `${verb} tx${tx.id}: instance name '${name}' must not contain '/'`, 'EINVAL');
    return name;
  }

  /** mk_overlay_op_instance_create, then mk_create_instance_from_dtb (kernfs.c@14213ee5). */
  private instanceCreate(tx: SimTx, n: FdtNode): void {
    const k = this.k;
    const name = this.instanceName(tx, n, 'Overlay', 'instance-create');
    const idProp = raw(n, 'id');
    const wanted = idProp && idProp.length === 4 ? u32At(idProp, 0) | 0 : -1;
    const res = child(n, 'resources');
    if (!res) fail(k, `Overlay tx${tx.id}: instance-create requires a 'resources' subnode`, 'EINVAL');
    if (k.instanceByName(name)) fail(k, `Overlay tx${tx.id}: instance '${name}' already exists`, 'EEXIST');
    // the host is instance 0 in the idr (instance_dt.c), so id 0 is "in use" like any other
    if (wanted >= 0 && (wanted === 0 || k.instanceById(wanted))) fail(k, `Overlay tx${tx.id}: instance ID ${wanted} is already in use`, 'EEXIST');
    k.log(`Overlay tx${tx.id}: Creating instance '${name}'`);
    try {
      this.createFromDtb(name, wanted, n, res);
    } catch (e) {
      k.log(`Overlay tx${tx.id}: Failed to create instance '${name}': ${neg((e as KErr).code)}`);
      throw e;
    }
    k.log(`Overlay tx${tx.id}: Instance '${name}' created successfully`);
  }

  private createFromDtb(name: string, wanted: number, op: FdtNode, res: FdtNode): void {
    const k = this.k;
    let config: CreateConfig;
    try {
      config = parseResources(k, res, name);
    } catch (e) {
      k.log(`Failed to parse resources for instance '${name}': ${neg((e as KErr).code)}`);
      throw e;
    }
    const chosen = child(op, 'chosen');
    const hostTree = chosen ? parseChosen(k, chosen, name) : undefined;
    let id = wanted;
    if (id < 0) for (id = 1; k.instanceById(id); id++);
    const inst = { id, name, status: 'ready', cpus: [], memory: [], devices: [] } as unknown as SimInstance;
    if (hostTree !== undefined) inst.hostTree = hostTree;
    // mk_instance_reserve_resources (core.c): memory must be granted; CPUs and devices only warn
    try {
      this.reserveMemory(inst, config.memory, config.node);
    } catch (e) {
      k.log(`Failed to reserve memory regions for instance ${id} (${name}): ${neg((e as KErr).code)}`);
      k.log(`Failed to reserve resources for instance '${name}': ${neg((e as KErr).code)}`);
      throw e;
    }
    const warn = (what: string, f: () => void, next: string): void => {
      try {
        f();
      } catch (e) {
        k.log(`Failed to reserve ${what} resources for instance ${id} (${name}): ${neg((e as KErr).code)}`);
        k.log(`Continuing without ${next} assignment`);
      }
    };
    warn('CPU', () => transferCpus(k, inst, config.cpus), 'CPU');
    if (config.pci.length > 0) warn('PCI device', () => this.transferPci(inst, config.pci), 'PCI device');
    if (config.platform.length > 0) warn('platform device', () => this.transferPlatform(inst, config.platform), 'platform device');
    k.s.instances.push(inst);
  }

  /** mk_instance_transfer_memory (core.c@843ebe12) */
  private reserveMemory(inst: SimInstance, size: number, node: number): void {
    const k = this.k;
    if (size === 0) {
      k.log(`No memory requested for instance ${inst.id} (${inst.name})`);
      return;
    }
    const avail = k.mem.availBytes();
    if (size > avail) fail(k, `Requested memory (0x${hex(size)}) exceeds available pool (0x${hex(avail)})`, 'ENOMEM');
    let pieces: MemRange[];
    try {
      pieces = k.mem.instancePool(size, node, inst.id);
    } catch (e) {
      k.log(`Failed to create instance pool for instance ${inst.id} (${inst.name})`);
      throw e;
    }
    inst.memory.push(...pieces);
    k.log(`Transferred 0x${hex(size)} bytes from root to instance ${inst.id} (${inst.name})`);
  }

  /** mk_instance_transfer_pci_devices: every requested device free in the pool (same vendor/device), or none. */
  private transferPci(inst: SimInstance, devices: CreateConfig['pci']): void {
    const k = this.k;
    const pool = k.s.pool;
    if (!pool?.devicesValid) fail(k, 'No self instance or PCI devices not initialized', 'EINVAL');
    const missing = devices.filter((d) => d.vendor !== SIM_PCI_VENDOR || d.device !== SIM_PCI_DEVICE || !pool.devices.some((p) => p.pciId === d.pci));
    for (const d of missing) k.log(`PCI device ${d.vendor.toString(16).padStart(4, '0')}:${d.device.toString(16).padStart(4, '0')}@${d.pci} not available in root pool`);
    if (missing.length > 0) fail(k, `Instance ${inst.id} (${inst.name}): ${missing.length} PCI devices not available`, 'ENOENT');
    for (const d of devices) {
      const i = pool.devices.findIndex((p) => p.pciId === d.pci);
      if (i < 0) continue; // listed twice in the request: the second finds nothing left to move
      const [dev] = pool.devices.splice(i, 1);
      inst.devices.push(d.pci);
      if (dev!.alias) (inst.deviceAliases ??= {})[d.pci] = dev!.alias;
    }
    k.log(`Transferred ${inst.devices.length} PCI devices from root to instance ${inst.id} (${inst.name}), root pool remaining: ${pool.devices.length} devices`);
  }

  /**
   * mk_instance_transfer_platform_devices: matched by name against the pool's platform devices.
   * The list stays valid once a baseline listed one, also when every device is lent (ENOENT then).
   */
  private transferPlatform(inst: SimInstance, devices: SimPlatformDevice[]): void {
    const k = this.k;
    const free = k.s.pool?.platformDevices;
    if (!free) fail(k, 'No self instance or platform devices not initialized', 'EINVAL');
    const missing = devices.filter((d) => !free.some((f) => f.name === d.name));
    for (const d of missing) k.log(`Platform device '${d.name}' not available in root pool`);
    if (missing.length > 0) fail(k, `Instance ${inst.id} (${inst.name}): ${missing.length} platform devices not available`, 'ENOENT');
    for (const d of devices) {
      const i = free.findIndex((f) => f.name === d.name);
      if (i >= 0) (inst.platformDevices ??= []).push(...free.splice(i, 1));
    }
    k.log(`Transferred ${inst.platformDevices!.length} platform devices from root to instance ${inst.id} (${inst.name}), root pool remaining: ${free.length} devices`);
  }

  private undoCreate(tx: SimTx, n: FdtNode): void {
    const name = this.instanceName(tx, n, 'Rollback', 'instance-create');
    const inst = this.k.instanceByName(name);
    if (!inst) {
      this.k.log(`Rollback tx${tx.id}: instance '${name}' is already gone`);
      return;
    }
    this.k.log(`Rollback tx${tx.id}: Removing instance '${name}' (ID: ${inst.id})`);
    try {
      this.destroy(inst);
    } catch (e) {
      this.k.log(`Rollback tx${tx.id}: Failed to destroy instance '${name}': ${neg((e as KErr).code)}`);
      throw e;
    }
  }

  private instanceRemove(tx: SimTx, n: FdtNode, undo: boolean): void {
    const name = this.instanceName(tx, n, undo ? 'Rollback' : 'Overlay', 'instance-remove');
    if (undo) {
      this.k.log(`Rollback tx${tx.id}: cannot restore removed instance '${name}', apply an instance-create overlay`);
      return;
    }
    const inst = this.k.instanceByName(name);
    if (!inst) fail(this.k, `Overlay tx${tx.id}: instance '${name}' not found`, 'ENOENT');
    this.k.log(`Overlay tx${tx.id}: Removing instance '${name}' (ID: ${inst.id})`);
    try {
      this.destroy(inst);
    } catch (e) {
      this.k.log(`Overlay tx${tx.id}: Failed to remove instance '${name}': ${neg((e as KErr).code)}`);
      throw e;
    }
    this.k.log(`Overlay tx${tx.id}: Instance '${name}' removed successfully`);
  }

  /** mk_instance_destroy (kernfs.c), then mk_instance_release (core.c): everything goes back to the pool. */
  private destroy(inst: SimInstance): void {
    const k = this.k;
    if (inst.status === 'active') fail(k, `Cannot remove active instance '${inst.name}' (ID: ${inst.id}). Instance must be stopped first.`, 'EBUSY');
    if (inst.status === 'loaded') fail(k, `Cannot remove instance '${inst.name}' (ID: ${inst.id}) with loaded kernel. Unload it first.`, 'EBUSY');
    k.log(`Releasing multikernel instance ${inst.id} (${inst.name}), returning resources to root`);
    if (inst.cpus.length > 0) returnCpus(k, inst, inst.cpus.slice());
    const devices = inst.devices.length;
    for (const pci of inst.devices.slice()) giveBackDevice(k, inst, pci);
    if (devices > 0) k.log(`Returned ${devices} PCI devices from instance ${inst.id} (${inst.name}) to self instance`);
    if (inst.platformDevices?.length) {
      k.s.pool!.platformDevices = [...(k.s.pool!.platformDevices ?? []), ...inst.platformDevices];
      k.log(`Returned ${inst.platformDevices.length} platform devices from instance ${inst.id} (${inst.name}) to self instance`);
    }
    const bytes = inst.memory.reduce((a, r) => a + r.size, 0);
    if (bytes > 0) k.log(`Returning 0x${hex(bytes)} bytes from instance ${inst.id} (${inst.name}) back to multikernel pool`);
    k.s.instances.splice(k.s.instances.indexOf(inst), 1);
  }

  /** A resource message to a running instance waits for its acknowledgement (hotplug.c mk_send_*, 10 s). */
  private async ack(inst: SimInstance): Promise<void> {
    await this.k.env.faults.hit('instance.ack', { id: inst.id });
    if (answersNothing(inst)) {
      await this.k.env.sleep(this.k.env.resourceAckTimeoutMs);
      throw new KErr('ETIMEDOUT');
    }
  }

  /** mk_overlay_parse_numa */
  private numa(item: FdtNode): number {
    const b = raw(item, 'numa-node-id');
    if (!b) return -1;
    if (b.length !== 4) fail(this.k, `Invalid numa-node-id property in ${item.name}`, 'EINVAL');
    if (u32At(b, 0) >= MAX_NUMNODES) fail(this.k, `${item.name}: numa-node-id ${u32At(b, 0)} out of range`, 'EINVAL');
    return u32At(b, 0);
  }

  /** mk_overlay_parse_mem_reg */
  private memReg(item: FdtNode): { base: number; size: number } {
    const b = raw(item, 'reg');
    if (!b || b.length !== 16) fail(this.k, `Invalid reg property in ${item.name}`, 'EINVAL');
    return { base: u64At(b, 0), size: u64At(b, 1) };
  }

  private ipi(e: unknown): never {
    this.k.log(`Failed to send memory IPI: ${neg((e as KErr).code)}`);
    throw e;
  }

  /** mk_overlay_op_memory_add */
  private async memoryAdd(tx: SimTx, op: FdtNode, t: Target, undo: boolean): Promise<void> {
    const k = this.k;
    const verb = undo ? 'Rollback' : 'Overlay';
    for (const item of childrenWithPrefix(op, 'memory@')) {
      const node = this.numa(item);
      if (t.kind === 'pool') {
        if (raw(item, 'reg')) fail(k, `Overlay tx${tx.id}: ${item.name} adds pool memory by size, not by reg`, 'EINVAL');
        const sz = raw(item, 'size');
        if (!sz || sz.length !== 8) fail(k, `Invalid size property in ${item.name}`, 'EINVAL');
        const size = u64At(sz, 0);
        if (size === 0 || size % PAGE_SIZE !== 0) fail(k, `${item.name}: size 0x${hex(size)} is not a positive page multiple`, 'EINVAL');
        if (undo) {
          k.log(`Rollback tx${tx.id}: cannot release the ${mb(size)} MB the pool grew by`);
          continue;
        }
        k.log(`Overlay tx${tx.id}: +memory ${mb(size)} MB numa=${node} -> ${t.path}`);
        try {
          k.mem.growPool(size, node);
        } catch (e) {
          fail(k, `Failed to grow the pool by ${mb(size)} MB: ${neg((e as KErr).code)}`, (e as KErr).code);
        }
        continue;
      }
      const inst = t.instance!;
      const { base, size } = this.memReg(item);
      k.log(`${verb} tx${tx.id}: ${undo ? '-' : '+'}memory ${range(base, size)} (${mb(size)} MB) numa=${node} ${undo ? 'from' : '->'} ${inst.name}`);
      try {
        if (undo) await this.sendMemRemove(inst, base, size);
        else await this.sendMemAdd(inst, base, size, node);
      } catch (e) {
        this.ipi(e);
      }
    }
  }

  /** mk_overlay_op_memory_remove */
  private async memoryRemove(tx: SimTx, op: FdtNode, t: Target, undo: boolean): Promise<void> {
    const k = this.k;
    const verb = undo ? 'Rollback' : 'Overlay';
    for (const item of childrenWithPrefix(op, 'memory@')) {
      const { base, size } = this.memReg(item);
      const node = this.numa(item);
      if (t.kind === 'pool') {
        if (undo) {
          k.log(`Rollback tx${tx.id}: regrowing the pool by ${mb(size)} MB`);
          try {
            k.mem.growPool(size, node);
          } catch (e) {
            fail(k, `Failed to resize the pool: ${neg((e as KErr).code)}`, (e as KErr).code);
          }
          continue;
        }
        k.log(`Overlay tx${tx.id}: -memory ${range(base, size)} (${mb(size)} MB) from ${t.path}`);
        k.mem.removeChunk(tx.id, base, size);
        continue;
      }
      const inst = t.instance!;
      k.log(`${verb} tx${tx.id}: ${undo ? '+' : '-'}memory ${range(base, size)} (${mb(size)} MB) ${undo ? '->' : 'from'} ${inst.name}`);
      try {
        if (undo) await this.sendMemAdd(inst, base, size, node);
        else await this.sendMemRemove(inst, base, size);
      } catch (e) {
        this.ipi(e);
      }
    }
  }

  /** mk_send_mem_add: a stopped instance gets a new region of `size`; a running one hot-adds block-aligned memory first. */
  private async sendMemAdd(inst: SimInstance, base: number, size: number, node: number): Promise<void> {
    if (inst.status === 'active') {
      // mk_do_mem_add in the spawn kernel: memory_block_size alignment (EINVAL comes back in the ACK)
      if (base % MEMORY_BLOCK_SIZE !== 0 || size % MEMORY_BLOCK_SIZE !== 0) throw new KErr('EINVAL');
      await this.ack(inst);
    }
    addMemoryRegion(this.k, inst, size, node);
  }

  /** mk_send_mem_remove */
  private async sendMemRemove(inst: SimInstance, base: number, size: number): Promise<void> {
    if (inst.status === 'active') {
      if (base % MEMORY_BLOCK_SIZE !== 0 || size % MEMORY_BLOCK_SIZE !== 0) throw new KErr('EINVAL');
      await this.ack(inst);
    }
    removeMemoryRegion(this.k, inst, base, size);
  }

  /** mk_overlay_op_cpu */
  private async cpus(tx: SimTx, op: FdtNode, t: Target, give: boolean, undo: boolean): Promise<void> {
    const k = this.k;
    const verb = undo ? 'Rollback' : 'Overlay';
    for (const item of childrenWithPrefix(op, 'cpu@')) {
      const reg = raw(item, 'reg');
      if (!reg || (reg.length !== 4 && reg.length !== 8)) fail(k, `Invalid reg property in ${item.name}`, 'EINVAL');
      const cpu = reg.length === 8 ? u64At(reg, 0) : u32At(reg, 0);
      const node = this.numa(item);
      const fl = raw(item, 'flags');
      const flags = fl && fl.length === 4 ? u32At(fl, 0) : 0;
      k.log(`${verb} tx${tx.id}: ${give ? '+' : '-'}cpu ${cpu} numa=${node} ${give ? '->' : 'from'} ${t.kind === 'instance' ? t.instance!.name : t.path}`);
      try {
        if (t.kind === 'pool') {
          if (give) poolCpuAdd(k, cpu);
          else poolCpuRemove(k, cpu, node, flags);
        } else if (give) await this.sendCpuAdd(t.instance!, cpu);
        else await this.sendCpuRemove(t.instance!, cpu);
      } catch (e) {
        fail(k, `Failed to move CPU ${cpu}: ${neg((e as KErr).code)}`, (e as KErr).code);
      }
    }
  }

  /** mk_send_cpu_add */
  private async sendCpuAdd(inst: SimInstance, cpu: number): Promise<void> {
    if (inst.status !== 'active') return transferCpus(this.k, inst, [cpu]);
    if (!this.k.isPoolCpu(cpu) || this.k.owner(cpu)) fail(this.k, `Multikernel hotplug: CPU ${cpu} is not in this kernel's pool`, 'EBUSY');
    await this.ack(inst);
    inst.cpus.push(cpu);
  }

  /** mk_send_cpu_remove */
  private async sendCpuRemove(inst: SimInstance, cpu: number): Promise<void> {
    if (inst.status !== 'active') return returnCpus(this.k, inst, [cpu]);
    await this.ack(inst);
    // the spawn kernel's mk_do_cpu_remove answers ENODEV for a CPU it does not have
    if (!inst.cpus.includes(cpu)) throw new KErr('ENODEV');
    const pool = this.k.s.pool!;
    inst.cpus.splice(inst.cpus.indexOf(cpu), 1);
    pool.cpus.splice(pool.cpus.indexOf(cpu), 1);
    pool.cpus.push(cpu);
  }

  /** mk_overlay_op_device */
  private async devices(tx: SimTx, op: FdtNode, t: Target, give: boolean, undo: boolean): Promise<void> {
    const k = this.k;
    const verb = undo ? 'Rollback' : 'Overlay';
    for (const item of childrenWithPrefix(op, 'pci@')) {
      const b = raw(item, 'pci-id');
      if (!b || b.length === 0 || b[b.length - 1] !== 0) fail(k, `Invalid pci-id property in ${item.name}`, 'EINVAL');
      const text = str(item, 'pci-id')!;
      const pci = parseBdf(text);
      if (pci === undefined) fail(k, `Invalid pci-id format '${text}'`, 'EINVAL');
      const driver = str(item, 'driver');
      const alias = str(item, 'alias');
      const who = t.kind === 'instance' ? t.instance!.name : t.path;
      if (t.kind === 'pool') k.log(`${verb} tx${tx.id}: ${give ? '+' : '-'}device ${pci} ${give ? '->' : 'from'} ${who}`);
      else k.log(`${verb} tx${tx.id}: ${give ? '+' : '-'}device ${pci} driver=${driver ?? 'none'} ${give ? '->' : 'from'} ${who}`);
      try {
        if (t.kind === 'pool') {
          if (give) poolDeviceAdd(k, pci, alias);
          else poolDeviceRemove(k, pci);
        } else await this.sendDevice(t.instance!, pci, give);
      } catch (e) {
        fail(k, `Failed to move device ${pci}: ${neg((e as KErr).code)}`, (e as KErr).code);
      }
    }
  }

  /** mk_send_device_add / mk_send_device_remove */
  private async sendDevice(inst: SimInstance, pci: string, give: boolean): Promise<void> {
    const k = this.k;
    if (inst.status !== 'active') return give ? addPciDevice(k, inst, pci) : removePciDevice(k, inst, pci);
    await this.ack(inst);
    // the spawn kernel only finds a device it was lent (remove) or one the host let go of (add);
    // a running instance got its memory from the pool, so there is one
    const known = give ? k.s.pool!.devices.some((d) => d.pciId === pci) : inst.devices.includes(pci);
    if (!known) throw new KErr('ENODEV');
    if (give) addPciDevice(k, inst, pci);
    else removePciDevice(k, inst, pci);
  }
}
