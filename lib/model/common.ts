/**
 * Shared rules and encoders of the multikernel tree shapes (baseline, overlay, pool and instance
 * trees). Every limit here is taken from the kernel sources named in docs/kernel-interface.md
 * sections 3.3 to 3.6 (kernel/multikernel/baseline.c, overlay.c, dts.c, include/linux/multikernel.h).
 */
import { MultikernelError } from '../errors';
import { getChild, getProperty, node, prop, readString, readU32 } from '../fdt/tree';
import type { FdtNode, FdtProperty } from '../fdt/types';

/** The page size every memory size and base must be a multiple of (x86_64, arm64 4K, riscv). */
export const PAGE_SIZE = 4096;

/**
 * The kernel's MAX_NUMNODES depends on CONFIG_NODES_SHIFT (x86_64 default 64, up to 1024 with
 * MAXSMP). NUMA node ids are accepted up to the largest configuration (1023); the number of
 * baseline memory nodes is capped at the common default, 64, because the kernel refuses more
 * than MAX_NUMNODES `memory@` nodes (-E2BIG) and rejecting early is cheaper than a failed write.
 */
export const MAX_NUMA_NODE_ID = 1023;
export const MAX_BASELINE_MEMORY_NODES = 64;

/** `atomic_write_len` of `device_tree`: the baseline must arrive in one write of at most 1 MiB. */
export const MAX_BASELINE_BYTES = 1024 * 1024;

/** `platform device-name` and `acpi-hid` buffers (MK_PLATFORM_DEVICE_NAME_LEN 32 / _ID_LEN 16, NUL included). */
export const MAX_PLATFORM_DEVICE_NAME = 31;
export const MAX_ACPI_HID = 15;

/** A device described in full, as in the baseline's and instance-create's `resources/devices`. */
export type MkDevice = MkPciDevice | MkPlatformDevice;

export interface MkPciDevice {
  type: 'pci';
  /** node name under `devices`, e.g. "nic0" */
  name: string;
  /** "DDDD:BB:SS.F", hexadecimal */
  pciId: string;
  /** required by the kernel (baseline.c and dts.c reject a PCI device without them) */
  vendorId: number;
  deviceId: number;
}

export interface MkPlatformDevice {
  type: 'platform';
  name: string;
  deviceName?: string;
  acpiHid?: string;
}

/** Throw the library's validation error. */
export function invalid(message: string, details?: Record<string, unknown>): never {
  throw new MultikernelError('ERR_MK_INVALID_SPEC', message, details === undefined ? {} : { details });
}

/** Throw the library's malformed-tree error. */
export function malformed(message: string): never {
  throw new MultikernelError('ERR_MK_INVALID_FDT', message);
}

export function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number') return String(v);
  return String(JSON.stringify(v));
}

/** Device tree node name (DT spec 2.2.1): 1..31 chars, starts with a letter, `[A-Za-z0-9,._+-]`. */
const NODE_NAME = /^[A-Za-z][A-Za-z0-9,._+-]{0,30}$/;
export function checkNodeName(where: string, name: unknown): string {
  if (typeof name !== 'string' || !NODE_NAME.test(name)) {
    invalid(`${where}: ${show(name)} is not a valid device tree node name; use 1 to 31 characters from A-Z a-z 0-9 , . _ + - starting with a letter`);
  }
  return name;
}

/** Alias names (DT spec 3.3): lowercase letters, digits and '-', at most 31 characters. */
const ALIAS_NAME = /^[a-z][a-z0-9-]{0,30}$/;
export function checkAliasName(where: string, name: unknown): string {
  if (typeof name !== 'string' || !ALIAS_NAME.test(name)) {
    invalid(`${where}: ${show(name)} is not a valid alias name; use 1 to 31 characters from a-z 0-9 - starting with a letter`);
  }
  return name;
}

/** A property string: non-empty, printable ASCII, at most `max` characters. */
export function checkText(where: string, s: unknown, max: number): string {
  if (typeof s !== 'string' || s.length === 0 || s.length > max || !/^[\x20-\x7e]+$/.test(s)) {
    invalid(`${where}: ${show(s)} must be 1 to ${max} printable ASCII characters`);
  }
  return s;
}

const PCI_ID = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]$/;
export function checkPciId(where: string, id: unknown): string {
  if (typeof id !== 'string' || !PCI_ID.test(id)) {
    invalid(`${where}: ${show(id)} is not a PCI address; write it as DDDD:BB:SS.F in hexadecimal (slot 00-1f, function 0-7), e.g. "0000:00:04.0"`);
  }
  return id;
}

export function checkU32(where: string, v: unknown, what = 'a u32'): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    invalid(`${where}: ${show(v)} is not ${what} (an integer 0..4294967295)`);
  }
  return v;
}

export function checkU16(where: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff) {
    invalid(`${where}: ${show(v)} is not a 16-bit PCI id (an integer 0..0xffff)`);
  }
  return v;
}

export function checkNumaNode(where: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_NUMA_NODE_ID) {
    invalid(`${where}: ${show(v)} is not a NUMA node id; use an integer 0..${MAX_NUMA_NODE_ID} (the kernel also rejects ids >= its MAX_NUMNODES)`);
  }
  return v;
}

/**
 * A physical CPU id (APIC id on x86, MPIDR affinity on arm64, hart id on riscv), carried as a
 * u64 cell. `assign` rejects id 0: it is the boot CPU (APIC id 0 / MPIDR 0 / usually hart 0);
 * the kernel only warns ("may cause system instability") but taking it from the host is never
 * what a caller wants, and the pool cannot hand it back while the host runs on it.
 */
export function checkCpuId(where: string, v: unknown, assign: boolean): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    invalid(`${where}: ${show(v)} is not a physical CPU id; use a non-negative integer (APIC id / MPIDR / hart id)`);
  }
  if (assign && v === 0) {
    invalid(`${where}: CPU 0 is the boot CPU and must stay with the host kernel; pick other physical CPU ids (APIC id / MPIDR / hart id)`);
  }
  return v;
}

export function checkCpuList(where: string, cpus: unknown): number[] {
  if (!Array.isArray(cpus) || cpus.length === 0) {
    invalid(`${where}: must be a non-empty array of physical CPU ids (the kernel rejects an empty cpus property)`);
  }
  const seen = new Set<number>();
  cpus.forEach((c, i) => {
    checkCpuId(`${where}[${i}]`, c, true);
    if (seen.has(c)) invalid(`${where}[${i}]: CPU ${c} is listed twice; list each physical CPU once`);
    seen.add(c);
  });
  return cpus as number[];
}

/** A byte count: a bigint, non-zero, a multiple of the page size, at most u64. */
export function checkSize(where: string, v: unknown): bigint {
  if (typeof v !== 'bigint' || v <= 0n || v > 0xffffffffffffffffn || v % BigInt(PAGE_SIZE) !== 0n) {
    invalid(`${where}: ${show(v)} must be a non-zero multiple of ${PAGE_SIZE} bytes (a bigint, e.g. 512n * 1024n * 1024n)`);
  }
  return v;
}

/** A physical base address: a bigint, page-aligned, at most u64. */
export function checkBase(where: string, v: unknown): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn || v % BigInt(PAGE_SIZE) !== 0n) {
    invalid(`${where}: ${show(v)} must be a page-aligned (${PAGE_SIZE}) physical address given as a bigint`);
  }
  return v;
}

/** Validate one fully described device. `needPlatformId`: instance-create requires device-name or acpi-hid. */
export function checkDevice(where: string, d: unknown, needPlatformId: boolean): MkDevice {
  if (typeof d !== 'object' || d === null) invalid(`${where}: must be a device object { type: 'pci' | 'platform', name, ... }`);
  const dev = d as Partial<MkPciDevice> & Partial<MkPlatformDevice> & { type?: unknown };
  checkNodeName(`${where}.name`, dev.name);
  if (dev.type === 'pci') {
    checkPciId(`${where}.pciId`, dev.pciId);
    checkU16(`${where}.vendorId`, dev.vendorId);
    checkU16(`${where}.deviceId`, dev.deviceId);
    return d as MkPciDevice;
  }
  if (dev.type === 'platform') {
    if (dev.deviceName !== undefined) checkText(`${where}.deviceName`, dev.deviceName, MAX_PLATFORM_DEVICE_NAME);
    if (dev.acpiHid !== undefined) checkText(`${where}.acpiHid`, dev.acpiHid, MAX_ACPI_HID);
    if (needPlatformId && dev.deviceName === undefined && dev.acpiHid === undefined) {
      invalid(`${where}: a platform device needs deviceName or acpiHid (the kernel rejects one with neither)`);
    }
    return d as MkPlatformDevice;
  }
  return invalid(`${where}.type: ${show(dev.type)} must be 'pci' or 'platform'`);
}

export function checkDevices(where: string, list: unknown, needPlatformId: boolean): MkDevice[] {
  if (!Array.isArray(list)) invalid(`${where}: must be an array of devices`);
  const names = new Set<string>();
  const pciIds = new Set<string>();
  return list.map((d, i) => {
    const dev = checkDevice(`${where}[${i}]`, d, needPlatformId);
    if (names.has(dev.name)) invalid(`${where}[${i}].name: ${show(dev.name)} is used twice; device node names must be unique`);
    names.add(dev.name);
    if (dev.type === 'pci') {
      const key = dev.pciId.toLowerCase();
      if (pciIds.has(key)) invalid(`${where}[${i}].pciId: ${show(dev.pciId)} is listed twice; list each PCI function once`);
      pciIds.add(key);
    }
    return dev;
  });
}

/** The `devices { ... }` node: one child per device, as baseline.c and dts.c read it. */
export function devicesNode(devices: MkDevice[]): FdtNode {
  return node(
    'devices',
    [],
    devices.map((d) =>
      d.type === 'pci'
        ? node(d.name, [
            prop.string('device-type', 'pci'),
            prop.string('pci-id', d.pciId),
            prop.u32('vendor-id', d.vendorId),
            prop.u32('device-id', d.deviceId),
          ])
        : node(d.name, [
            prop.string('device-type', 'platform'),
            ...(d.deviceName === undefined ? [] : [prop.string('device-name', d.deviceName)]),
            ...(d.acpiHid === undefined ? [] : [prop.string('acpi-hid', d.acpiHid)]),
          ]),
    ),
  );
}

/**
 * Read the children of a `devices` node back. Nodes without `device-type`, or of another type,
 * are skipped, as the kernel does.
 */
export function readDevicesNode(devices: FdtNode | undefined): MkDevice[] {
  const out: MkDevice[] = [];
  for (const child of devices?.children ?? []) {
    const type = optString(child, 'device-type');
    if (type === 'pci') {
      out.push({
        type: 'pci',
        name: child.name,
        pciId: reqString(child, 'pci-id'),
        vendorId: reqU32(child, 'vendor-id'),
        deviceId: reqU32(child, 'device-id'),
      });
    } else if (type === 'platform') {
      const dev: MkPlatformDevice = { type: 'platform', name: child.name };
      const deviceName = optString(child, 'device-name');
      const acpiHid = optString(child, 'acpi-hid');
      if (deviceName !== undefined) dev.deviceName = deviceName;
      if (acpiHid !== undefined) dev.acpiHid = acpiHid;
      out.push(dev);
    }
  }
  return out;
}

export function optString(n: FdtNode, name: string): string | undefined {
  const p = getProperty(n, name);
  return p === undefined ? undefined : readString(p);
}

export function optU32(n: FdtNode, name: string): number | undefined {
  const p = getProperty(n, name);
  return p === undefined ? undefined : readU32(p);
}

export function reqProp(n: FdtNode, name: string): FdtProperty {
  const p = getProperty(n, name);
  if (p === undefined) malformed(`node ${show(n.name || '/')}: missing property ${show(name)}`);
  return p;
}

export function reqString(n: FdtNode, name: string): string {
  return readString(reqProp(n, name));
}

export function reqU32(n: FdtNode, name: string): number {
  return readU32(reqProp(n, name));
}

/** A u64 cell as a JS number, for physical CPU ids. */
export function cpuNumber(where: string, v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) malformed(`${where}: CPU id ${v} is larger than this library supports (2^53 - 1)`);
  return Number(v);
}

/** The `aliases` node as a record (string properties only). */
export function readAliases(root: FdtNode): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of getChild(root, 'aliases')?.properties ?? []) out[p.name] = readString(p);
  return out;
}
