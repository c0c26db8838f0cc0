/**
 * Telling "this kernel has no multikernel support" apart from an ordinary failure.
 *
 * A stock kernel answers multikernel requests with generic errnos: kexec_file_load with
 * KEXEC_MULTIKERNEL and reboot with a multikernel command give EINVAL, mounting the unknown
 * filesystem type gives ENODEV (or ENOENT: the mount point is created by the multikernel code),
 * and kernfs paths are simply missing. On a multikernel kernel the same errnos have real,
 * specific meanings, so the library only turns them into ERR_MK_NO_SUPPORT after probing the
 * kernel and finding none of its multikernel surfaces. Works over any `System`.
 */
import { MultikernelError, isSystemError, type SystemError } from './errors';
import { MK_DEVICE_TREE, PROC_FILESYSTEMS, PROC_KIMAGE } from './kernfs';
import { MULTIKERNEL_FS_TYPE, MULTIKERNEL_MOUNT_POINT } from './uapi';
import type { System } from './system/system';


export interface SupportReport {
  /** true when any multikernel surface was found (filesystem type, mount point or /proc/kimage) */
  supported: boolean;
  /** `/proc/filesystems` lists `multikernel`; null when the file could not be read */
  filesystemRegistered: boolean | null;
  /** `/sys/fs/multikernel` exists (the multikernel code creates this mount point at boot) */
  mountPoint: boolean;
  /** `/sys/fs/multikernel/device_tree` exists, i.e. the kernfs is mounted */
  mounted: boolean;
  /** `/proc/kimage` exists (newest multikernel kernels) */
  kimage: boolean;
  /** what was probed, one human-readable finding per probe, in the order above */
  findings: string[];
}

async function exists(system: System, path: string): Promise<boolean> {
  try {
    await system.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Reads what the running kernel shows of multikernel support. Never rejects. */
export async function probeMultikernelSupport(system: System): Promise<SupportReport> {
  const findings: string[] = [];

  let filesystemRegistered: boolean | null;
  try {
    const text = (await system.readFile(PROC_FILESYSTEMS)).toString('utf8');
    // Lines look like "nodev\tmultikernel": the type is the last field.
    filesystemRegistered = text.split('\n').some((line) => line.trim().split(/\s+/).pop() === MULTIKERNEL_FS_TYPE);
    findings.push(`${PROC_FILESYSTEMS} ${filesystemRegistered ? 'lists' : 'has no'} "${MULTIKERNEL_FS_TYPE}"`);
  } catch (err) {
    filesystemRegistered = null;
    const code = isSystemError(err) ? err.code : String(err);
    findings.push(`${PROC_FILESYSTEMS} could not be read (${code})`);
  }

  const mountPoint = await exists(system, MULTIKERNEL_MOUNT_POINT);
  const mounted = mountPoint && (await exists(system, MK_DEVICE_TREE));
  findings.push(
    mountPoint ? `${MULTIKERNEL_MOUNT_POINT} exists${mounted ? ' and is mounted' : ' but is not mounted'}` : `${MULTIKERNEL_MOUNT_POINT} is missing`,
  );

  const kimage = await exists(system, PROC_KIMAGE);
  findings.push(`${PROC_KIMAGE} is ${kimage ? 'present' : 'missing'}`);

  return {
    supported: filesystemRegistered === true || mountPoint || kimage,
    filesystemRegistered,
    mountPoint,
    mounted,
    kimage,
    findings,
  };
}

/** True for the errnos a stock kernel gives when asked to do something multikernel. */
export function isStockKernelAnswer(err: unknown): err is SystemError {
  if (!isSystemError(err)) return false;
  const underMultikernel =
    err.path !== undefined && (err.path === MULTIKERNEL_MOUNT_POINT || err.path.startsWith(`${MULTIKERNEL_MOUNT_POINT}/`) || err.path === PROC_KIMAGE);
  switch (err.code) {
    case 'EINVAL':
      return err.syscall === 'kexec_file_load' || err.syscall === 'reboot';
    case 'ENODEV':
      return err.syscall === 'mount';
    case 'ENOENT':
      return err.syscall === 'mount' || err.syscall === 'umount' || underMultikernel;
    case 'ENOSYS':
      // A kernel built without CONFIG_KEXEC_FILE (Debian's arm64 kernels) cannot host instances.
      return err.syscall === 'kexec_file_load';
    case 'ENOPROTOOPT':
      // SO_VM_SOCKETS_TRANSPORT only exists in multikernel kernels.
      return err.syscall === 'setsockopt';
    default:
      return false;
  }
}

/**
 * Runs `fn`. When it fails the way a stock kernel fails multikernel requests and a probe finds no
 * multikernel support, rejects with one ERR_MK_NO_SUPPORT error (the original error as `cause`);
 * otherwise rejects with the original error untouched, so that a multikernel kernel's own EINVAL
 * stays EINVAL.
 *
 * @param operation what was attempted, in kernel terms, e.g. "kexec_file_load with KEXEC_MULTIKERNEL"
 */
export async function explainNoSupport<T>(system: System, operation: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!isStockKernelAnswer(err)) throw err;
    const probes = await probeMultikernelSupport(system);
    if (probes.supported) throw err;
    throw new MultikernelError(
      'ERR_MK_NO_SUPPORT',
      `this kernel has no multikernel support: ${operation} returned ${err.code}; probed: ${probes.findings.join(', ')}. ` +
        'Boot a kernel built with multikernel support (CONFIG_MULTIKERNEL) to use this.',
      { cause: err, details: { operation, probes } },
    );
  }
}
