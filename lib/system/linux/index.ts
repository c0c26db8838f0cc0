/**
 * `LinuxSystem`: the `System` interface over real system calls, `node:fs` for plain files and the
 * native addon for everything Node cannot do (kexec_file_load, the multikernel reboot commands,
 * mount, flock, fd readiness, memfd, vsock, sd_notify).
 *
 * The adapter is deliberately thin, but it refuses anything that is not a multikernel request
 * before the addon is called: a kexec flag word without KEXEC_MULTIKERNEL and a valid instance
 * id, or a reboot command other than the three multikernel ones, is a RangeError. The addon is
 * loaded lazily, so file reads work on machines where it is not built.
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { loadBinding, type FdHandle, type NativeBinding } from '../../binding';
import { MultikernelError, errnoError, systemError, type SystemError } from '../../errors';
import {
  KEXEC_FILE_DEBUG,
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_UNLOAD,
  KEXEC_MULTIKERNEL,
  KEXEC_MK_ID_MASK,
  LINUX_REBOOT_CMD_MULTIKERNEL,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE,
  isValidMkId,
  kexecGetMkId,
} from '../../uapi';
import { vsockConnect, vsockListen } from './vsock';
import type {
  DeviceHandle,
  FileStat,
  FileType,
  KexecFileLoadArgs,
  LockHandle,
  LockOptions,
  System,
  VsockConnectOptions,
  VsockListenOptions,
  VsockServer,
  VsockStream,
} from '../system';

const openFd = promisify(fs.open);
/** the kernel log device (Documentation/ABI/testing/dev-kmsg) */
const KMSG = '/dev/kmsg';
const closeFd = promisify(fs.close);
const writeFd = promisify(fs.write);

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
/** libuv opens every fd with O_CLOEXEC already; spelled out because the contract names it. */
const O_CLOEXEC = 0o2000000;

/** First read size for files whose st_size cannot be trusted (kernfs, seq_file). */
const READ_CHUNK = 4096;
const DEFAULT_DEVICE_READ = 64 * 1024;

/** The only kexec flag bits this adapter passes on. */
const KEXEC_ALLOWED_BITS =
  KEXEC_FILE_UNLOAD | KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG | KEXEC_MULTIKERNEL | KEXEC_MK_ID_MASK;

export interface LinuxSystemOptions {
  /** The native addon; loaded with `loadBinding()` on first need when omitted (tests inject fakes). */
  binding?: NativeBinding;
}

function fileType(st: fs.Stats): FileType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isCharacterDevice()) return 'char-device';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

/** A libuv status (negative errno) from a readiness callback, as a Node-shaped error. */
function pollError(status: number, path: string): SystemError {
  return errnoError(-status, 'poll', path);
}

interface Waiter {
  events: number;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Readiness waits on one device handle, shared by concurrent reads and writes. The watch runs
 * only while somebody waits (uv_poll is level-triggered).
 */
class Readiness {
  private readonly waiters = new Set<Waiter>();
  private readonly onReadyCallback = (status: number, ready: number): void => this.onReady(status, ready);

  constructor(
    private readonly handle: FdHandle,
    private readonly path: string,
  ) {}

  wait(events: number, signal: AbortSignal | undefined): Promise<void> {
    // Callers check the signal synchronously just before waiting, so it is not aborted yet.
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        this.update();
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        events,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
      this.update();
    });
  }

  /** Pending waits reject with EBADF: the handle is about to be closed. */
  close(): void {
    const pending = [...this.waiters];
    this.waiters.clear();
    for (const w of pending) w.reject(systemError('EBADF', 'poll', this.path));
  }

  private update(): void {
    let events = 0;
    for (const w of this.waiters) events |= w.events;
    if (events === 0) this.handle.unwatch();
    else this.handle.watch(events, this.onReadyCallback);
  }

  private onReady(status: number, ready: number): void {
    for (const w of [...this.waiters]) {
      if (status < 0) {
        this.waiters.delete(w);
        w.reject(pollError(status, this.path));
      } else if ((w.events & ready) !== 0) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
    this.update();
  }
}

class LinuxDevice implements DeviceHandle {
  private closed = false;
  private readonly readiness: Readiness;
  /** One read(2) target per device, reused: each read returns a copy of just the bytes read. */
  private scratch = Buffer.alloc(0);

  constructor(
    private readonly binding: NativeBinding,
    private readonly handle: FdHandle,
    private readonly path: string,
  ) {
    this.readiness = new Readiness(handle, path);
  }

  async read(options: { max?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    const { max = DEFAULT_DEVICE_READ, signal } = options;
    if (!Number.isInteger(max) || max <= 0) throw new RangeError(`max must be a positive integer, got ${max}`);
    for (;;) {
      signal?.throwIfAborted();
      this.checkOpen('read');
      if (this.scratch.length < max) this.scratch = Buffer.allocUnsafe(max);
      const n = this.handle.read(this.scratch, 0, max);
      if (n >= 0) return Buffer.from(this.scratch.subarray(0, n));
      await this.readiness.wait(this.binding.constants.UV_READABLE, signal);
    }
  }

  async write(data: Uint8Array): Promise<number> {
    for (;;) {
      this.checkOpen('write');
      const n = this.handle.write(data, 0, data.length);
      if (n >= 0) return n;
      await this.readiness.wait(this.binding.constants.UV_WRITABLE, undefined);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.readiness.close();
    this.handle.close();
  }

  private checkOpen(syscall: string): void {
    if (this.closed) throw systemError('EBADF', syscall, this.path);
  }
}

class LinuxLock implements LockHandle {
  private released = false;

  constructor(
    private readonly binding: NativeBinding,
    private readonly fd: number,
  ) {}

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    try {
      this.binding.flockUnlock(this.fd);
    } finally {
      await closeFd(this.fd);
    }
  }
}

export class LinuxSystem implements System {
  readonly kind = 'linux' as const;
  private bindingInstance: NativeBinding | undefined;

  constructor(options: LinuxSystemOptions = {}) {
    this.bindingInstance = options.binding;
  }

  /** The addon, loaded on first use. */
  private get binding(): NativeBinding {
    this.bindingInstance ??= loadBinding();
    return this.bindingInstance;
  }

  async readFile(path: string): Promise<Buffer> {
    const fh = await fs.promises.open(path, O_RDONLY);
    try {
      // st_size of kernfs/procfs/seq_file files is 0 or 4096 whatever the content: read to EOF.
      let buffer = Buffer.allocUnsafe(READ_CHUNK);
      let length = 0;
      for (;;) {
        if (length === buffer.length) {
          const bigger = Buffer.allocUnsafe(buffer.length * 2);
          buffer.copy(bigger, 0, 0, length);
          buffer = bigger;
        }
        const { bytesRead } = await fh.read(buffer, length, buffer.length - length, null);
        if (bytesRead === 0) break;
        length += bytesRead;
      }
      return Buffer.from(buffer.subarray(0, length));
    } finally {
      await fh.close();
    }
  }

  async writeFile(path: string, data: Uint8Array): Promise<number> {
    // No O_CREAT/O_TRUNC: kernfs files exist already and the kernel acts on each write(2).
    const fh = await fs.promises.open(path, O_WRONLY);
    let written: number;
    try {
      // Exactly one write(2): the kernel parses each write as a whole (a baseline DTB, a DTBO),
      // so a remainder written by a second call would be a different, broken request.
      ({ bytesWritten: written } = await fh.write(data, 0, data.length, null));
    } finally {
      await fh.close();
    }
    if (written !== data.length) {
      throw new MultikernelError(
        'ERR_MK_SHORT_WRITE',
        `short write to ${path}: the kernel took ${written} of ${data.length} bytes in one write(2); ` +
          'the rest was not sent, because this file must receive its data in a single write',
        { details: { path, written, expected: data.length } },
      );
    }
    return written;
  }

  async readdir(path: string): Promise<string[]> {
    return fs.promises.readdir(path);
  }

  async mkdir(path: string): Promise<void> {
    await fs.promises.mkdir(path);
  }

  async rmdir(path: string): Promise<void> {
    await fs.promises.rmdir(path);
  }

  /** lstat(2): a symlink is reported as one, not followed. */
  async stat(path: string): Promise<FileStat> {
    const st = await fs.promises.lstat(path);
    return { type: fileType(st), mode: st.mode & 0o7777, size: st.size, mtimeMs: st.mtimeMs };
  }

  async createExclusive(path: string, data?: Uint8Array): Promise<void> {
    const fh = await fs.promises.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644);
    try {
      if (data !== undefined && data.length > 0) await fh.writeFile(data);
    } finally {
      await fh.close();
    }
  }

  async unlink(path: string): Promise<void> {
    await fs.promises.unlink(path);
  }

  async openDevice(path: string): Promise<DeviceHandle> {
    const binding = this.binding;
    const fd = await openFd(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    // The device lives in an addon handle, which the addon closes when this thread's environment
    // ends; node:fs keeps (and closes) only its own fd.
    try {
      return new LinuxDevice(binding, binding.dupFd(fd), path);
    } finally {
      await closeFd(fd);
    }
  }

  async openKernelLog(): Promise<DeviceHandle> {
    const binding = this.binding;
    const fd = await openFd(KMSG, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    try {
      // the duplicate shares the open file and so the reader's position (its record sequence)
      binding.seekEnd(fd);
      return new LinuxDevice(binding, binding.dupFd(fd), KMSG);
    } finally {
      await closeFd(fd);
    }
  }

  async openImage(path: string): Promise<number> {
    return openFd(path, O_RDONLY | O_CLOEXEC);
  }

  async openImageBytes(name: string, bytes: Uint8Array): Promise<number> {
    const fd = this.binding.memfdCreate(name);
    try {
      // kexec_file_load reads the file from offset 0 whatever the file position, so no rewind.
      for (let offset = 0; offset < bytes.length; ) {
        offset += (await writeFd(fd, bytes, offset, bytes.length - offset, null)).bytesWritten;
      }
    } catch (err) {
      await closeFd(fd);
      throw err;
    }
    return fd;
  }

  async closeImage(fd: number): Promise<void> {
    await closeFd(fd);
  }

  async kexecFileLoad(args: KexecFileLoadArgs): Promise<void> {
    const { kernelFd, initrdFd, cmdline, flags } = args;
    const request = decodeKexecFlags(flags);
    const binding = this.binding;
    const { id, unload, debug } = request;
    const initrd = !unload && initrdFd !== -1;
    if (unload) {
      if (kernelFd !== -1 || initrdFd !== -1) {
        throw new TypeError(`an unload (KEXEC_FILE_UNLOAD) takes kernelFd and initrdFd -1, got ${kernelFd} and ${initrdFd}`);
      }
    } else if (request.noInitramfs === initrd) {
      throw new TypeError(
        initrd
          ? `KEXEC_FILE_NO_INITRAMFS is set but initrdFd is ${initrdFd}: pass -1 or drop the flag`
          : 'initrdFd is -1 but KEXEC_FILE_NO_INITRAMFS is not set: the kernel requires it without an initramfs',
      );
    }
    // The addon encodes the flag word itself; make sure it means what the caller asked for.
    const encoded = binding.kexecFlags(id, { initrd, debug, unload });
    if (encoded !== flags) {
      throw new Error(
        `the native addon encodes kexec flags 0x${encoded.toString(16)} for requested flags 0x${flags.toString(16)}: ` +
          'refusing to call kexec_file_load with a flag word the caller did not ask for',
      );
    }
    if (unload) {
      await binding.kexecUnload(id);
    } else {
      await binding.kexecLoad({ kernelFd, initrdFd, cmdline, id, debug });
    }
  }

  async reboot(cmd: number, mkId: number): Promise<void> {
    if (!isValidMkId(mkId)) throw new RangeError(`multikernel instance id must be an integer 1..2047, got ${mkId}`);
    const binding = this.binding;
    switch (cmd) {
      case LINUX_REBOOT_CMD_MULTIKERNEL:
        return binding.rebootStart(mkId);
      case LINUX_REBOOT_CMD_MULTIKERNEL_HALT:
        return binding.rebootHalt(mkId);
      case LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE:
        return binding.rebootHaltForce(mkId);
      default:
        throw new RangeError(
          `reboot command 0x${cmd.toString(16)} is not a multikernel command: this adapter only issues ` +
            'LINUX_REBOOT_CMD_MULTIKERNEL, _HALT and _HALT_FORCE',
        );
    }
  }

  async mountMultikernel(): Promise<void> {
    this.binding.mountMultikernel();
  }

  async umountMultikernel(): Promise<void> {
    this.binding.umountMultikernel();
  }

  async lock(path: string, options: LockOptions = {}): Promise<LockHandle> {
    const { exclusive = true, wait = true, timeoutMs, signal } = options;
    if (timeoutMs !== undefined && (!Number.isInteger(timeoutMs) || timeoutMs < 0)) {
      throw new RangeError(`timeoutMs must be a non-negative integer, got ${timeoutMs}`);
    }
    signal?.throwIfAborted();
    const binding = this.binding;
    const fd = await openFd(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
    try {
      await this.takeLock(binding, fd, path, exclusive, wait, timeoutMs, signal);
    } catch (err) {
      await closeFd(fd);
      throw err;
    }
    return new LinuxLock(binding, fd);
  }

  private async takeLock(
    binding: NativeBinding,
    fd: number,
    path: string,
    exclusive: boolean,
    wait: boolean,
    timeoutMs: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    signal?.throwIfAborted();
    if (!wait) {
      if (!binding.flockTry(fd, exclusive)) throw systemError('EWOULDBLOCK', 'flock', path);
      return;
    }
    const pending = binding.flockWait(fd, exclusive, timeoutMs ?? -1);
    const onAbort = (): void => pending.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    let taken: boolean;
    try {
      taken = await pending.promise;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (signal?.aborted) {
      // Aborted while the lock was being granted: the caller will not get a handle, so let it go.
      if (taken) binding.flockUnlock(fd);
      throw signal.reason;
    }
    if (!taken) throw systemError('ETIMEDOUT', 'flock', path);
  }

  async vsockConnect(options: VsockConnectOptions): Promise<VsockStream> {
    return vsockConnect(this.binding, options);
  }

  async vsockListen(options: VsockListenOptions): Promise<VsockServer> {
    return vsockListen(this.binding, options);
  }

  async notify(state: string): Promise<boolean> {
    return this.binding.sdNotify(state);
  }
}

export interface KexecRequest {
  id: number;
  unload: boolean;
  noInitramfs: boolean;
  debug: boolean;
}

/**
 * Splits a raw kexec_file_load flag word into the multikernel request it encodes. RangeError for
 * anything that is not a multikernel load or unload of a valid instance id (1..2047).
 */
export function decodeKexecFlags(flags: number): KexecRequest {
  const hex = Number.isInteger(flags) ? `0x${flags.toString(16)}` : String(flags);
  if (!Number.isInteger(flags) || flags < 0 || (flags & ~KEXEC_ALLOWED_BITS) !== 0 || flags > KEXEC_ALLOWED_BITS) {
    throw new RangeError(
      `kexec flags ${hex} carry bits other than KEXEC_FILE_UNLOAD, KEXEC_FILE_NO_INITRAMFS, KEXEC_FILE_DEBUG, ` +
        'KEXEC_MULTIKERNEL and the instance id',
    );
  }
  if ((flags & KEXEC_MULTIKERNEL) === 0) {
    throw new RangeError(`kexec flags ${hex} lack KEXEC_MULTIKERNEL: this adapter never replaces the running kernel`);
  }
  const id = kexecGetMkId(flags);
  if (!isValidMkId(id)) throw new RangeError(`kexec flags ${hex} carry no instance id (KEXEC_MK_ID(1..2047))`);
  const request: KexecRequest = {
    id,
    unload: (flags & KEXEC_FILE_UNLOAD) !== 0,
    noInitramfs: (flags & KEXEC_FILE_NO_INITRAMFS) !== 0,
    debug: (flags & KEXEC_FILE_DEBUG) !== 0,
  };
  if (request.unload && (request.noInitramfs || request.debug)) {
    throw new RangeError(`kexec flags ${hex}: an unload takes only KEXEC_MULTIKERNEL and the instance id`);
  }
  return request;
}
