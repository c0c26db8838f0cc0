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
import { errnoError } from './errors';

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
  /** readiness bits for FdHandle.watch() */
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

/**
 * An fd owned by the addon (a vsock socket, an accepted connection, a device): JavaScript never
 * holds the bare number, so nothing can close it behind the handle's back, and the addon closes
 * every handle still open when the thread's environment ends (worker exit or terminate()).
 * Calls on a closed handle fail with EBADF.
 */
export interface FdHandle {
  /** the fd number while open (for diagnostics), -1 once closed */
  readonly fd: number;
  /** read(2) into buffer[offset, offset+length): bytes read, 0 at EOF, -1 on EAGAIN. */
  read(buffer: Uint8Array, offset: number, length: number): number;
  /** write(2) from buffer[offset, offset+length): bytes written, -1 on EAGAIN. */
  write(buffer: Uint8Array, offset: number, length: number): number;
  /** shutdown(2) with SHUT_WR. */
  shutdownWrite(): void;
  /** getsockopt(SO_ERROR): 0 or a positive errno. */
  socketError(): number;
  /**
   * Watches readiness through `uv_poll` on the calling thread's event loop: (re)starts with the
   * given UV_* event bits; the callback gets (status, events), a negative libuv status on error
   * (the watch has then stopped). The handle stays alive while it watches.
   */
  watch(events: number, callback: (status: number, events: number) => void): void;
  /** stops watching (idempotent) */
  unwatch(): void;
  /** idempotent: stops the watch, closes its uv handle, then closes the fd */
  close(): void;
}

export interface NativeBinding {
  readonly constants: NativeConstants;

  /** kexec_file_load of a multikernel instance image, on a thread of its own with duplicates of the fds. */
  kexecLoad(args: KexecLoadArgs): Promise<void>;
  /** kexec_file_load(-1, -1, 0, NULL, KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | KEXEC_MK_ID(id)). */
  kexecUnload(id: number): Promise<void>;
  /** The flag word the addon would pass for a load or an unload (for tests and diagnostics). */
  kexecFlags(id: number, options: { initrd: boolean; debug: boolean; unload: boolean }): number;

  /** reboot(LINUX_REBOOT_CMD_MULTIKERNEL, {mk_id}) */
  rebootStart(id: number): void;
  /** reboot(LINUX_REBOOT_CMD_MULTIKERNEL_HALT, {mk_id}); may block up to 30 s: a thread of its own. */
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
   * Waits for the lock on a thread of its own (never libuv's pool), polling a duplicate of `fd`.
   * Resolves true when taken, false when cancelled through the returned handle or when
   * `timeoutMs` (>= 0, or -1 for none) ran out.
   */
  flockWait(fd: number, exclusive: boolean, timeoutMs: number): { promise: Promise<boolean>; cancel(): void };
  flockUnlock(fd: number): void;

  /** socket(AF_VSOCK, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC); multikernel selects the transport. */
  vsockSocket(multikernel: boolean): FdHandle;
  vsockBind(socket: FdHandle, cid: number, port: number): void;
  /**
   * Non-blocking connect: true when connected at once, false when in progress (wait writable,
   * then socketError). A socket without the multikernel transport may only connect to CID 1.
   */
  vsockConnect(socket: FdHandle, cid: number, port: number): boolean;
  vsockListen(socket: FdHandle, backlog: number): void;
  /** accept4 non-blocking: null when no connection is pending (EAGAIN). */
  vsockAccept(socket: FdHandle): { socket: FdHandle; cid: number; port: number } | null;
  vsockLocalAddress(socket: FdHandle): VsockAddress;
  vsockRemoteAddress(socket: FdHandle): VsockAddress;

  /** A handle on a duplicate of `fd` (F_DUPFD_CLOEXEC); the caller still owns and closes `fd`. */
  dupFd(fd: number): FdHandle;
  /** lseek(fd, 0, SEEK_END): the new offset. On /dev/kmsg it skips every record logged so far. */
  seekEnd(fd: number): number;

  /** sd_notify(state) to $NOTIFY_SOCKET; false when the variable is unset. */
  sdNotify(state: string): boolean;
  /** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING). */
  memfdCreate(name: string): number;

  /**
   * The function that turns the addon's errno numbers into errors (lib/errors.ts errnoError);
   * `loadBinding()` installs it, once per thread.
   */
  setErrnoErrorFactory(factory: (errno: number, syscall: string, path: string | undefined) => Error): void;
}

let cached: NativeBinding | undefined;

/**
 * Loads the addon once per thread (prebuild or local build, as node-gyp-build finds them) and
 * gives it lib/errors.ts's errno table, so that the addon and the simulator name errnos alike.
 */
export function loadBinding(): NativeBinding {
  if (cached === undefined) {
    const binding = nodeGypBuild(path.join(__dirname, '..')) as NativeBinding;
    binding.setErrnoErrorFactory(errnoError);
    cached = binding;
  }
  return cached;
}
