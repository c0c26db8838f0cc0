/** The baseline write to /sys/fs/multikernel/device_tree (kernfs.c, baseline.c). */
import { fdtCheckHeader, fdtTotalSize } from './fdtcheck';
import type { Kernel } from './kernel';
import { child, childrenWithPrefix, cpuList, decodeOrEinval, KErr, memSize, neg, numaOf, pciId, raw, str } from './props';

export class Baseline {
  constructor(private readonly k: Kernel) {}

  write(data: Uint8Array): number {
    if (!fdtCheckHeader(data) || fdtTotalSize(data) !== data.length) throw new KErr('EINVAL');
    const root = decodeOrEinval(data);
    const instances = child(root, 'instances');
    if (instances && instances.children.length > 0) {
      this.k.log('Device tree contains kernel instances. Host kernel configuration must not contain instances.');
      throw new KErr('EINVAL');
    }
    if (this.k.s.pool) {
      this.k.log('Baseline validation and initialization failed: -16');
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
      if (d.type === 'pci' && (d.pci === undefined || !this.k.s.topology.pciDevices.includes(d.pci))) throw this.baselineFail('ENODEV');
    }
    this.k.s.pool = { cpus: [], memory: [], devices: [], parkChunk: null };
    try {
      for (const m of mems) this.k.mem.growPool(m.size, m.node);
    } catch (e) {
      this.k.s.pool = null;
      throw this.baselineFail((e as KErr).code);
    }
    this.k.s.pool.cpus.push(...cpus);
    for (const d of devices) if (d.pci !== undefined) this.k.s.pool.devices.push({ name: d.name, pciId: d.pci });
    this.k.log(`Multikernel pool initialized: ${cpus.length} CPUs, ${mems.reduce((a, m) => a + m.size, 0) >> 20} MB`);
    return data.length;
  }

  private baselineFail(code: string): KErr {
    this.k.log(`Baseline validation and initialization failed: ${neg(code)}`);
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
    const i = this.k.cpuIndex(apicId);
    if (i < 0) throw this.baselineFail('ENODEV');
    if (duplicate || this.k.isPoolCpu(apicId)) throw this.baselineFail('EEXIST');
    if (this.k.s.topology.cpus[i]!.online === false) throw this.baselineFail('EINVAL');
    if (i === 0) throw this.baselineFail('EBUSY'); // the boot CPU cannot be taken down
  }
}
