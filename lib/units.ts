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

/** The largest CPU id a list may name (as lib/topology's MAX_LIST_NUMBER; NR_CPUS is at most 8192 today). */
export const MAX_CPU_ID = 65535;

/**
 * A CPU list as operators write it, "2-5,8" → [2, 3, 4, 5, 8] (the kernel's cpulist format, with
 * blanks around the parts allowed and any order): ids and ascending ranges, none named twice, none
 * above MAX_CPU_ID. Throws a RangeError starting with `what`. (lib/topology parses what the kernel
 * prints, strictly; this is what people type, for mkctl's --cpus and the spec's `cpus: "2-5"`.)
 */
export function parseCpuIds(text: string, what = 'CPU list'): number[] {
  const ids: number[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part.trim());
    if (m === null) throw new RangeError(`${what}: ${JSON.stringify(text)} is not a CPU list such as 2-5,8`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) throw new RangeError(`${what}: the range ${part.trim()} runs backwards`);
    if (to > MAX_CPU_ID) throw new RangeError(`${what}: CPU ${to} is beyond ${MAX_CPU_ID}, the largest id a list may name`);
    for (let id = from; id <= to; id++) ids.push(id);
  }
  if (new Set(ids).size !== ids.length) throw new RangeError(`${what}: ${JSON.stringify(text)} names a CPU twice`);
  return ids;
}

const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration as the spec file takes it: a safe integer is milliseconds; a string is a whole number
 * with a unit ms, s, m or h ("500ms", "10s", "5m", "1h"). Throws a RangeError starting with `what`.
 */
export function parseDurationMs(value: number | string, what = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} must be a whole number of milliseconds, got ${value}`);
    return value;
  }
  const m = /^(\d+)(ms|s|m|h)$/.exec(value);
  if (m === null) throw new RangeError(`${what} must look like 500ms, 10s, 5m or 1h, got ${JSON.stringify(value)}`);
  const ms = Number(m[1]) * DURATION_MS[m[2]!]!;
  if (!Number.isSafeInteger(ms)) throw new RangeError(`${what} is too long: ${value}`);
  return ms;
}
