/** A tiny stand-in for a spawn kernel image that the simulated kexec accepts. */
export function fakeElfVmlinux(size = 8192): Buffer {
  const b = Buffer.alloc(size);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0); // ELF, 64-bit, little-endian, version 1
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(62, 18); // EM_X86_64
  return b;
}

/** A tiny arm64 `Image`: the "ARM\x64" magic at offset 56. */
export function fakeArm64Image(size = 8192): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32LE(0x644d5241, 56);
  return b;
}
