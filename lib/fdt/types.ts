/**
 * The in-memory device tree shared by the codec (lib/fdt/codec.ts), the DTS printer and parser
 * (lib/fdt/dts.ts), the multikernel model (lib/model) and the simulated kernel.
 * Property and child order is kept as given: encoding is deterministic and follows it.
 */
export interface FdtProperty {
  name: string;
  value: Uint8Array;
}

export interface FdtNode {
  /** node name with its unit address, e.g. "memory@0"; "" for the root */
  name: string;
  properties: FdtProperty[];
  children: FdtNode[];
}

export interface FdtReservation {
  address: bigint;
  size: bigint;
}

export interface Fdt {
  root: FdtNode;
  /** the memory reservation block; usually empty */
  reservations: FdtReservation[];
  /** boot_cpuid_phys from the header */
  bootCpuId: number;
}

/** Limits applied when decoding (and parsing) untrusted input. */
export interface FdtLimits {
  /** largest blob accepted, bytes (default 16 MiB) */
  maxSize?: number;
  /** deepest node nesting accepted (default 64) */
  maxDepth?: number;
  /** most nodes accepted (default 100000) */
  maxNodes?: number;
}
