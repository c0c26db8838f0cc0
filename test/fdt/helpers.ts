/** Shared helpers of the fdt tests (not a test file). */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MultikernelError } from '../../lib/errors';
import type { Fdt, FdtNode } from '../../lib/fdt';

/** A tree in a form t.same compares exactly: values as hex strings. */
export function plain(n: FdtNode): unknown {
  return {
    name: n.name,
    properties: n.properties.map((p) => [p.name, Buffer.from(p.value.buffer, p.value.byteOffset, p.value.byteLength).toString('hex')]),
    children: n.children.map(plain),
  };
}

export function plainFdt(f: Fdt): unknown {
  return { root: plain(f.root), reservations: f.reservations.map((r) => [r.address.toString(16), r.size.toString(16)]), bootCpuId: f.bootCpuId };
}

/**
 * Assemble a structure block: numbers are u32 tokens/words, strings are NUL-terminated names
 * padded to 4 bytes, byte arrays are padded to 4 bytes. Laid out like dtc: header, reservation
 * block, structure, strings.
 */
export function assemble(parts: (number | string | Uint8Array)[], strings = '', reservations: [bigint, bigint][] = []): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    if (typeof p === 'number') {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(p);
      chunks.push(b);
    } else {
      const raw = typeof p === 'string' ? Buffer.from(`${p}\0`, 'latin1') : Buffer.from(p);
      chunks.push(Buffer.concat([raw, Buffer.alloc((4 - (raw.length % 4)) % 4)]));
    }
  }
  const struct = Buffer.concat(chunks);
  const strs = Buffer.from(strings, 'latin1');
  const rsv = Buffer.alloc(16 * (reservations.length + 1));
  reservations.forEach(([a, s], i) => {
    rsv.writeBigUInt64BE(a, i * 16);
    rsv.writeBigUInt64BE(s, i * 16 + 8);
  });
  const header = Buffer.alloc(40);
  const structOff = 40 + rsv.length;
  const stringsOff = structOff + struct.length;
  const total = stringsOff + strs.length;
  [0xd00dfeed, total, structOff, stringsOff, 40, 17, 16, 0, strs.length, struct.length].forEach((v, i) => header.writeUInt32BE(v, i * 4));
  return Buffer.concat([header, rsv, struct, strs]);
}

/** The header field at byte `offset` set to `value` (a copy). */
export function patch(blob: Buffer, offset: number, value: number): Buffer {
  const b = Buffer.from(blob);
  b.writeUInt32BE(value >>> 0, offset);
  return b;
}

/** dtc's version line, or undefined when dtc is not installed. */
export function dtcVersion(): string | undefined {
  const r = spawnSync('dtc', ['--version'], { encoding: 'utf8' });
  return r.error === undefined && r.status === 0 ? r.stdout.trim() : undefined;
}

/** Run dtc on `input` (bytes or text); returns its output bytes, or throws with dtc's stderr. */
export function dtc(args: string[], input: Uint8Array | string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'fdt-test-'));
  try {
    const inFile = join(dir, 'in');
    const outFile = join(dir, 'out');
    writeFileSync(inFile, input);
    const r = spawnSync('dtc', ['-q', ...args, '-o', outFile, inFile], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dtc ${args.join(' ')} failed: ${r.stderr}`);
    return readFileSync(outFile);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Run `fn` and return the MultikernelError it throws; anything else fails the caller. */
export function mkError(fn: () => unknown): MultikernelError {
  try {
    fn();
  } catch (e) {
    if (e instanceof MultikernelError) return e;
    throw e;
  }
  throw new Error('expected a MultikernelError, nothing was thrown');
}
