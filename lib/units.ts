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
