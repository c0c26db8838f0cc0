/**
 * The one door to the kernel. Everything the library does to a multikernel host goes through a
 * `System`: kernfs and procfs/sysfs files, devices, kexec_file_load, the multikernel reboot
 * commands, mount, locks, vsock and sd_notify. It speaks in kernel terms (paths, bytes, flag
 * words, errno) and knows nothing of instances: `LinuxSystem` maps it onto real system calls,
 * `SimulatedSystem` onto an in-memory model of the multikernel kernel that follows the kernel
 * sources (docs/kernel-interface.md).
 *
 * Every method that fails for a kernel reason rejects with a Node-shaped `SystemError`
 * (lib/errors.ts), with the errno the real kernel would return.
 */
import type { Duplex } from 'node:stream';

export type FileType = 'file' | 'directory' | 'char-device' | 'symlink' | 'other';

export interface FileStat {
  type: FileType;
  /** permission bits, e.g. 0o644 */
  mode: number;
  /** st_size as the kernel reports it (kernfs and procfs files often say 4096 or 0) */
  size: number;
  /**
   * st_mtime in milliseconds since the epoch (lstat). The simulator gives the creation time of its
   * host files (lock files under /run, /var/run, /tmp) and 0 for kernel files and directories.
   */
  mtimeMs: number;
}

/** An open character device such as /dev/mktty, in non-blocking mode. */
export interface DeviceHandle {
  /** One write(2); resolves with the byte count the kernel accepted. */
  write(data: Uint8Array): Promise<number>;
  /**
   * Waits until the device is readable, then one read(2) of at most `max` bytes (default 64 KiB).
   * Resolves with the bytes read; an empty buffer means end of file.
   * Rejects with the kernel's errno (e.g. ENOTCONN on /dev/mktty before an instance is selected),
   * or with `signal.reason` when aborted.
   */
  read(options?: { max?: number; signal?: AbortSignal }): Promise<Buffer>;
  /** idempotent */
  close(): Promise<void>;
}

export interface KexecFileLoadArgs {
  /** from openImage(); -1 only for an unload */
  kernelFd: number;
  /** from openImage(), or -1 with KEXEC_FILE_NO_INITRAMFS */
  initrdFd: number;
  /** without the terminating NUL; the adapter adds it and counts it in cmdline_len */
  cmdline: string;
  /** the raw flag word, e.g. KEXEC_MULTIKERNEL | kexecMkId(id) | KEXEC_FILE_NO_INITRAMFS */
  flags: number;
}

export interface LockOptions {
  exclusive?: boolean;
  /** false: fail at once with EWOULDBLOCK when held elsewhere (default true: wait) */
  wait?: boolean;
  /** give up waiting after this many milliseconds (rejects with ETIMEDOUT) */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface LockHandle {
  /** idempotent */
  release(): Promise<void>;
}

export interface VsockConnectOptions {
  cid: number;
  port: number;
  /**
   * bind to this local port first; ports up to 1023 need root (CAP_NET_BIND_SERVICE). kerf's exec
   * client binds one of 1023..512 because, its comment says, kerf-init trusts only reserved ports
   */
  localPort?: number;
  /** select the multikernel transport (default true); false uses the loopback transport, CID 1 only */
  multikernel?: boolean;
  signal?: AbortSignal;
}

export interface VsockStream extends Duplex {
  readonly localCid: number;
  readonly localPort: number;
  readonly remoteCid: number;
  readonly remotePort: number;
}

export interface VsockListenOptions {
  port: number;
  /** default VMADDR_CID_ANY */
  cid?: number;
  multikernel?: boolean;
  backlog?: number;
}

export interface VsockServer extends AsyncIterable<VsockStream> {
  readonly port: number;
  /** Resolves with the next accepted connection; rejects with signal.reason or when closed. */
  accept(options?: { signal?: AbortSignal }): Promise<VsockStream>;
  /** idempotent; pending accepts reject */
  close(): Promise<void>;
}

export interface System {
  readonly kind: 'linux' | 'simulated';

  /** open, read to EOF, close. */
  readFile(path: string): Promise<Buffer>;
  /** open O_WRONLY, exactly one write(2) of all of `data`, close. A short write is an ERR_MK_SHORT_WRITE error. Resolves with the count. */
  writeFile(path: string, data: Uint8Array): Promise<number>;
  readdir(path: string): Promise<string[]>;
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  /** lstat(2) */
  stat(path: string): Promise<FileStat>;
  /**
   * open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644), write(2) of `data`
   * when given, then close: creates a file that must not exist yet, as kerf creates its lock file
   * (kerf's own is empty). Rejects EEXIST when it exists (a symlink included), ENOENT when the
   * directory is missing, EACCES or EROFS when the directory is not writable.
   */
  createExclusive(path: string, data?: Uint8Array): Promise<void>;
  /** unlink(2) of a file. */
  unlink(path: string): Promise<void>;
  /** open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC) of a character device. */
  openDevice(path: string): Promise<DeviceHandle>;
  /**
   * The kernel log as a reader of new records: open("/dev/kmsg", O_RDONLY | O_NONBLOCK |
   * O_CLOEXEC), then lseek(SEEK_END) past every record already logged. Each `read()` waits for and
   * returns one record, `"<prio>,<seq>,<usec>,<flags>;<text>\n"` (continuation lines " KEY=value"
   * may follow), as Documentation/ABI/testing/dev-kmsg describes; a read rejects `EPIPE` once when
   * records were overwritten before this reader got them (the next read goes on with the oldest
   * one left). `write()` fails `EBADF`. Rejects `EPERM` (or `EACCES`) when the caller may not read
   * the log (dmesg_restrict without CAP_SYSLOG).
   */
  openKernelLog(): Promise<DeviceHandle>;

  /** open(path, O_RDONLY | O_CLOEXEC) of a kernel or initramfs image; returns the fd. */
  openImage(path: string): Promise<number>;
  /** An image held in memory (memfd on Linux); returns the fd. */
  openImageBytes(name: string, bytes: Uint8Array): Promise<number>;
  closeImage(fd: number): Promise<void>;
  kexecFileLoad(args: KexecFileLoadArgs): Promise<void>;

  /** reboot(MAGIC1, MAGIC2, cmd, &{ mk_id }) for the three multikernel commands only. */
  reboot(cmd: number, mkId: number): Promise<void>;

  /** mount("none", "/sys/fs/multikernel", "multikernel", 0, NULL) */
  mountMultikernel(): Promise<void>;
  umountMultikernel(): Promise<void>;

  /** flock(2) on `path` (created 0600 if missing). */
  lock(path: string, options?: LockOptions): Promise<LockHandle>;

  vsockConnect(options: VsockConnectOptions): Promise<VsockStream>;
  vsockListen(options: VsockListenOptions): Promise<VsockServer>;

  /** sd_notify(3)-style datagram to $NOTIFY_SOCKET; false when not under a notifying supervisor. */
  notify(state: string): Promise<boolean>;
}
