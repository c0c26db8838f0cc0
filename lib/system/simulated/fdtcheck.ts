/**
 * libfdt's fdt_check_header(), as the kernel runs it on every blob written to kernfs
 * (kernel/multikernel/kernfs.c root_device_tree_write, kernel/multikernel/overlay.c
 * mk_overlay_new_write). It is more lenient than lib/fdt's decoder (versions 2..17 pass), which is
 * why the simulator checks headers itself: the errno must come from the kernel's rule.
 */
const FDT_MAGIC = 0xd00dfeed;
const FDT_FIRST_SUPPORTED_VERSION = 0x02;
const FDT_LAST_SUPPORTED_VERSION = 0x11;

/** fdt_header_size() for the versions that pass the version check (2..17) */
function headerSize(version: number): number {
  if (version === 2) return 32;
  return version < 17 ? 36 : 40;
}

/**
 * True when libfdt would accept the header. Like libfdt, it checks the blocks against the
 * header's own totalsize only: it is not told how many bytes were written, so a header that
 * claims more than that passes (and the kernel then reads past its buffer; see
 * docs/kernel-interface.md, "Overlays"). Fewer than 40 bytes are refused (libfdt would read the
 * header past the end of the buffer).
 */
export function fdtCheckHeader(blob: Uint8Array): boolean {
  if (blob.length < 40) return false;
  const v = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (v.getUint32(0) !== FDT_MAGIC) return false;
  const totalsize = v.getUint32(4);
  const offStruct = v.getUint32(8);
  const offStrings = v.getUint32(12);
  const offRsv = v.getUint32(16);
  const version = v.getUint32(20);
  const lastComp = v.getUint32(24);
  const sizeStrings = v.getUint32(32);
  const sizeStruct = v.getUint32(36);
  if (version < FDT_FIRST_SUPPORTED_VERSION || lastComp > FDT_LAST_SUPPORTED_VERSION) return false;
  if (version < lastComp) return false;
  const hdr = headerSize(version);
  if (totalsize < hdr || totalsize > 0x7fffffff) return false;
  const inside = (off: number): boolean => off >= hdr && off <= totalsize;
  if (!inside(offRsv)) return false;
  if (version < 17) {
    if (!inside(offStruct)) return false;
  } else if (!inside(offStruct) || !inside(offStruct + sizeStruct)) return false;
  return inside(offStrings) && inside(offStrings + sizeStrings);
}

/** fdt_totalsize() of a blob that passed fdtCheckHeader. */
export function fdtTotalSize(blob: Uint8Array): number {
  return new DataView(blob.buffer, blob.byteOffset, blob.byteLength).getUint32(4);
}
