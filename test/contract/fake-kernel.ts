/** Stand-ins for spawn kernel images that the simulated kexec accepts (lib/image's placeholder). */
import { placeholderImage } from '../../lib/image';

export function fakeElfVmlinux(size = 8192): Buffer {
  return Buffer.from(placeholderImage('x86_64', size));
}

/** A tiny arm64 `Image`: the "ARM\x64" magic at offset 56. */
export function fakeArm64Image(size = 8192): Buffer {
  return Buffer.from(placeholderImage('arm64', size));
}
