/**
 * The baseline DTB written once to `/sys/fs/multikernel/device_tree` (kernel-interface.md 3.4,
 * kernel/multikernel/baseline.c): a request for the CPUs, memory and devices the host hands
 * to the multikernel pool.
 */
import { encodeFdt, node, prop } from '../fdt';
import type { Fdt, FdtNode } from '../fdt/types';
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
  devicesNode,
  invalid,
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

/** Build and encode the baseline; refuses a blob the kernel could not take in one write (> 1 MiB). */
export function encodeBaseline(spec: BaselineSpec): Buffer {
  const blob = encodeFdt(buildBaseline(spec));
  if (blob.length > MAX_BASELINE_BYTES) {
    invalid(`baseline: the encoded blob is ${blob.length} bytes; device_tree takes at most ${MAX_BASELINE_BYTES} bytes in one write, describe fewer devices`);
  }
  return blob;
}
