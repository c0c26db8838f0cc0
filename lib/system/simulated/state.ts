/**
 * The simulated host's state: plain JSON, so that it can live in memory or in a state directory
 * shared by several processes. It holds what the kernel keeps (sizes, cmdline, segment counts),
 * never image bytes.
 */
import type { SimInstanceStatus } from './channels';

export interface SimCpu {
  /** physical id: APIC id on x86_64, MPIDR on arm64 */
  apicId: number;
  node: number;
  /** false: present but offline (refused as a pool member with EINVAL) */
  online?: boolean;
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
  panicked: boolean;
  cpus: number[];
  memory: MemRange[];
  /** pool device names (pci-ids) given to the instance */
  devices: string[];
  image?: SimImage;
}

export interface SimPoolDevice {
  name: string;
  pciId: string;
}

export interface SimPool {
  /** physical CPU ids, in the order they joined */
  cpus: number[];
  memory: MemRange[];
  devices: SimPoolDevice[];
  /** base of the chunk holding the pool park area, or null when the pool has no memory */
  parkChunk: number | null;
}

export type TxStatus = 'pending' | 'applied' | 'failed' | 'removed';

export interface SimTx {
  id: number;
  status: TxStatus;
  targetPath: string;
  resources: string;
  /** base64 of the blob as written */
  dtbo: string;
}

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
  /** states passed to notify() */
  notified: string[];
}

export const GiB = 1024 * 1024 * 1024;
export const MiB = 1024 * 1024;

export const DEFAULT_TOPOLOGY: SimTopology = {
  cpus: [0, 2, 4, 6, 8, 10, 12, 14].map((apicId, i) => ({ apicId, node: i < 4 ? 0 : 1 })),
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
  };
}
