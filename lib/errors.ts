import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';

/**
 * A failed system call, shaped exactly like the errors of `node:fs`:
 * message `CODE: description, syscall 'path'`, negative `errno`, `code`, `syscall`, `path`.
 * The native addon, the Linux adapter and the simulated kernel all produce this shape.
 */
export interface SystemError extends Error {
  errno: number;
  code: string;
  syscall: string;
  path?: string;
}

const errnoByCode = osConstants.errno as Record<string, number>;

/** Build a Node-shaped system error for an errno name such as `'EBUSY'`. */
export function systemError(code: string, syscall: string, path?: string): SystemError {
  const errno = errnoByCode[code];
  if (errno === undefined) throw new RangeError(`unknown errno name ${JSON.stringify(code)}`);
  const description = getSystemErrorMap().get(-errno)?.[1] ?? code;
  const where = path === undefined ? syscall : `${syscall} '${path}'`;
  const err = new Error(`${code}: ${description}, ${where}`) as SystemError;
  err.errno = -errno;
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  return err;
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
  | 'ERR_MK_IMAGE';

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
