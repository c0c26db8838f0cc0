/**
 * Kernel images as the multikernel loader wants them.
 *
 * The multikernel kexec_file loader takes an ELF vmlinux on x86_64 (the bzImage loader has no
 * multikernel entry path) and the `Image` file on arm64 (docs/kernel-interface.md, "kexec_file_load").
 * Distributions ship a compressed bzImage on x86_64, so a bzImage is turned into its vmlinux here,
 * in memory, the way the kernel's scripts/extract-vmlinux and kerf's `vmlinuz.py` do it: the
 * bzImage payload (boot protocol >= 2.08: `payload_offset`/`payload_length`) is the stripped ELF
 * vmlinux, compressed, with the relocation table appended; the ELF is cut at its last byte.
 * On arm64 a gzip'd `Image.gz` is decompressed the same way.
 *
 * Decoders: gzip with node:zlib; zstd (Debian, Ubuntu and Arch build x86 kernels with it) with
 * zstddec, the zstd project's own decoder compiled to WebAssembly. Other payloads are named in
 * the error (xz needs the x86 BCJ filter, which no pure-JS or WASM xz decoder on the registry
 * includes; bzip2, lzma, lzo and lz4 are rare).
 */
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { MultikernelError } from './errors';

export type KernelArch = 'x86_64' | 'arm64';

export type ImageCompression = 'gzip' | 'zstd' | 'xz' | 'bzip2' | 'lzma' | 'lzo' | 'lz4';

/** What a kernel image file is, from its bytes. */
export type KernelImageKind =
  | { kind: 'elf'; machine: number }
  | { kind: 'bzimage'; protocol: number; compression: ImageCompression | undefined }
  | { kind: 'arm64-image' }
  | { kind: 'compressed'; compression: ImageCompression }
  | { kind: 'unknown' };

export interface PreparedKernelImage {
  /** the bytes to hand to kexec_file_load */
  bytes: Uint8Array;
  /** what the input was */
  source: KernelImageKind;
  /** true when `bytes` were extracted or decompressed from the input */
  converted: boolean;
}

export interface PrepareKernelImageOptions {
  arch: KernelArch;
  /** refuse to inflate beyond this many bytes (default 1 GiB): a kernel is far smaller */
  maxBytes?: number;
}

const EM_X86_64 = 62;
/** arch/arm64/include/asm/image.h: "ARM\x64" at offset 56 */
const ARM64_IMAGE_MAGIC = 0x644d5241;
/** Documentation/arch/x86/boot.rst: setup header fields */
const SETUP_SECTS = 0x1f1;
const HEADER_MAGIC = 0x202;
const PROTOCOL_VERSION = 0x206;
const PAYLOAD_OFFSET = 0x248;
const PAYLOAD_LENGTH = 0x24c;
const MIN_PAYLOAD_PROTOCOL = 0x0208;
const DEFAULT_MAX_BYTES = 1024 * 1024 * 1024;

const MAGICS: ReadonlyArray<[ImageCompression, number[]]> = [
  ['gzip', [0x1f, 0x8b]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]],
  ['lzma', [0x5d, 0x00, 0x00]],
];

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** The compression of a stream, from its leading magic bytes (the kernel's own list, lib/decompress.c). */
export function compressionOf(b: Uint8Array): ImageCompression | undefined {
  return MAGICS.find(([, magic]) => magic.length <= b.length && magic.every((x, i) => b[i] === x))?.[0];
}

function isElf64(b: Uint8Array): boolean {
  return b.length >= 64 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46 && b[4] === 2 && b[5] === 1;
}

/** Identifies a kernel image file from its bytes (nothing is decompressed). */
export function identifyKernelImage(b: Uint8Array): KernelImageKind {
  if (isElf64(b)) return { kind: 'elf', machine: view(b).getUint16(18, true) };
  if (b.length >= 64 && view(b).getUint32(56, true) === ARM64_IMAGE_MAGIC) return { kind: 'arm64-image' };
  if (b.length >= PAYLOAD_LENGTH + 4 && view(b).getUint32(HEADER_MAGIC, true) === 0x53726448 /* "HdrS" */) {
    const protocol = view(b).getUint16(PROTOCOL_VERSION, true);
    let compression: ImageCompression | undefined;
    if (protocol >= MIN_PAYLOAD_PROTOCOL) {
      const start = payloadStart(b);
      compression = start < b.length ? compressionOf(b.subarray(start)) : undefined;
    }
    return { kind: 'bzimage', protocol, compression };
  }
  const compression = compressionOf(b);
  return compression ? { kind: 'compressed', compression } : { kind: 'unknown' };
}

function payloadStart(b: Uint8Array): number {
  const setupSects = b[SETUP_SECTS] || 4;
  return (setupSects + 1) * 512 + view(b).getUint32(PAYLOAD_OFFSET, true);
}

function imageError(reason: string, message: string, details: Record<string, unknown> = {}, cause?: unknown): MultikernelError {
  return new MultikernelError('ERR_MK_IMAGE', message, { cause, details: { reason, ...details } });
}

/** Where an ELF64 image ends: the furthest of its headers, program segments and section table. */
function elfEnd(b: Uint8Array): number {
  const v = view(b);
  const phoff = Number(v.getBigUint64(32, true));
  const shoff = Number(v.getBigUint64(40, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  const shentsize = v.getUint16(58, true);
  const shnum = v.getUint16(60, true);
  let end = Math.max(64, phoff + phentsize * phnum, shoff + shentsize * shnum);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 40 > b.length) throw imageError('truncated-elf', 'the ELF image inside the bzImage is truncated (its program headers run past the end)');
    end = Math.max(end, Number(v.getBigUint64(at + 8, true)) + Number(v.getBigUint64(at + 32, true)));
  }
  if (end > b.length) throw imageError('truncated-elf', 'the ELF image inside the bzImage is truncated (a segment runs past the end)');
  return end;
}

let zstd: Promise<{ decode(data: Uint8Array, size: number): Uint8Array }> | undefined;

/** zstddec ships as an ES module only; this keeps a real import() in the CommonJS build. */
const importModule = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<unknown>;

async function zstdDecoder(): Promise<{ decode(data: Uint8Array, size: number): Uint8Array }> {
  zstd ??= importModule('zstddec').then(async (m) => {
    const decoder = new (m as typeof import('zstddec')).ZSTDDecoder();
    await decoder.init();
    return decoder;
  });
  return zstd;
}

/**
 * Decompresses a kernel payload. The kernel's build appends the uncompressed size as a 32-bit
 * little-endian word to every format but gzip (scripts/Makefile.lib `size_append`); zstd needs it.
 */
async function decompress(payload: Uint8Array, compression: ImageCompression | undefined, maxBytes: number): Promise<Uint8Array> {
  switch (compression) {
    case 'gzip':
      try {
        return await promisify(zlib.gunzip)(payload, { maxOutputLength: maxBytes });
      } catch (e) {
        throw imageError('corrupt-payload', `the gzip payload does not decompress (${(e as Error).message}): the file is damaged or truncated`, { compression }, e);
      }
    case 'zstd': {
      const size = view(payload).getUint32(payload.length - 4, true); // the 4-byte magic makes it safe
      if (size === 0 || size > maxBytes) {
        throw imageError('corrupt-payload', `the zstd payload announces ${size} bytes, outside 1..${maxBytes}: the file is damaged or not a kernel`, { compression });
      }
      const out = (await zstdDecoder()).decode(payload.subarray(0, payload.length - 4), size);
      if (out.length !== size) {
        throw imageError('corrupt-payload', `the zstd payload decompressed to ${out.length} bytes instead of ${size}: the file is damaged or truncated`, { compression });
      }
      return out;
    }
    case undefined:
      throw imageError('unknown-compression', 'the kernel payload has no compression signature this package knows (gzip, zstd, xz, bzip2, lzma, lzo, lz4): pass an ELF vmlinux instead');
    default:
      throw imageError(
        'unsupported-compression',
        `the kernel payload is ${compression}-compressed, which this package cannot decompress (it handles gzip and zstd): ` +
          'extract the vmlinux with the kernel\'s scripts/extract-vmlinux and load that',
        { compression },
      );
  }
}

/**
 * Returns the bytes kexec_file_load should get for `bytes` on `arch`: an ELF vmlinux or arm64
 * `Image` as they are, a bzImage's vmlinux, a gzip'd arm64 `Image.gz` decompressed. Anything else
 * is refused with ERR_MK_IMAGE naming what the file is and what to pass instead.
 */
export async function prepareKernelImage(bytes: Uint8Array, options: PrepareKernelImageOptions): Promise<PreparedKernelImage> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const source = identifyKernelImage(bytes);
  const wanted = options.arch === 'x86_64' ? 'an x86_64 ELF vmlinux or bzImage' : 'an arm64 Image or Image.gz';
  switch (source.kind) {
    case 'elf':
      // arm64's kexec_file has only the Image loader (arch/arm64/kernel/kexec_image.c)
      if (options.arch === 'arm64') {
        throw imageError('wrong-format', `an ELF file is not what the arm64 loader takes: pass the kernel's arch/arm64/boot/Image`, { machine: source.machine });
      }
      if (source.machine !== EM_X86_64) {
        throw imageError('wrong-arch', `the ELF file is built for machine ${source.machine}, not x86_64 (${EM_X86_64}): pass ${wanted}`, { machine: source.machine });
      }
      return { bytes, source, converted: false };
    case 'arm64-image':
      if (options.arch !== 'arm64') throw imageError('wrong-arch', `the file is an arm64 Image: pass ${wanted}`);
      return { bytes, source, converted: false };
    case 'bzimage': {
      if (options.arch !== 'x86_64') throw imageError('wrong-arch', `the file is an x86 bzImage: pass ${wanted}`);
      if (source.protocol < MIN_PAYLOAD_PROTOCOL) {
        throw imageError('old-bzimage', `the bzImage uses boot protocol ${(source.protocol >> 8).toString(16)}.${(source.protocol & 0xff).toString(16).padStart(2, '0')}, older than 2.08, which locates no payload: pass its vmlinux`);
      }
      const start = payloadStart(bytes);
      const length = view(bytes).getUint32(PAYLOAD_LENGTH, true);
      if (start + length > bytes.length || length === 0) {
        throw imageError('truncated', `the bzImage is truncated: its payload (${length} bytes at ${start}) runs past the end of the ${bytes.length}-byte file`);
      }
      const vmlinux = await decompress(bytes.subarray(start, start + length), source.compression, maxBytes);
      if (!isElf64(vmlinux) || view(vmlinux).getUint16(18, true) !== EM_X86_64) {
        throw imageError('not-elf', 'the bzImage payload is not an x86_64 ELF vmlinux: pass the vmlinux from the kernel build');
      }
      return { bytes: vmlinux.subarray(0, elfEnd(vmlinux)), source, converted: true };
    }
    case 'compressed': {
      if (options.arch !== 'arm64') throw imageError('wrong-format', `the file is ${source.compression}-compressed data, not a kernel image: pass ${wanted}`);
      const image = await decompress(bytes, source.compression, maxBytes);
      if (identifyKernelImage(image).kind !== 'arm64-image') {
        throw imageError('not-image', `the ${source.compression} file does not hold an arm64 Image: pass ${wanted}`);
      }
      return { bytes: image, source, converted: true };
    }
    default:
      throw imageError('unknown-format', `the file is not a kernel image this package recognises: pass ${wanted}`);
  }
}

/**
 * A minimal image that the kernel's loader probe accepts for the architecture: an ELF64 header
 * for x86-64 (EM_X86_64), the arm64 `Image` header with its "ARM\x64" magic. It cannot boot:
 * only the simulated kernel, which boots nothing, should be given it.
 */
export function placeholderImage(arch: KernelArch = 'x86_64', size = 4096): Uint8Array {
  const b = Buffer.alloc(Math.max(size, 64));
  if (arch === 'x86_64') {
    b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0); // ELFCLASS64, little endian, version 1
    b.writeUInt16LE(2, 16); // ET_EXEC
    b.writeUInt16LE(EM_X86_64, 18);
    b.writeUInt32LE(1, 20);
    b.writeUInt16LE(64, 52); // e_ehsize
  } else {
    b.writeUInt32LE(ARM64_IMAGE_MAGIC, 56);
  }
  return b;
}
