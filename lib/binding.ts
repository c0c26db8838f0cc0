/**
 * The typed view of the native addon, and its loader. This is the only module that loads the
 * `.node` file; everything else receives a `NativeBinding` (normally through `LinuxSystem`).
 *
 * The loader is node-gyp-build rather than `bindings`: `bindings` only searches build folders,
 * while node-gyp-build also finds the prebuilds that prebuildify puts in the package
 * (`prebuilds/<platform>-<arch>/*.node`, with libc tags), so installs need no compiler.
 *
 * Conventions: synchronous calls throw, asynchronous ones reject, with Node-shaped system errors
 * (`SystemError`); wrong argument types or ranges throw TypeError/RangeError before any system call.
 */
import * as path from 'node:path';
import nodeGypBuild = require('node-gyp-build');

export interface NativeConstants {
  readonly KEXEC_FILE_UNLOAD: number;
  readonly KEXEC_FILE_ON_CRASH: number;
  readonly KEXEC_FILE_NO_INITRAMFS: number;
  readonly KEXEC_FILE_DEBUG: number;
  readonly KEXEC_MULTIKERNEL: number;
  readonly KEXEC_MK_ID_SHIFT: number;
  readonly KEXEC_MK_ID_MASK: number;
  readonly MK_ID_MIN: number;
  readonly MK_ID_MAX: number;
  readonly LINUX_REBOOT_CMD_MULTIKERNEL: number;
  readonly LINUX_REBOOT_CMD_MULTIKERNEL_HALT: number;
  readonly LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE: number;
  readonly COMMAND_LINE_SIZE: number;
  readonly AF_VSOCK: number;
  readonly SO_VM_SOCKETS_TRANSPORT: number;
  readonly VSOCK_TRANSPORT_MULTIKERNEL: number;
  readonly VMADDR_CID_ANY: number;
  readonly VMADDR_CID_LOCAL: number;
  readonly MULTIKERNEL_FS_MAGIC: number;
  /** readiness bits for FdWatcher.start() */
  readonly UV_READABLE: number;
  readonly UV_WRITABLE: number;
  readonly UV_DISCONNECT: number;
}

export interface KexecLoadArgs {
  kernelFd: number;
  /** -1 for none: the addon then sets KEXEC_FILE_NO_INITRAMFS */
  initrdFd: number;
  cmdline: string;
  /** instance id 1..2047, encoded as KEXEC_MULTIKERNEL | KEXEC_MK_ID(id) */
  id: number;
  debug: boolean;
}

export interface VsockAddress {
  cid: number;
  port: number;
}

/** fd readiness watcher over `uv_poll` on the calling thread's event loop. */
export interface FdWatcher {
  /** (re)start watching for the given UV_* event bits; the callback gets (status, events). */
  start(events: number): void;
  stop(): void;
  /** idempotent; stops the watcher and releases the uv handle. Never closes the fd. */
  close(): void;
}

export interface FdWatcherConstructor {
  new (fd: number, callback: (status: number, events: number) => void): FdWatcher;
}

export interface NativeBinding {
  readonly constants: NativeConstants;

  /** kexec_file_load of a multikernel instance image, on the thread pool. */
  kexecLoad(args: KexecLoadArgs): Promise<void>;
  /** kexec_file_load(-1, -1, 0, NULL, KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | KEXEC_MK_ID(id)). */
  kexecUnload(id: number): Promise<void>;
  /** The flag word the addon would pass for a load or an unload (for tests and diagnostics). */
  kexecFlags(id: number, options: { initrd: boolean; debug: boolean; unload: boolean }): number;

  /** reboot(LINUX_REBOOT_CMD_MULTIKERNEL, {mk_id}) */
  rebootStart(id: number): void;
  /** reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, {mk_id}); may block up to 30 s: thread pool. */
  rebootHalt(id: number): Promise<void>;
  /** reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, {mk_id}) */
  rebootHaltForce(id: number): void;

  /** mount("none", "/sys/fs/multikernel", "multikernel", 0, NULL) */
  mountMultikernel(): void;
  /** umount("/sys/fs/multikernel") */
  umountMultikernel(): void;

  /** flock with LOCK_NB: true when taken, false on EWOULDBLOCK. */
  flockTry(fd: number, exclusive: boolean): boolean;
  /**
   * Waits for the lock on the thread pool. Resolves true when taken, false when cancelled
   * through the returned handle or when `timeoutMs` (>= 0, or -1 for none) ran out.
   */
  flockWait(fd: number, exclusive: boolean, timeoutMs: number): { promise: Promise<boolean>; cancel(): void };
  flockUnlock(fd: number): void;

  /** socket(AF_VSOCK, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC); multikernel selects the transport. */
  vsockSocket(multikernel: boolean): number;
  vsockBind(fd: number, cid: number, port: number): void;
  /** Non-blocking connect: true when connected at once, false when in progress (wait writable, then socketError). */
  vsockConnect(fd: number, cid: number, port: number): boolean;
  vsockListen(fd: number, backlog: number): void;
  /** accept4 non-blocking: null when no connection is pending (EAGAIN). */
  vsockAccept(fd: number): { fd: number; cid: number; port: number } | null;
  vsockLocalAddress(fd: number): VsockAddress;
  vsockRemoteAddress(fd: number): VsockAddress;

  /** socketpair(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC). */
  socketpair(): [number, number];
  /** getsockopt(SO_ERROR): 0 or a positive errno. */
  socketError(fd: number): number;
  /** read(2) into buffer[offset, offset+length): bytes read, 0 at EOF, -1 on EAGAIN. */
  read(fd: number, buffer: Uint8Array, offset: number, length: number): number;
  /** write(2) from buffer[offset, offset+length): bytes written, -1 on EAGAIN. */
  write(fd: number, buffer: Uint8Array, offset: number, length: number): number;
  /** shutdown(2) with SHUT_WR. */
  shutdownWrite(fd: number): void;
  close(fd: number): void;

  /** sd_notify(state) to $NOTIFY_SOCKET; false when the variable is unset. */
  sdNotify(state: string): boolean;
  /** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING). */
  memfdCreate(name: string): number;

  FdWatcher: FdWatcherConstructor;
}

let cached: NativeBinding | undefined;

/** Loads the addon once per thread (prebuild or local build, as node-gyp-build finds them). */
export function loadBinding(): NativeBinding {
  cached ??= nodeGypBuild(path.join(__dirname, '..')) as NativeBinding;
  return cached;
}
