// The bzImage → vmlinux extraction on the real Debian kernel the QEMU lane downloads (zstd
// payload): the result must be a valid ELF whose entry point and program headers are what
// binutils' readelf reads from it, with nothing after the ELF's last segment.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { identifyKernelImage, prepareKernelImage } from '../../lib/image';
import { fetchKernel } from './harness';

const execFileAsync = promisify(execFile);

interface Segment {
  type: string;
  offset: number;
  vaddr: bigint;
  filesz: number;
}

/** `readelf -hlW`: the entry point and the program headers. */
async function readelf(file: string): Promise<{ entry: bigint; segments: Segment[] }> {
  const { stdout } = await execFileAsync('readelf', ['-hlW', file], { maxBuffer: 1 << 20 });
  const entry = BigInt(/Entry point address:\s+(0x[0-9a-f]+)/.exec(stdout)![1]!);
  const segments: Segment[] = [];
  for (const m of stdout.matchAll(/^\s+(LOAD|NOTE)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)/gm)) {
    segments.push({ type: m[1]!, offset: Number(m[2]), vaddr: BigInt(m[3]!), filesz: Number(m[4]) });
  }
  return { entry, segments };
}

/** The same facts read from the ELF header with DataView, to compare with readelf. */
function ownReading(b: Uint8Array): { entry: bigint; segments: Segment[] } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const phoff = Number(v.getBigUint64(32, true));
  const segments: Segment[] = [];
  for (let i = 0; i < v.getUint16(56, true); i++) {
    const at = phoff + i * v.getUint16(54, true);
    const type = v.getUint32(at, true);
    if (type !== 1 && type !== 4) continue;
    segments.push({
      type: type === 1 ? 'LOAD' : 'NOTE',
      offset: Number(v.getBigUint64(at + 8, true)),
      vaddr: v.getBigUint64(at + 16, true),
      filesz: Number(v.getBigUint64(at + 32, true)),
    });
  }
  return { entry: v.getBigUint64(24, true), segments };
}

t.test('Debian x86_64 vmlinuz → vmlinux', async (t) => {
  const kernel = await fetchKernel('amd64');
  const vmlinuz = await readFile(kernel.kernel);
  const kind = identifyKernelImage(vmlinuz);
  t.equal(kind.kind, 'bzimage');
  t.comment(`${kernel.info['KERNEL_PACKAGE']}: ${JSON.stringify(kind)}`);

  const started = process.hrtime.bigint();
  const out = await prepareKernelImage(vmlinuz, { arch: 'x86_64' });
  t.comment(`extracted ${out.bytes.length} bytes in ${Number(process.hrtime.bigint() - started) / 1e6} ms`);
  t.equal(out.converted, true);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'mk-vmlinux-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vmlinux');
  await writeFile(file, out.bytes);
  const { stdout: header } = await execFileAsync('readelf', ['-h', file]);
  t.match(header, /Type:\s+EXEC/);
  t.match(header, /Machine:\s+Advanced Micro Devices X86-64/);

  const theirs = await readelf(file);
  const ours = ownReading(out.bytes);
  t.ok(theirs.segments.some((s) => s.type === 'LOAD'), 'readelf lists LOAD segments');
  t.equal(ours.entry, theirs.entry, `entry ${theirs.entry.toString(16)}`);
  t.same(ours.segments, theirs.segments, 'every LOAD and NOTE segment as readelf reads it');
  const end = Math.max(...theirs.segments.map((s) => s.offset + s.filesz));
  t.ok(out.bytes.length >= end, 'every segment is inside the image');
});

t.test('Debian arm64 vmlinuz is an Image, passed as it is', async (t) => {
  const kernel = await fetchKernel('arm64');
  const image = await readFile(kernel.kernel);
  t.same(identifyKernelImage(image), { kind: 'arm64-image' });
  const out = await prepareKernelImage(image, { arch: 'arm64' });
  t.equal(out.converted, false);
  t.equal(out.bytes, image);
});
