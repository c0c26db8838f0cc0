/**
 * Sizes as people type them on command lines and in options. Shared by mkctl and the QEMU
 * harness so that neither imports the other for it.
 */

/**
 * Parses a memory size into whole MiB: "512" and "512M" are MiB, "2G" is GiB (case-insensitive,
 * blanks around it ignored); a number is taken as MiB. At least 1 MiB: a lower bound of its own
 * (QEMU wants 64) is the caller's business.
 */
export function parseMemoryMiB(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`memory must be a whole number of MiB >= 1, got ${value}`);
    return value;
  }
  const m = /^(\d+)([MG]?)$/i.exec(value.trim());
  if (m === null) throw new RangeError(`memory must look like 512, 512M or 2G, got ${JSON.stringify(value)}`);
  return parseMemoryMiB(Number(m[1]) * (m[2]!.toUpperCase() === 'G' ? 1024 : 1));
}

const UNIT_SHIFT: Record<string, bigint> = { '': 0n, K: 10n, M: 20n, G: 30n, T: 40n };

/**
 * Parses a byte size for the lifecycle API: a bigint or a safe integer is bytes; a string is a
 * whole number with an optional binary unit, "4096", "512K", "512M", "2G", "1T" (also "512MiB";
 * case-insensitive). At least 1 byte; alignment is the caller's rule (the kernel wants pages).
 */
export function parseBytes(value: bigint | number | string, what = 'size'): bigint {
  let bytes: bigint;
  if (typeof value === 'bigint') bytes = value;
  else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`${what} must be a whole number of bytes, got ${value}`);
    bytes = BigInt(value);
  } else {
    const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
    if (m === null) throw new RangeError(`${what} must look like 4096, 512M or 2G, got ${JSON.stringify(value)}`);
    bytes = BigInt(m[1]!) << UNIT_SHIFT[m[2]!.toUpperCase()]!;
  }
  if (bytes < 1n) throw new RangeError(`${what} must be at least 1 byte, got ${String(value)}`);
  return bytes;
}

/** "512 MiB", "2 GiB", "4096 bytes": the largest binary unit that divides the size exactly. */
export function formatBytes(bytes: bigint): string {
  for (const [unit, shift] of [['TiB', 40n], ['GiB', 30n], ['MiB', 20n], ['KiB', 10n]] as const) {
    if (bytes >= 1n << shift && bytes % (1n << shift) === 0n) return `${bytes >> shift} ${unit}`;
  }
  return `${bytes} bytes`;
}
