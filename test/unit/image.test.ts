// Kernel images: bzImage → vmlinux extraction with each compression the kernel build can use,
// arm64 Image and Image.gz, and every refusal. Payloads are made by the real tools the kernel build
// runs (gzip -9, zstd -22 --ultra, xz --x86, ...) with the kernel's size_append.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as zlib from 'node:zlib';
import { compressionOf, identifyKernelImage, prepareKernelImage } from '../../lib/image';

/** An ELF64 x86_64 executable: one PT_LOAD of `segment` bytes at offset 0x100, nothing after it. */
function elf(machine = 62, segment = 0x80): Buffer {
  const b = Buffer.alloc(0x100 + segment);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(machine, 18);
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(0x1000000n, 24); // e_entry
  b.writeBigUInt64LE(64n, 32); // e_phoff
  b.writeUInt16LE(64, 52); // e_ehsize
  b.writeUInt16LE(56, 54); // e_phentsize
  b.writeUInt16LE(1, 56); // e_phnum
  b.writeUInt32LE(1, 64); // PT_LOAD
  b.writeBigUInt64LE(0x100n, 64 + 8); // p_offset
  b.writeBigUInt64LE(BigInt(segment), 64 + 32); // p_filesz
  for (let i = 0x100; i < b.length; i++) b[i] = i & 0xff;
  return b;
}

/** The relocation table the x86 build appends after the ELF (arch/x86/boot/compressed/Makefile). */
const RELOCS = Buffer.from('relocs-that-kexec-must-not-see');

function sizeAppend(data: Buffer, size: number): Buffer {
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(size);
  return Buffer.concat([data, tail]);
}

function tool(cmd: string, args: string[], input: Buffer): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 64 * 1024 * 1024 });
}

/** Payload exactly as arch/x86/boot/compressed/Makefile makes it for each compression. */
function payload(compression: string, raw: Buffer): Buffer {
  switch (compression) {
    case 'gzip':
      return zlib.gzipSync(raw, { level: 9 });
    case 'zstd':
      return sizeAppend(tool('zstd', ['-q', '-c', '--ultra', '-22'], raw), raw.length);
    case 'xz':
      return sizeAppend(tool('xz', ['-c', '--check=crc32', '--x86', '--lzma2=dict=1MiB'], raw), raw.length);
    case 'bzip2':
      return sizeAppend(tool('bzip2', ['-c', '-9'], raw), raw.length);
    case 'lz4':
      return sizeAppend(tool('lz4', ['-q', '-c', '-l', '-9'], raw), raw.length);
    default:
      throw new Error(compression);
  }
}

/** A bzImage: one setup sector after the boot sector, the payload 0x40 bytes into the protected-mode code. */
function bzImage(pl: Buffer, { protocol = 0x20f, setupSects = 1, payloadLength = pl.length } = {}): Buffer {
  const start = (setupSects + 1) * 512;
  const b = Buffer.alloc(start + 0x40 + pl.length + 64);
  b[0x1f1] = setupSects;
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(protocol, 0x206);
  b.writeUInt32LE(0x40, 0x248);
  b.writeUInt32LE(payloadLength, 0x24c);
  pl.copy(b, start + 0x40);
  return b;
}

function arm64Image(size = 8192): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32LE(0x644d5241, 56);
  b.write('arm64 kernel text', 128);
  return b;
}

const vmlinux = elf();
const withRelocs = Buffer.concat([vmlinux, RELOCS]);

for (const compression of ['gzip', 'zstd']) {
  t.test(`a ${compression} bzImage becomes its vmlinux, relocations cut off`, async (t) => {
    const image = bzImage(payload(compression, withRelocs));
    t.same(identifyKernelImage(image), { kind: 'bzimage', protocol: 0x20f, compression });
    const out = await prepareKernelImage(image, { arch: 'x86_64' });
    t.equal(out.converted, true);
    t.same(out.source, { kind: 'bzimage', protocol: 0x20f, compression });
    t.ok(Buffer.from(out.bytes).equals(vmlinux), 'exactly the ELF, byte for byte');
  });
}

t.test('setup_sects 0 means 4 (boot protocol)', async (t) => {
  const pl = payload('gzip', withRelocs);
  const image = bzImage(pl, { setupSects: 4 });
  image[0x1f1] = 0;
  t.ok(Buffer.from((await prepareKernelImage(image, { arch: 'x86_64' })).bytes).equals(vmlinux));
});

for (const compression of ['xz', 'bzip2', 'lz4']) {
  t.test(`a ${compression} bzImage is refused by name, with what to do`, async (t) => {
    const image = bzImage(payload(compression, withRelocs));
    t.equal((identifyKernelImage(image) as { compression?: string }).compression, compression);
    await t.rejects(prepareKernelImage(image, { arch: 'x86_64' }), {
      code: 'ERR_MK_IMAGE',
      message: new RegExp(`${compression}-compressed[^]*extract-vmlinux`),
      details: { reason: 'unsupported-compression', compression },
    });
  });
}

t.test('compression signatures', async (t) => {
  t.equal(compressionOf(Buffer.from([0x5d, 0, 0, 0x80])), 'lzma');
  t.equal(compressionOf(Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0])), 'lzo');
  t.equal(compressionOf(Buffer.from([0x1f])), undefined, 'too short for any magic');
  t.equal(compressionOf(Buffer.from('plain')), undefined);
});

t.test('an ELF vmlinux passes unchanged on x86_64', async (t) => {
  const out = await prepareKernelImage(vmlinux, { arch: 'x86_64' });
  t.equal(out.bytes, vmlinux, 'the same buffer, no copy');
  t.same(out, { bytes: vmlinux, source: { kind: 'elf', machine: 62 }, converted: false });
});

t.test('arm64: Image as it is, Image.gz decompressed', async (t) => {
  const img = arm64Image();
  t.same(await prepareKernelImage(img, { arch: 'arm64' }), { bytes: img, source: { kind: 'arm64-image' }, converted: false });
  const gz = zlib.gzipSync(img);
  t.same(identifyKernelImage(gz), { kind: 'compressed', compression: 'gzip' });
  const out = await prepareKernelImage(gz, { arch: 'arm64' });
  t.ok(Buffer.from(out.bytes).equals(img));
  t.equal(out.converted, true);
  await t.rejects(prepareKernelImage(zlib.gzipSync(Buffer.alloc(100)), { arch: 'arm64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'not-image' },
    message: /does not hold an arm64 Image/,
  });
});

t.test('the wrong image for the architecture is named', async (t) => {
  const cases: Array<[Buffer, 'x86_64' | 'arm64', string, RegExp]> = [
    [vmlinux, 'arm64', 'wrong-format', /arm64\/boot\/Image/],
    [elf(183), 'x86_64', 'wrong-arch', /machine 183, not x86_64/],
    [arm64Image(), 'x86_64', 'wrong-arch', /is an arm64 Image: pass an x86_64 ELF vmlinux or bzImage/],
    [bzImage(payload('gzip', withRelocs)), 'arm64', 'wrong-arch', /x86 bzImage: pass an arm64 Image/],
    [zlib.gzipSync(vmlinux), 'x86_64', 'wrong-format', /gzip-compressed data, not a kernel image/],
    [Buffer.from('#!/bin/sh\necho not a kernel\n'), 'x86_64', 'unknown-format', /not a kernel image this package recognises/],
  ];
  for (const [bytes, arch, reason, message] of cases) {
    await t.rejects(prepareKernelImage(bytes, { arch }), { code: 'ERR_MK_IMAGE', details: { reason }, message }, reason);
  }
});

t.test('damaged bzImages', async (t) => {
  const gz = payload('gzip', withRelocs);
  await t.rejects(prepareKernelImage(bzImage(gz, { protocol: 0x207 }), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'old-bzimage' },
    message: /boot protocol 2\.07, older than 2\.08/,
  });
  t.same(identifyKernelImage(bzImage(gz, { protocol: 0x207 })), { kind: 'bzimage', protocol: 0x207, compression: undefined });

  await t.rejects(prepareKernelImage(bzImage(gz, { payloadLength: gz.length + 1000 }), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'truncated' },
    message: /payload \(\d+ bytes at 1088\) runs past the end/,
  });
  await t.rejects(prepareKernelImage(bzImage(gz, { payloadLength: 0 }), { arch: 'x86_64' }), { code: 'ERR_MK_IMAGE', details: { reason: 'truncated' } });

  const far = bzImage(gz);
  far.writeUInt32LE(0x100000, 0x248);
  t.same(identifyKernelImage(far), { kind: 'bzimage', protocol: 0x20f, compression: undefined }, 'payload beyond the file');

  await t.rejects(prepareKernelImage(bzImage(Buffer.from('not compressed at all')), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'unknown-compression' },
  });

  const cut = Buffer.from(gz.subarray(0, gz.length - 20));
  await t.rejects(prepareKernelImage(bzImage(cut), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'corrupt-payload', compression: 'gzip' },
    message: /gzip payload does not decompress/,
  });

  const zs = payload('zstd', withRelocs);
  const bad = Buffer.from(zs);
  bad.fill(0x55, 8, bad.length - 8);
  await t.rejects(prepareKernelImage(bzImage(bad), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'corrupt-payload', compression: 'zstd' },
    message: /decompressed to \d+ bytes instead of \d+/,
  });
  const noSize = Buffer.from(zs);
  noSize.writeUInt32LE(0, noSize.length - 4);
  await t.rejects(prepareKernelImage(bzImage(noSize), { arch: 'x86_64' }), { code: 'ERR_MK_IMAGE', details: { reason: 'corrupt-payload' }, message: /announces 0 bytes/ });

  await t.rejects(prepareKernelImage(bzImage(payload('gzip', Buffer.alloc(4096, 7))), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'not-elf' },
  });
  await t.rejects(prepareKernelImage(bzImage(payload('gzip', elf(183))), { arch: 'x86_64' }), { code: 'ERR_MK_IMAGE', details: { reason: 'not-elf' } });
});

t.test('a truncated ELF inside the payload is refused', async (t) => {
  const short = elf().subarray(0, 0x120); // the segment says 0x80 bytes from 0x100
  await t.rejects(prepareKernelImage(bzImage(payload('gzip', short)), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'truncated-elf' },
    message: /a segment runs past the end/,
  });
  const headers = Buffer.from(elf());
  headers.writeUInt16LE(9, 56); // nine program headers: past the 0x180-byte file
  await t.rejects(prepareKernelImage(bzImage(payload('gzip', headers)), { arch: 'x86_64' }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'truncated-elf' },
    message: /program headers run past the end/,
  });
});

t.test('inflating beyond maxBytes is refused', async (t) => {
  await t.rejects(prepareKernelImage(bzImage(payload('gzip', withRelocs)), { arch: 'x86_64', maxBytes: 100 }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'corrupt-payload', compression: 'gzip' },
  });
  await t.rejects(prepareKernelImage(bzImage(payload('zstd', withRelocs)), { arch: 'x86_64', maxBytes: 100 }), {
    code: 'ERR_MK_IMAGE',
    details: { reason: 'corrupt-payload', compression: 'zstd' },
    message: /outside 1\.\.100/,
  });
});
