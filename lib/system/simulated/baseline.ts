/**
 * The baseline write to /sys/fs/multikernel/device_tree: kernfs.c@14213ee5
 * root_device_tree_write, then baseline.c@16083690 mk_baseline_validate_and_initialize with the
 * move primitives of hotplug.c@3dc6b66f (mk_pool_cpu_add, mk_pool_device_add). Log lines are the
 * kernel's pr_* texts.
 */
import type { FdtNode } from '../../fdt/types';
import { fdtCheckHeader, fdtTotalSize } from './fdtcheck';
import type { Kernel } from './kernel';
import { poolCpuAdd, poolDeviceAdd } from './overlay-engine';
import { child, childrenWithPrefix, cpuSetFormat, decodeOrEinval, hex, KErr, MAX_BASELINE_MEM_REQS, MAX_NUMNODES, mb, neg, PAGE_SIZE, parseBdf, raw, str, u32At, u64At } from './props';
import type { SimPlatformDevice } from './state';

interface PciRequest {
  node: string;
  pci: string;
  vendor: number;
  device: number;
  alias?: string;
}

export class Baseline {
  constructor(private readonly k: Kernel) {}

  write(data: Uint8Array): number {
    this.k.log(`Loading host kernel device tree configuration (${data.length} bytes at offset 0)`);
    if (!fdtCheckHeader(data)) {
      this.k.log('Invalid device tree header: -9');
      throw new KErr('EINVAL');
    }
    if (fdtTotalSize(data) !== data.length) {
      this.k.log(`DTB size mismatch: header says ${fdtTotalSize(data)} bytes, received ${data.length} bytes`);
      throw new KErr('EINVAL');
    }
    const root = decodeOrEinval(data);
    const instances = child(root, 'instances');
    if (instances && instances.children.length > 0) {
      this.k.log('Device tree contains kernel instances. Host kernel configuration must not contain instances.');
      throw new KErr('EINVAL');
    }
    try {
      this.initialize(root);
    } catch (e) {
      this.k.log(`Baseline validation and initialization failed: ${neg((e as KErr).code)}`);
      throw e;
    }
    this.k.log('Successfully stored host kernel device tree configuration');
    return data.length;
  }

  /** mk_baseline_validate_and_initialize */
  private initialize(root: FdtNode): void {
    const s = this.k.s;
    // EBUSY only while the pool holds memory, free CPUs or free devices: a torn-down pool takes a new baseline
    if (s.pool && (s.pool.memory.length > 0 || s.pool.cpus.some((c) => !this.k.owner(c)) || s.pool.devices.length > 0)) {
      this.k.log('Baseline already applied; change the pool with an overlay targeting /resources');
      throw new KErr('EBUSY');
    }
    const res = child(root, 'resources');
    if (!res) {
      this.k.log('No /resources node found in baseline DTB');
      throw new KErr('EINVAL');
    }
    const cpus = this.fail('Failed to parse baseline CPUs', () => this.parseCpus(res));
    const mems = this.parseMemory(res);
    const { pci, platform } = this.fail('Failed to parse baseline devices', () => this.parseDevices(root, res));
    this.fail('Baseline CPU validation failed', () => this.validateCpus(cpus));

    s.pool ??= { cpus: [], memory: [], devices: [], parkChunk: null };
    const pool = s.pool;
    // mk_baseline_clear_resources(mk_self); no platformDevices list is platform_devices_valid = false
    pool.devicesValid = false;
    delete pool.platformDevices;
    for (const m of mems) {
      try {
        this.k.mem.growPool(m.size, m.node);
      } catch (e) {
        this.k.log(`Baseline: failed to allocate ${mb(m.size)} MB on node ${m.node}: ${neg((e as KErr).code)}`);
        this.k.log(`Baseline pool allocation failed: ${neg((e as KErr).code)}`);
        throw e;
      }
    }
    // mk_baseline_parse_devices sets platform_devices_valid only when it listed one
    if (platform.length > 0) pool.platformDevices = platform;

    this.k.log(`Moving ${cpus.length} CPUs into the multikernel pool`);
    let failed = 0;
    for (const cpu of cpus) {
      try {
        poolCpuAdd(this.k, cpu);
      } catch (e) {
        this.k.log(`Failed to move CPU ${cpu} into the pool: ${neg((e as KErr).code)}`);
        failed++;
      }
    }
    if (failed > 0) {
      this.k.log(`Failed to move ${failed} CPUs - baseline initialization incomplete`);
      this.k.log('Baseline CPU initialization failed: -16');
      throw new KErr('EBUSY');
    }
    this.k.log(`Moved ${cpus.length} CPUs into the multikernel pool`);

    let moved = 0;
    let lost = 0;
    for (const d of pci) {
      try {
        poolDeviceAdd(this.k, d.pci, d.alias);
        moved++;
      } catch (e) {
        const [dom, bus, slotFn] = d.pci.split(':') as [string, string, string];
        this.k.log(`PCI device ${hex4(d.vendor)}:${hex4(d.device)}@${dom}:${bus}:${slotFn} not moved into the pool: ${neg((e as KErr).code)}`);
        lost++;
      }
    }
    if (pci.length > 0) {
      if (lost > 0) this.k.log(`Failed to move ${lost} PCI devices into the pool`);
      this.k.log(`Moved ${moved} PCI devices into the multikernel pool`);
    }
    this.k.log('Multikernel baseline initialized successfully');
  }

  /** Run a parse step; on failure log `what: <err>` as the caller in baseline.c does. */
  private fail<T>(what: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      this.k.log(`${what}: ${neg((e as KErr).code)}`);
      throw e;
    }
  }

  /** mk_baseline_parse_cpus: u64 cells into a set (a CPU listed twice is one member). */
  private parseCpus(res: FdtNode): number[] {
    const b = raw(res, 'cpus');
    if (!b) return this.einval("No 'cpus' property in baseline /resources node");
    if (b.length % 8 !== 0) return this.einval(`Invalid 'cpus' property length: ${b.length} (must be an array of 64-bit physical CPU IDs)`);
    if (b.length === 0) return this.einval('Empty CPU list in baseline');
    const set: number[] = [];
    for (let i = 0; i < b.length / 8; i++) if (!set.includes(u64At(b, i))) set.push(u64At(b, i));
    this.k.log(`Baseline CPU pool: ${b.length / 8} CPUs requested: ${cpuSetFormat(set)}`);
    return set;
  }

  /** mk_baseline_parse_memory */
  private parseMemory(res: FdtNode): { size: number; node: number }[] {
    const reqs: { size: number; node: number }[] = [];
    for (const m of childrenWithPrefix(res, 'memory@')) {
      if (reqs.length === MAX_BASELINE_MEM_REQS) {
        this.k.log(`Baseline: more than ${MAX_BASELINE_MEM_REQS} memory@ nodes`);
        throw new KErr('E2BIG');
      }
      const sz = raw(m, 'size');
      if (!sz || sz.length !== 8) return this.einval(`Baseline ${m.name}: missing or invalid 'size'`);
      const size = u64At(sz, 0);
      if (size === 0 || size % PAGE_SIZE !== 0) return this.einval(`Baseline ${m.name}: size 0x${hex(size)} not a positive page multiple`);
      const nid = raw(m, 'numa-node-id');
      if (nid && nid.length !== 4) return this.einval(`Baseline ${m.name}: invalid 'numa-node-id' length ${nid.length}`);
      const node = nid ? u32At(nid, 0) | 0 : -1;
      if (nid && (node < 0 || node >= MAX_NUMNODES)) return this.einval(`Baseline ${m.name}: numa-node-id ${node} out of range`);
      reqs.push({ size, node });
    }
    if (reqs.length === 0) {
      return this.einval(
        raw(res, 'memory-bytes')
          ? 'Baseline: memory-base/memory-bytes are no longer accepted; use memory@N { size; numa-node-id; }'
          : 'Baseline has no memory@N node; the pool needs memory',
      );
    }
    return reqs;
  }

  /** mk_baseline_parse_devices: PCI requests (moved later), platform devices (kept as named). */
  private parseDevices(root: FdtNode, res: FdtNode): { pci: PciRequest[]; platform: SimPlatformDevice[] } {
    const pci: PciRequest[] = [];
    const platform: SimPlatformDevice[] = [];
    for (const d of child(res, 'devices')?.children ?? []) {
      const type = str(d, 'device-type');
      if (type === undefined) {
        this.k.log(`Device '${d.name}' has no device-type property, skipping`);
        continue;
      }
      if (type === 'pci') {
        const id = str(d, 'pci-id');
        if (id === undefined) return this.einval(`PCI device '${d.name}' missing pci-id property`);
        const pciId = parseBdf(id);
        if (pciId === undefined) return this.einval(`Invalid pci-id format '${id}' for device '${d.name}'`);
        const v = raw(d, 'vendor-id');
        if (!v || v.length !== 4) return this.einval(`PCI device '${d.name}' missing or invalid vendor-id`);
        const dv = raw(d, 'device-id');
        if (!dv || dv.length !== 4) return this.einval(`PCI device '${d.name}' missing or invalid device-id`);
        const req: PciRequest = { node: d.name, pci: pciId, vendor: u32At(v, 0) & 0xffff, device: u32At(dv, 0) & 0xffff };
        const alias = aliasOf(root, `/resources/devices/${d.name}`);
        if (alias !== undefined) req.alias = alias;
        pci.push(req);
      } else if (type === 'platform') {
        // strscpy into mk_platform_device.name[MK_PLATFORM_DEVICE_NAME_LEN = 32]
        platform.push({ name: (str(d, 'device-name') ?? d.name).slice(0, 31) });
      } else {
        this.k.log(`Unknown device-type '${type}' for device '${d.name}', skipping`);
      }
    }
    if (pci.length > 0) this.k.log(`Baseline device pool: ${pci.length} PCI devices requested`);
    if (platform.length > 0) this.k.log(`Baseline device pool: ${platform.length} platform devices specified`);
    return { pci, platform };
  }

  /** mk_baseline_validate_cpus: absent → ENODEV; the boot CPU only warns (it fails to move later). */
  private validateCpus(cpus: number[]): void {
    for (const cpu of cpus) {
      const i = this.k.cpuIndex(cpu);
      if (i < 0) {
        this.k.log(`Baseline CPU ${cpu} not found in system (not present)`);
        throw new KErr('ENODEV');
      }
      if (this.k.isPoolCpu(cpu)) {
        this.k.log(`Baseline CPU ${cpu} (logical ${i}) is not present`);
        throw new KErr('ENODEV');
      }
      if (i === 0 || cpu === 0) this.k.log(`Baseline includes boot CPU (phys ${cpu}, logical ${i}) - this may cause system instability`);
    }
    this.k.log(`Baseline CPUs validated: ${cpus.length} CPUs available for multikernel pool`);
  }

  private einval(line: string): never {
    this.k.log(line);
    throw new KErr('EINVAL');
  }
}

function hex4(v: number): string {
  return v.toString(16).padStart(4, '0');
}

/** mk_dt_node_alias (dts.c@0a54b0b4): the /aliases property whose value is the node's path. */
function aliasOf(root: FdtNode, path: string): string | undefined {
  const aliases = child(root, 'aliases');
  for (const p of aliases?.properties ?? []) {
    const v = Buffer.from(p.value);
    const value = v.subarray(0, v.indexOf(0) < 0 ? v.length : v.indexOf(0)).toString('latin1');
    if (value.startsWith('/') && value.replace(/\/+$/, '') === path) return p.name;
  }
  return undefined;
}
