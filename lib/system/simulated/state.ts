/**
 * The simulated host's state: plain JSON, so that it can live in memory or in a state directory
 * shared by several processes. It holds what the kernel keeps (sizes, cmdline, segment counts),
 * never image bytes.
 */
import type { TxStatus } from '../../kernfs';
import type { SimInstanceStatus } from './channels';

export type { TxStatus };

export interface SimCpu {
  /** physical id: APIC id on x86_64, MPIDR on arm64 */
  apicId: number;
  node: number;
  /** false: present but offline (refused as a pool member with EINVAL) */
  online?: boolean;
  /** physical package (default: the NUMA node) */
  package?: number;
  /** core id within the package (default: the logical number); CPUs of one package and core are SMT siblings */
  core?: number;
}

/** the physical package of a CPU (SimCpu.package, by default its NUMA node) */
export function cpuPackage(cpu: SimCpu): number {
  return cpu.package ?? cpu.node;
}

/** the core id of the CPU with logical number `i` (SimCpu.core, by default `i`: no SMT) */
export function cpuCore(cpu: SimCpu, i: number): number {
  return cpu.core ?? i;
}

export interface SimTopology {
  cpus: SimCpu[];
  memoryBytes: number;
  numaNodes: number;
  /** host PCI devices, "DDDD:BB:SS.F" (default none) */
  pciDevices?: string[];
}

/** The topology as the state keeps it, every field filled in. */
export type SimHostTopology = Required<SimTopology>;

export interface MemRange {
  base: number;
  size: number;
  node: number;
}

export interface SimImage {
  kind: 'elf' | 'arm64-image';
  kernelBytes: number;
  initrdBytes: number;
  cmdline: string;
  segments: number;
  entry: number;
}

export interface SimInstance {
  id: number;
  name: string;
  status: SimInstanceStatus;
  /** the spawn kernel hangs (hang()): the status stays 'active' and it answers nothing */
  hung: boolean;
  cpus: number[];
  memory: MemRange[];
  /** PCI devices (pci-ids) given to the instance, in the order they arrived */
  devices: string[];
  /** the /aliases name each of those devices carries (mk_pci_device.alias), by pci-id */
  deviceAliases?: Record<string, string>;
  /** platform devices given at instance-create (dts.c mk_dt_parse_single_platform_device) */
  platformDevices?: SimPlatformDevice[];
  /** base64 FDT of the instance-create `chosen/multikernel,host-tree` contents (dts.c mk_dt_store_host_tree) */
  hostTree?: string;
  image?: SimImage;
}

export interface SimPlatformDevice {
  /** device-name, or the node name when there is none */
  name: string;
  hid?: string;
}

/** A PCI device free in the pool (the host's mk_self->pci_devices list). */
export interface SimPoolDevice {
  pciId: string;
  /** the /aliases name it carries: the baseline's alias of its node, or a pool device-add's `alias` */
  alias?: string;
}

export interface SimPool {
  /**
   * Every pool member CPU (free or lent to an instance), physical ids. Filtered by "not held by
   * an instance" it is the kernel's free set in its order: a CPU that comes back from an
   * instance is moved to the end, as mk_cpu_set_add appends it.
   */
  cpus: number[];
  /** pool chunks in the order they were grown (mk_pool->chunks) */
  memory: MemRange[];
  /** free pool PCI devices, in list order (a device lent to an instance is not here) */
  devices: SimPoolDevice[];
  /** mk_self->pci_devices_valid: false until the pool first lists a PCI device (core.c) */
  devicesValid?: boolean;
  /** platform devices of the baseline, free in the pool */
  platformDevices?: SimPlatformDevice[];
  /** base of the chunk holding the pool park area, or null when the pool has no memory */
  parkChunk: number | null;
}

export interface SimTx {
  id: number;
  status: TxStatus;
  targetPath: string;
  resources: string;
  /** base64 of the blob as written */
  dtbo: string;
  /** errno name of the operation that failed the transaction (shown by `txReason` in tx_N/reason) */
  reason?: string;
}

/** An ordinary file of the host (kerf's lock file), in one of HOST_DIRS. */
export interface SimHostFile {
  /** Date.now() when it was created: its st_mtime */
  createdMs: number;
  /** its bytes, base64 (absent: empty, as kerf's own lock file) */
  data?: string;
}

/** The host directories whose ordinary files the simulator keeps, with their modes. */
export const HOST_DIRS: Readonly<Record<string, number>> = { '/run': 0o755, '/var/run': 0o755, '/tmp': 0o1777 };

export interface SimState {
  version: 1;
  topology: SimHostTopology;
  mounted: boolean;
  /** physical ids of CPUs departed into the pool (not present on the host) */
  pool: SimPool | null;
  instances: SimInstance[];
  txs: SimTx[];
  /** last transaction id handed out; the kernel's counter starts at 1, so the first tx is 2 */
  txCounter: number;
  dmesg: string[];
  /**
   * How many lines were dropped from the front of `dmesg` (the ring keeps the newest 2000): the
   * sequence number of `dmesg[0]`, as /dev/kmsg numbers records. Absent in states saved before
   * the log was readable as records: 0.
   */
  dmesgDropped?: number;
  /** states passed to notify() */
  notified: string[];
  /**
   * The host's ordinary files by absolute path (lock files in HOST_DIRS). Added after version 1
   * was first written: a version-1 state without it is read as having none (state-dir.ts).
   */
  hostFiles: Record<string, SimHostFile>;
}

export const GiB = 1024 * 1024 * 1024;
export const MiB = 1024 * 1024;

/**
 * 8 CPUs, APIC ids 0,2,…,14; logical 0-3 on node and package 0, 4-7 on node and package 1; two
 * threads per core (0-1, 2-3, 4-5, 6-7), so the boot CPU's sibling (logical 1) is never part of a
 * whole core a pool can take.
 */
export const DEFAULT_TOPOLOGY: SimTopology = {
  cpus: [0, 2, 4, 6, 8, 10, 12, 14].map((apicId, i) => ({ apicId, node: i < 4 ? 0 : 1, package: i < 4 ? 0 : 1, core: (i % 4) >> 1 })),
  memoryBytes: 16 * GiB,
  numaNodes: 2,
  pciDevices: ['0000:00:04.0', '0000:00:05.0'],
};

export function initialState(topology: SimTopology): SimState {
  return {
    version: 1,
    topology: { ...structuredClone(topology), pciDevices: topology.pciDevices?.slice() ?? [] },
    mounted: false,
    pool: null,
    instances: [],
    txs: [],
    txCounter: 1,
    dmesg: [],
    notified: [],
    hostFiles: {},
  };
}
