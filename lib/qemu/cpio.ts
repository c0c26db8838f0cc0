/**
 * A minimal writer of "newc" cpio archives, the format the kernel unpacks as an initramfs.
 * Written here rather than spawning cpio(1) so the lane needs one host tool less and so the
 * archive layout (parents first, owners root, fixed mtime) is reproducible.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  /** a host file copied in (symlinks on the host are followed), or literal bytes */
  | { type: 'file'; path: string; mode?: number; source: string }
  | { type: 'file'; path: string; mode?: number; data: string | Uint8Array }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char-device'; path: string; mode?: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const CHUNK = 1 << 20;

/** Archive paths are relative ("bin/sh"): strip leading slashes, reject "..", "." and empty names. */
export function normalizeArchivePath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '');
  if (parts.length === 0 || parts.some((s) => s === '..' || s === '.')) {
    throw new RangeError(`invalid initramfs path ${JSON.stringify(p)}`);
  }
  return parts.join('/');
}

function header(ino: number, mode: number, nlink: number, size: number, rdevMajor: number, rdevMinor: number, name: string): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  const fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0];
  const head = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0').toUpperCase()).join('')}`, 'ascii');
  return Buffer.concat([head, nameBytes, Buffer.alloc(pad4(head.length + nameBytes.length))]);
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/**
 * Writes `entries` to `outPath`. Parent directories that are not listed are added (mode 0755)
 * before their children; a later entry for the same path replaces an earlier one.
 */
export async function writeCpio(outPath: string, entries: readonly CpioEntry[]): Promise<void> {
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) {
    const p = normalizeArchivePath(e.path);
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!byPath.has(dir)) byPath.set(dir, { type: 'dir', path: dir });
    }
    byPath.delete(p); // keep insertion order after parents
    byPath.set(p, { ...e, path: p });
  }
  const out = await open(outPath, 'w');
  try {
    let ino = 1;
    for (const e of byPath.values()) await writeEntry(out, ino++, e);
    await out.write(header(0, 0, 1, 0, 0, 0, 'TRAILER!!!'));
  } finally {
    await out.close();
  }
}

async function writeEntry(out: FileHandle, ino: number, e: CpioEntry): Promise<void> {
  switch (e.type) {
    case 'dir':
      await out.write(header(ino, S_IFDIR | (e.mode ?? 0o755), 2, 0, 0, 0, e.path));
      return;
    case 'symlink': {
      const target = Buffer.from(e.target);
      await out.write(Buffer.concat([header(ino, S_IFLNK | 0o777, 1, target.length, 0, 0, e.path), target, Buffer.alloc(pad4(target.length))]));
      return;
    }
    case 'char-device':
      await out.write(header(ino, S_IFCHR | (e.mode ?? 0o600), 1, 0, e.major, e.minor, e.path));
      return;
    case 'file':
      if ('data' in e) {
        const data = Buffer.from(e.data);
        await out.write(Buffer.concat([header(ino, S_IFREG | (e.mode ?? 0o644), 1, data.length, 0, 0, e.path), data, Buffer.alloc(pad4(data.length))]));
        return;
      }
      await copyFile(out, ino, e.path, e.source, e.mode);
  }
}

async function copyFile(out: FileHandle, ino: number, name: string, source: string, mode: number | undefined): Promise<void> {
  const src = await open(source, 'r');
  try {
    const st = await src.stat();
    await out.write(header(ino, S_IFREG | (mode ?? st.mode & 0o7777), 1, st.size, 0, 0, name));
    const buf = Buffer.allocUnsafe(CHUNK);
    let copied = 0;
    while (copied < st.size) {
      const { bytesRead } = await src.read(buf, 0, Math.min(CHUNK, st.size - copied), copied);
      // a file truncated while it is archived would otherwise loop forever
      /* c8 ignore next */
      if (bytesRead === 0) throw new Error(`${source} shrank while being archived`);
      await out.write(buf, 0, bytesRead);
      copied += bytesRead;
    }
    await out.write(Buffer.alloc(pad4(st.size)));
  } finally {
    await src.close();
  }
}
