import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';

/**
 * A failed system call, shaped exactly like the errors of `node:fs`:
 * message `CODE: description, syscall 'path'`, negative `errno`, `code`, `syscall`, `path`.
 * The native addon, the Linux adapter and the simulated kernel all produce this shape, and all
 * of them name errnos through the one table below.
 */
export interface SystemError extends Error {
  errno: number;
  code: string;
  syscall: string;
  path?: string;
}

/**
 * Linux errnos that Node cannot name or describe: neither libuv's error table (Node's names and
 * messages) nor `os.constants.errno` has them, or libuv has no message. Numbers are the
 * asm-generic ones, which x64 and arm64 (the only targets of this package) use; messages are
 * glibc's strerror(3) text in libuv's style (lower case), e.g. ENOEXEC 'exec format error'.
 */
const LINUX_ERRNOS: readonly (readonly [name: string, errno: number, message: string])[] = [
  ['ENOEXEC', 8, 'exec format error'],
  ['ECHILD', 10, 'no child processes'],
  ['ENOTBLK', 15, 'block device required'],
  ['EDOM', 33, 'numerical argument out of domain'],
  ['EDEADLK', 35, 'resource deadlock avoided'],
  ['EDEADLOCK', 35, 'resource deadlock avoided'],
  ['ENOLCK', 37, 'no locks available'],
  ['ENOMSG', 42, 'no message of desired type'],
  ['EIDRM', 43, 'identifier removed'],
  ['ECHRNG', 44, 'channel number out of range'],
  ['EL2NSYNC', 45, 'level 2 not synchronized'],
  ['EL3HLT', 46, 'level 3 halted'],
  ['EL3RST', 47, 'level 3 reset'],
  ['ELNRNG', 48, 'link number out of range'],
  ['ENOCSI', 50, 'no CSI structure available'],
  ['EL2HLT', 51, 'level 2 halted'],
  ['EBADE', 52, 'invalid exchange'],
  ['EBADR', 53, 'invalid request descriptor'],
  ['EXFULL', 54, 'exchange full'],
  ['ENOANO', 55, 'no anode'],
  ['EBADRQC', 56, 'invalid request code'],
  ['EBADSLT', 57, 'invalid slot'],
  ['EBFONT', 59, 'bad font file format'],
  ['ENOSTR', 60, 'device not a stream'],
  ['ETIME', 62, 'timer expired'],
  ['ENOSR', 63, 'out of streams resources'],
  ['ENOPKG', 65, 'package not installed'],
  ['EREMOTE', 66, 'object is remote'],
  ['ENOLINK', 67, 'link has been severed'],
  ['EADV', 68, 'advertise error'],
  ['ESRMNT', 69, 'srmount error'],
  ['ECOMM', 70, 'communication error on send'],
  ['EMULTIHOP', 72, 'multihop attempted'],
  ['EDOTDOT', 73, 'RFS specific error'],
  ['EBADMSG', 74, 'bad message'],
  ['ENOTUNIQ', 76, 'name not unique on network'],
  ['EBADFD', 77, 'file descriptor in bad state'],
  ['EREMCHG', 78, 'remote address changed'],
  ['ELIBACC', 79, 'can not access a needed shared library'],
  ['ELIBBAD', 80, 'accessing a corrupted shared library'],
  ['ELIBSCN', 81, '.lib section in a.out corrupted'],
  ['ELIBMAX', 82, 'attempting to link in too many shared libraries'],
  ['ELIBEXEC', 83, 'cannot exec a shared library directly'],
  ['ERESTART', 85, 'interrupted system call should be restarted'],
  ['ESTRPIPE', 86, 'streams pipe error'],
  ['EUSERS', 87, 'too many users'],
  ['EPFNOSUPPORT', 96, 'protocol family not supported'],
  ['ENETRESET', 102, 'network dropped connection on reset'],
  ['ETOOMANYREFS', 109, 'too many references: cannot splice'],
  ['EINPROGRESS', 115, 'operation now in progress'],
  ['ESTALE', 116, 'stale file handle'],
  ['EUCLEAN', 117, 'structure needs cleaning'],
  ['ENOTNAM', 118, 'not a XENIX named type file'],
  ['ENAVAIL', 119, 'no XENIX semaphores available'],
  ['EISNAM', 120, 'is a named type file'],
  ['EDQUOT', 122, 'disk quota exceeded'],
  ['ENOMEDIUM', 123, 'no medium found'],
  ['EMEDIUMTYPE', 124, 'wrong medium type'],
  ['ENOKEY', 126, 'required key not available'],
  ['EKEYEXPIRED', 127, 'key has expired'],
  ['EKEYREVOKED', 128, 'key has been revoked'],
  ['EKEYREJECTED', 129, 'key was rejected by service'],
  ['EOWNERDEAD', 130, 'owner died'],
  ['ENOTRECOVERABLE', 131, 'state not recoverable'],
  ['ERFKILL', 132, 'operation not possible due to RF-kill'],
  ['EHWPOISON', 133, 'memory page has hardware error'],
];

const numberByName = new Map<string, number>();
const nameByNumber = new Map<number, string>();
const messageByNumber = new Map<number, string>();

function addErrno(name: string, errno: number, message?: string): void {
  if (!numberByName.has(name)) numberByName.set(name, errno);
  if (!nameByNumber.has(errno)) nameByNumber.set(errno, name);
  if (message !== undefined && !messageByNumber.has(errno)) messageByNumber.set(errno, message);
}

// Node's own names and messages first (libuv codes are -errno; its own codes, such as EOF and
// the EAI_* family, are below -3000 and are not errnos), so a number gets the name Node gives
// it (11 is EAGAIN, not EWOULDBLOCK), then the aliases and the names only Linux has.
for (const [code, [name, message]] of getSystemErrorMap()) {
  if (-code < 3000) addErrno(name, -code, message);
}
for (const [name, errno] of Object.entries(osConstants.errno as Record<string, number>)) addErrno(name, errno);
for (const [name, errno, message] of LINUX_ERRNOS) addErrno(name, errno, message);

/** The errno number of a name such as `'ENOEXEC'` (8), or undefined for a name Linux lacks. */
export function errnoNumber(name: string): number | undefined {
  return numberByName.get(name);
}

/** The name of a (positive) errno number, as Node spells it: 8 is `'ENOEXEC'`, 11 `'EAGAIN'`. */
export function errnoName(errno: number): string | undefined {
  return nameByNumber.get(errno);
}

/** The description Node puts in its messages, e.g. `'exec format error'` for `'ENOEXEC'`. */
export function errnoMessage(name: string): string | undefined {
  const errno = numberByName.get(name);
  return errno === undefined ? undefined : messageByNumber.get(errno);
}

function makeSystemError(code: string, errno: number, description: string, syscall: string, path?: string): SystemError {
  const where = path === undefined ? syscall : `${syscall} '${path}'`;
  const err = new Error(`${code}: ${description}, ${where}`) as SystemError;
  err.errno = -errno;
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  return err;
}

/** Build a Node-shaped system error for an errno name such as `'EBUSY'`. */
export function systemError(code: string, syscall: string, path?: string): SystemError {
  const errno = numberByName.get(code);
  if (errno === undefined) throw new RangeError(`unknown errno name ${JSON.stringify(code)}`);
  return makeSystemError(code, errno, messageByNumber.get(errno) as string, syscall, path);
}

/**
 * Build a Node-shaped system error for a (positive) errno number, as a system call reported it.
 * The native addon builds every error it throws with this function. A number no table knows
 * becomes code `'UNKNOWN'` (as Node does), with the number kept in `errno`.
 */
export function errnoError(errno: number, syscall: string, path?: string): SystemError {
  const code = nameByNumber.get(errno);
  if (code === undefined) return makeSystemError('UNKNOWN', errno, 'unknown error', syscall, path);
  return makeSystemError(code, errno, messageByNumber.get(errno) as string, syscall, path);
}

/** True when `e` is a system error, optionally with one of the given codes. */
export function isSystemError(e: unknown, ...codes: string[]): e is SystemError {
  if (!(e instanceof Error)) return false;
  const { code, syscall, errno } = e as Partial<SystemError>;
  if (typeof code !== 'string' || typeof syscall !== 'string' || typeof errno !== 'number') return false;
  return codes.length === 0 || codes.includes(code);
}

/** Stable codes of the library's own (non-errno) errors. */
export type MultikernelErrorCode =
  | 'ERR_MK_NO_SUPPORT'
  | 'ERR_MK_SHORT_WRITE'
  | 'ERR_MK_INVALID_FDT'
  | 'ERR_MK_FDT_LIMIT'
  | 'ERR_MK_DTS_SYNTAX'
  | 'ERR_MK_INVALID_SPEC'
  | 'ERR_MK_TX_FAILED'
  | 'ERR_MK_SIM_FAULT'
  | 'ERR_MK_QEMU'
  | 'ERR_MK_IMAGE'
  /** another writer's lock (kerf.lock) was not released in time, or looks stale: the message says what to do */
  | 'ERR_MK_LOCKED'
  /** the pool cannot give what was asked (free CPUs, memory, devices) */
  | 'ERR_MK_RESOURCES'
  /** no instance of that name (or id) exists */
  | 'ERR_MK_INSTANCE_NOT_FOUND'
  /** an instance of that name (or id) exists already */
  | 'ERR_MK_INSTANCE_EXISTS'
  /** the instance runs (status `active`): stop it first */
  | 'ERR_MK_INSTANCE_ACTIVE'
  /** the instance holds a loaded kernel (status `loaded`): unload it first */
  | 'ERR_MK_INSTANCE_LOADED'
  /** the instance has no kernel loaded (status `ready`): load one first */
  | 'ERR_MK_INSTANCE_NOT_LOADED'
  /** the instance is not running (status `ready` or `loaded`) */
  | 'ERR_MK_INSTANCE_NOT_ACTIVE'
  /** the spawn kernel did not answer a graceful halt (the kernel's 30 s ETIMEDOUT): stop({ force: true }) */
  | 'ERR_MK_HALT_TIMEOUT'
  /** waiting for a state ran out of time */
  | 'ERR_MK_TIMEOUT'
  /** the kernel refused for lack of privilege or by policy (CAP_SYS_BOOT, lockdown, signature enforcement) */
  | 'ERR_MK_PERMISSION'
  /** Pool.init() on a host whose pool holds resources already: grow() it, or teardown() first */
  | 'ERR_MK_POOL_EXISTS'
  /** the host has no pool yet: Pool.init() first */
  | 'ERR_MK_NO_POOL'
  /** the pool still lends resources to instances: delete them first */
  | 'ERR_MK_POOL_BUSY'
  /** nothing listens on that vsock port in the instance (it answered with a reset) */
  | 'ERR_MK_CHANNEL_REFUSED'
  /** the instance did not answer a vsock connect in time (hung, or halted) */
  | 'ERR_MK_CHANNEL_TIMEOUT'
  /** no kerf-init agent listens on port 1023 in the instance (kerf 0.1's kerf-init has none) */
  | 'ERR_MK_EXEC_NO_AGENT'
  /** the instance's kerf-init never acknowledged stdin (an older session.c without STDIN_ACK): more than 64 KiB of stdin cannot go through it */
  | 'ERR_MK_EXEC_OLD_AGENT';

/** A domain error with a stable `code` and a message that says what to do. */
export class MultikernelError extends Error {
  readonly code: MultikernelErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: MultikernelErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
  override get name(): string {
    return 'MultikernelError';
  }
}
