/**
 * The baseline DTB written once to `/sys/fs/multikernel/device_tree` (kernel-interface.md 3.4,
 * kernel/multikernel/baseline.c): a request for the CPUs, memory and devices the host hands
 * to the multikernel pool.
 */
import { decodeFdt, encodeFdt } from '../fdt/codec';
import { getChild, getProperty, node, prop, readU32, readU64, readU64s } from '../fdt/tree';
import type { Fdt, FdtLimits, FdtNode } from '../fdt/types';
import { OldKerfFormatError } from './errors';
import {
  MAX_BASELINE_BYTES,
  MAX_BASELINE_MEMORY_NODES,
  type MkDevice,
  checkAliasName,
  checkCpuList,
  checkDevices,
  checkNumaNode,
  checkSize,
  checkText,
  cpuNumber,
  devicesNode,
  invalid,
  malformed,
  optString,
  readAliases,
  readDevicesNode,
  reqProp,
  show,
} from './common';

export interface BaselineMemory {
  /** bytes the kernel allocates (alloc_contig_pages) for the pool; non-zero, page-aligned */
  size: bigint;
  /** NUMA node to allocate from; any node when absent */
  numaNode?: number;
}

export interface BaselineSpec {
  /**
   * Physical CPU ids: x86 APIC id (`apicid` in /proc/cpuinfo), arm64 MPIDR affinity (the `reg`
   * of /cpus/cpu@...), riscv hart id. Never 0 (the boot CPU). Each must be present and online.
   */
  cpus: number[];
  /** one `memory@<index> { size; numa-node-id; }` per entry; at least one (the pool needs memory) */
  memory: BaselineMemory[];
  devices?: MkDevice[];
  /** alias name -> absolute path of a device node of this baseline, e.g. "/resources/devices/nic0" */
  aliases?: Record<string, string>;
  /** root `compatible`; default "multikernel-v1" (not checked by the kernel) */
  compatible?: string;
}

export const BASELINE_COMPATIBLE = 'multikernel-v1';

function validateBaseline(spec: BaselineSpec): void {
  if (typeof spec !== 'object' || spec === null) invalid('baseline: the spec must be an object { cpus, memory, devices?, aliases? }');
  checkCpuList('baseline: cpus', spec.cpus);
  if (!Array.isArray(spec.memory) || spec.memory.length === 0) {
    invalid('baseline: memory must list at least one { size } entry; the kernel rejects a baseline without memory@N nodes');
  }
  if (spec.memory.length > MAX_BASELINE_MEMORY_NODES) {
    invalid(`baseline: memory has ${spec.memory.length} entries; at most ${MAX_BASELINE_MEMORY_NODES} (MAX_NUMNODES) are accepted, merge chunks of one NUMA node into one entry`);
  }
  spec.memory.forEach((m, i) => {
    checkSize(`baseline: memory[${i}].size`, m?.size);
    if (m.numaNode !== undefined) checkNumaNode(`baseline: memory[${i}].numaNode`, m.numaNode);
  });
  const devices = checkDevices('baseline: devices', spec.devices ?? [], false);
  if (spec.compatible !== undefined) checkText('baseline: compatible', spec.compatible, 255);
  const deviceNames = new Set(devices.map((d) => d.name));
  for (const [alias, path] of Object.entries(spec.aliases ?? {})) {
    checkAliasName(`baseline: aliases.${alias}`, alias);
    const m = typeof path === 'string' ? /^\/resources\/devices\/([^/]+)$/.exec(path) : null;
    if (m === null || !deviceNames.has(m[1]!)) {
      invalid(`baseline: aliases.${alias}: ${show(path)} must be the path of a device of this baseline, "/resources/devices/<name>"`);
    }
  }
}

/** Build the baseline tree (validated). Never emits memory-base/memory-bytes nor /instances. */
export function buildBaseline(spec: BaselineSpec): Fdt {
  validateBaseline(spec);
  const resources: FdtNode = node(
    'resources',
    [prop.u64('cpus', ...spec.cpus)],
    [
      ...spec.memory.map((m, i) =>
        node(`memory@${i.toString(16)}`, [
          prop.u64('size', m.size),
          ...(m.numaNode === undefined ? [] : [prop.u32('numa-node-id', m.numaNode)]),
        ]),
      ),
      ...(spec.devices === undefined || spec.devices.length === 0 ? [] : [devicesNode(spec.devices)]),
    ],
  );
  const aliases = Object.entries(spec.aliases ?? {});
  const root = node(
    '',
    [prop.string('compatible', spec.compatible ?? BASELINE_COMPATIBLE)],
    [resources, ...(aliases.length === 0 ? [] : [node('aliases', aliases.map(([a, p]) => prop.string(a, p)))])],
  );
  return { root, reservations: [], bootCpuId: 0 };
}

/**
 * Build and encode the baseline; refuses a blob the kernel could not take in one write (> 1 MiB).
 * `strings: 'libfdt'` lays the strings block out as kerf (pylibfdt) does.
 */
export function encodeBaseline(spec: BaselineSpec, options: { strings?: 'dtc' | 'libfdt' } = {}): Buffer {
  const blob = encodeFdt(buildBaseline(spec), { strings: options.strings ?? 'dtc' });
  if (blob.length > MAX_BASELINE_BYTES) {
    invalid(`baseline: the encoded blob is ${blob.length} bytes; device_tree takes at most ${MAX_BASELINE_BYTES} bytes in one write, describe fewer devices`);
  }
  return blob;
}

/**
 * Read a baseline blob (one this package or kerf wrote) back into a spec, as baseline.c@16083690
 * reads it: `cpus` (u64 cells), the `memory@N { size; numa-node-id; }` requests, the devices and
 * the aliases naming them. kerf 0.1's format (`memory-base`/`memory-bytes` on /resources and no
 * memory@N node) raises OldKerfFormatError: the newest kernel refuses it with EINVAL. Does not
 * validate beyond the shape; buildBaseline/encodeBaseline validate a spec.
 */
export function parseBaseline(dtb: Uint8Array, limits?: FdtLimits): BaselineSpec {
  const root = decodeFdt(dtb, limits).root;
  const resources = getChild(root, 'resources');
  if (resources === undefined) malformed('baseline: no /resources node (the kernel fails with EINVAL)');
  const memory: BaselineMemory[] = resources.children
    .filter((c) => c.name.startsWith('memory@'))
    .map((m) => {
      const out: BaselineMemory = { size: readU64(reqProp(m, 'size')) };
      const nid = getProperty(m, 'numa-node-id');
      if (nid !== undefined) out.numaNode = readU32(nid);
      return out;
    });
  if (memory.length === 0 && (getProperty(resources, 'memory-base') !== undefined || getProperty(resources, 'memory-bytes') !== undefined)) {
    throw new OldKerfFormatError(
      'baseline: /resources gives memory-base/memory-bytes and no memory@N node: this baseline was written by kerf 0.1, and the newest kernel ' +
        'refuses it with EINVAL (baseline.c: "memory-base/memory-bytes are no longer accepted"). Write it again with a newer kerf (0.2 or later) ' +
        "or with this package's encodeBaseline, giving the pool memory as memory entries { size, numaNode }.",
      { memoryBase: getProperty(resources, 'memory-base') && readU64(getProperty(resources, 'memory-base')!), memoryBytes: getProperty(resources, 'memory-bytes') && readU64(getProperty(resources, 'memory-bytes')!) },
    );
  }
  const spec: BaselineSpec = {
    cpus: readU64s(reqProp(resources, 'cpus')).map((c) => cpuNumber('baseline: resources/cpus', c)),
    memory,
  };
  const devices = getChild(resources, 'devices');
  if (devices !== undefined) spec.devices = readDevicesNode(devices);
  const aliases = readAliases(root);
  if (Object.keys(aliases).length > 0) spec.aliases = aliases;
  const compatible = optString(root, 'compatible');
  if (compatible !== undefined) spec.compatible = compatible;
  return spec;
}
