/**
 * Reading back the trees the kernel renders (dts.c mk_dt_emit_tree):
 * - `/sys/fs/multikernel/device_tree` (the pool, `parsePool`),
 * - `/sys/fs/multikernel/instances/<name>/device_tree` (`parseInstance`).
 * Both are tolerant of nodes they do not know and strict about the length of the properties
 * they read (ERR_MK_INVALID_FDT from the fdt readers).
 */
import { decodeFdt } from '../fdt/codec';
import { getChild, node, getProperty, readStrings, readU32s, readU64, readU64s } from '../fdt/tree';
import type { FdtLimits, FdtNode } from '../fdt/types';
import { cpuNumber, malformed, optString, optU32, readAliases, readDevicesNode, reqProp, reqU32 } from './common';

/** A device as the kernel's rendered trees show it. */
export type TreeDevice = TreePciDevice | TreePlatformDevice;

export interface TreePciDevice {
  type: 'pci';
  /** "DDDD:BB:SS.F", lowercase hexadecimal as the kernel prints it */
  pciId: string;
  vendorId: number;
  deviceId: number;
  /** absolute node path, e.g. "/pci@0/pci@4,0" (what `aliases` point at) */
  path: string;
  /** the alias naming this node, if any */
  alias?: string;
}

export interface TreePlatformDevice {
  type: 'platform';
  /** node name under /resources/devices */
  name: string;
  deviceName?: string;
  acpiHid?: string;
  path: string;
}

export interface PoolMemoryChunk {
  /** node name, e.g. "memory@100000000"; informative only */
  name: string;
  base: bigint;
  size: bigint;
  numaNode?: number;
}

export interface PoolState {
  /**
   * How the kernel describes pool memory: 'memory-nodes' (newest: `memory@<base> { reg }` per
   * chunk) or 'base-bytes' (older kernels: `memory-base` / `memory-bytes` on `/resources`).
   */
  format: 'memory-nodes' | 'base-bytes';
  /**
   * True once a baseline was applied: the tree shows `cpus-available` or pool memory. Before
   * that the kernel renders the host's own tree: `cpus` are then the host's CPUs, not pool
   * members, and there is no memory.
   */
  hasPool: boolean;
  /** `id` of the root (0 for the host) */
  id: number;
  /** every pool member CPU (free or lent to an instance), physical ids */
  cpus: number[];
  /** the free subset of `cpus` */
  cpusAvailable: number[];
  memory: PoolMemoryChunk[];
  devices: TreeDevice[];
  aliases: Record<string, string>;
}

export interface InstanceTree {
  /** `model`: the instance name */
  name: string;
  id: number;
  compatible?: string;
  /** base of the first memory region; absent when the instance holds no memory */
  memoryBase?: bigint;
  /** total bytes over all regions; 0n when none */
  memoryBytes: bigint;
  cpus: number[];
  devices: TreeDevice[];
  aliases: Record<string, string>;
  /** true when the instance carries a `chosen/multikernel,host-tree` boot handoff */
  hostTree: boolean;
}

function cpuList(n: FdtNode, name: string): number[] {
  const p = getProperty(n, name);
  return p === undefined ? [] : readU64s(p).map((v) => cpuNumber(`resources/${name}`, v));
}

function hex(v: number, width: number): string {
  return v.toString(16).padStart(width, '0');
}

/** PCI leaves below the `multikernel,pci-host-bridge` nodes of the root, with their paths. */
function hostBridgeDevices(root: FdtNode, aliases: Record<string, string>): TreePciDevice[] {
  const out: TreePciDevice[] = [];
  const aliasOf = new Map(Object.entries(aliases).map(([a, p]) => [p, a]));
  const walk = (n: FdtNode, path: string, domain: number): void => {
    for (const child of n.children) {
      const reg = getProperty(child, 'reg');
      if (reg === undefined || reg.value.length < 4) continue;
      const childPath = `${path}/${child.name}`;
      if (getProperty(child, 'vendor-id') === undefined) {
        walk(child, childPath, domain);
        continue;
      }
      const hi = readU32s(reg)[0]!;
      const devfn = (hi >>> 8) & 0xff;
      const dev: TreePciDevice = {
        type: 'pci',
        pciId: `${hex(domain, 4)}:${hex((hi >>> 16) & 0xff, 2)}:${hex(devfn >>> 3, 2)}.${devfn & 7}`,
        vendorId: reqU32(child, 'vendor-id'),
        deviceId: reqU32(child, 'device-id'),
        path: childPath,
      };
      const alias = aliasOf.get(childPath);
      if (alias !== undefined) dev.alias = alias;
      out.push(dev);
    }
  };
  for (const bridge of root.children) {
    const compat = getProperty(bridge, 'compatible');
    if (compat === undefined || !readStrings(compat).includes('multikernel,pci-host-bridge')) continue;
    walk(bridge, `/${bridge.name}`, optU32(bridge, 'linux,pci-domain') ?? 0);
  }
  return out;
}

/** Devices of a rendered tree: `resources/devices` entries, then the host-bridge PCI leaves. */
function treeDevices(root: FdtNode, resources: FdtNode, aliases: Record<string, string>): TreeDevice[] {
  const listed: TreeDevice[] = readDevicesNode(getChild(resources, 'devices')).map((d) => {
    const path = `/resources/devices/${d.name}`;
    if (d.type === 'platform') return { ...d, path };
    const dev: TreePciDevice = { type: 'pci', pciId: d.pciId, vendorId: d.vendorId, deviceId: d.deviceId, path };
    const alias = Object.keys(aliases).find((a) => aliases[a] === path);
    if (alias !== undefined) dev.alias = alias;
    return dev;
  });
  return [...listed, ...hostBridgeDevices(root, aliases)];
}

function resourcesOf(root: FdtNode, what: string): FdtNode {
  const resources = getChild(root, 'resources');
  if (resources === undefined) malformed(`${what}: the tree has no /resources node; is this a multikernel device_tree?`);
  return resources;
}

/** `reg = <u64 base, u64 size>` (16 bytes). */
export function readMemReg(n: FdtNode, where: string): { base: bigint; size: bigint } {
  const cells = readU64s(reqProp(n, 'reg'));
  if (cells.length !== 2) malformed(`${where}: reg must be <u64 base, u64 size> (16 bytes), got ${cells.length * 8} bytes`);
  return { base: cells[0]!, size: cells[1]! };
}

/** Parse what reading `/sys/fs/multikernel/device_tree` returned. */
export function parsePool(dtb: Uint8Array, limits?: FdtLimits): PoolState {
  const root = decodeFdt(dtb, limits).root;
  // Only "a kernel that manages a pool" renders /resources (Documentation/multikernel/
  // device-tree.rst): before the baseline is written there may be none at all.
  const resources = getChild(root, 'resources') ?? node('resources');
  const aliases = readAliases(root);
  const memory: PoolMemoryChunk[] = [];
  for (const child of resources.children) {
    if (!child.name.startsWith('memory@')) continue;
    const chunk: PoolMemoryChunk = { name: child.name, ...readMemReg(child, `resources/${child.name}`) };
    const numa = optU32(child, 'numa-node-id');
    if (numa !== undefined) chunk.numaNode = numa;
    memory.push(chunk);
  }
  const baseProp = getProperty(resources, 'memory-base');
  const bytesProp = getProperty(resources, 'memory-bytes');
  let format: PoolState['format'] = 'memory-nodes';
  if (baseProp !== undefined || bytesProp !== undefined) {
    format = 'base-bytes';
    if (baseProp === undefined || bytesProp === undefined) {
      malformed('pool device_tree: resources has only one of memory-base / memory-bytes; both are needed');
    }
    const base = readU64(baseProp);
    memory.push({ name: `memory@${base.toString(16)}`, base, size: readU64(bytesProp) });
  }
  return {
    format,
    hasPool: memory.length > 0 || getProperty(resources, 'cpus-available') !== undefined,
    id: optU32(root, 'id') ?? 0,
    cpus: cpuList(resources, 'cpus'),
    cpusAvailable: cpuList(resources, 'cpus-available'),
    memory,
    devices: treeDevices(root, resources, aliases),
    aliases,
  };
}

/** Parse what reading `/sys/fs/multikernel/instances/<name>/device_tree` returned. */
export function parseInstance(dtb: Uint8Array, limits?: FdtLimits): InstanceTree {
  const root = decodeFdt(dtb, limits).root;
  const resources = resourcesOf(root, 'instance device_tree');
  const aliases = readAliases(root);
  const name = optString(root, 'model');
  if (name === undefined) malformed('instance device_tree: the root has no model property (the instance name)');
  const baseProp = getProperty(resources, 'memory-base');
  const bytesProp = getProperty(resources, 'memory-bytes');
  const tree: InstanceTree = {
    name,
    id: reqU32(root, 'id'),
    memoryBytes: bytesProp === undefined ? 0n : readU64(bytesProp),
    cpus: cpuList(resources, 'cpus'),
    devices: treeDevices(root, resources, aliases),
    aliases,
    hostTree: getChild(root, 'chosen')?.children.some((c) => c.name === 'multikernel,host-tree') ?? false,
  };
  const compatible = optString(root, 'compatible');
  if (compatible !== undefined) tree.compatible = compatible;
  if (baseProp !== undefined) tree.memoryBase = readU64(baseProp);
  return tree;
}
