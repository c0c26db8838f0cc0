/**
 * The kerf exec wire protocol between a host client and the `kerf-init` agent in a spawned
 * instance (vsock port 1023). Frames are `{ u32 len; u16 type; u16 reserved = 0 }` followed by
 * `len` payload bytes, little-endian, `len <= 65536`. Senders write 0 in the reserved field;
 * readers ignore it, as both of kerf's do.
 * Source: kerf `src/init/proto.h` (commit 31020afe, with STDIN_ACK) and `src/init/session.c`.
 */
import { constants as osConstants } from 'node:os';

export const AGENT_PORT = 1023;
/**
 * The local ports kerf's client binds before it connects, the first free one from `highest` down
 * ("kerf-init only trusts reserved ports, which only root can bind":
 * `kerf:src/kerf/exec/main.py@32f00431` connect_agent). No check of the peer's port was found in
 * kerf-init's sources read (docs/kernel-interface.md, "Trusted source ports").
 */
export const CLIENT_PORTS = { highest: 1023, lowest: 512 } as const;
export const HEADER_LENGTH = 8;
export const MAX_PAYLOAD = 65536;
/** Unacknowledged stdin bytes the host may have in flight (KERF_STDIN_WINDOW). */
export const STDIN_WINDOW = 65536;
export const PROTOCOL_VERSION = 1;
export const OPEN_FIXED_LENGTH = 24;

export const OPEN_FLAG_TTY = 0x1;
export const OPEN_FLAG_STDIN = 0x2;
export const OPEN_FLAG_USER = 0x4;

export const FrameType = {
  OPEN: 1,
  STDIN: 2,
  STDIN_EOF: 3,
  RESIZE: 4,
  SIGNAL: 5,
  STARTED: 16,
  ERROR: 17,
  STDOUT: 18,
  STDERR: 19,
  EXIT: 20,
  STDIN_ACK: 21,
} as const;
export type FrameTypeName = keyof typeof FrameType;

export interface Frame {
  type: number;
  payload: Buffer;
}

export type ProtocolErrorReason =
  /** a header announced more than MAX_PAYLOAD bytes */
  | 'oversize'
  /** a payload has the wrong size or shape for its type */
  | 'malformed'
  /** an OPEN request with a protocol version other than 1 */
  | 'version';

/** A frame or payload that breaks the protocol. */
export class ProtocolError extends Error {
  readonly code = 'ERR_MK_EXEC_PROTOCOL';
  readonly reason: ProtocolErrorReason;
  constructor(reason: ProtocolErrorReason, message: string) {
    super(message);
    this.reason = reason;
  }
  override get name(): string {
    return 'ProtocolError';
  }
}

/** One frame: header and payload. */
export function encodeFrame(type: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new RangeError(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const frame = Buffer.alloc(HEADER_LENGTH + payload.length);
  frame.writeUInt32LE(payload.length, 0);
  frame.writeUInt16LE(type, 4);
  frame.set(payload, HEADER_LENGTH);
  return frame;
}

/**
 * Splits a byte stream into frames. Keeps partial frames across chunks; rejects a header as soon
 * as it is complete when it announces an oversize payload (kerf-init hangs up, kerf's client
 * raises ProtocolError). The reserved field is not looked at: kerf-init never reads it
 * (`kerf:src/init/session.c@f8698f9e` read_open and process_frames read only len and type) and
 * kerf's client discards it (`kerf:src/kerf/exec/protocol.py@31020afe` and `@8c7d3926`
 * read_frame). After an error the decoder stays failed.
 */
export class FrameDecoder {
  #buffer: Buffer = Buffer.alloc(0);
  #failure: ProtocolError | undefined;

  /** Bytes held that do not yet form a whole frame. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** The type of the frame whose header has arrived but not all of its payload, if any. */
  get pendingType(): number | undefined {
    return this.#buffer.length >= HEADER_LENGTH ? this.#buffer.readUInt16LE(4) : undefined;
  }

  push(chunk: Uint8Array): Frame[] {
    if (this.#failure) throw this.#failure;
    this.#buffer = this.#buffer.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buffer, chunk]);
    const frames: Frame[] = [];
    let offset = 0;
    while (this.#buffer.length - offset >= HEADER_LENGTH) {
      const length = this.#buffer.readUInt32LE(offset);
      const type = this.#buffer.readUInt16LE(offset + 4);
      if (length > MAX_PAYLOAD) this.#fail(new ProtocolError('oversize', `frame of type ${type} announces ${length} bytes, more than ${MAX_PAYLOAD}`));
      if (this.#buffer.length - offset - HEADER_LENGTH < length) break;
      const start = offset + HEADER_LENGTH;
      frames.push({ type, payload: Buffer.from(this.#buffer.subarray(start, start + length)) });
      offset = start + length;
    }
    this.#buffer = Buffer.from(this.#buffer.subarray(offset));
    return frames;
  }

  #fail(error: ProtocolError): never {
    this.#failure = error;
    this.#buffer = Buffer.alloc(0);
    throw error;
  }
}

export interface OpenRequest {
  /** OPEN_FLAG_* bits */
  flags: number;
  uid: number;
  gid: number;
  groups: number[];
  rows: number;
  cols: number;
  cwd: string;
  argv: string[];
  /** `KEY=VALUE` strings */
  env: string[];
  /** only for decoding foreign requests; encodeOpen always writes PROTOCOL_VERSION */
  version?: number;
}

/** OPEN payload: `<HHIIHHHHHH>` (version, flags, uid, gid, ngroups, rows, cols, argc, envc, pad), u32 gids, NUL-terminated cwd, argv, env. */
export function encodeOpen(request: OpenRequest): Buffer {
  if (request.argv.length === 0) throw new RangeError('argv must not be empty');
  const strings = [request.cwd, ...request.argv, ...request.env];
  for (const s of strings) if (s.includes('\0')) throw new RangeError(`string ${JSON.stringify(s)} contains a NUL byte`);
  const fixed = Buffer.alloc(OPEN_FIXED_LENGTH + 4 * request.groups.length);
  fixed.writeUInt16LE(PROTOCOL_VERSION, 0);
  fixed.writeUInt16LE(request.flags, 2);
  fixed.writeUInt32LE(request.uid, 4);
  fixed.writeUInt32LE(request.gid, 8);
  fixed.writeUInt16LE(request.groups.length, 12);
  fixed.writeUInt16LE(request.rows, 14);
  fixed.writeUInt16LE(request.cols, 16);
  fixed.writeUInt16LE(request.argv.length, 18);
  fixed.writeUInt16LE(request.env.length, 20);
  request.groups.forEach((gid, i) => fixed.writeUInt32LE(gid, OPEN_FIXED_LENGTH + 4 * i));
  const payload = Buffer.concat([fixed, ...strings.map((s) => Buffer.from(`${s}\0`, 'utf8'))]);
  if (payload.length > MAX_PAYLOAD) throw new RangeError(`OPEN payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  return payload;
}

/** Parses an OPEN payload with kerf-init's rules (session.c parse_open). */
export function decodeOpen(payload: Buffer): OpenRequest {
  if (payload.length < OPEN_FIXED_LENGTH) throw new ProtocolError('malformed', `OPEN payload of ${payload.length} bytes is shorter than ${OPEN_FIXED_LENGTH}`);
  const version = payload.readUInt16LE(0);
  if (version !== PROTOCOL_VERSION) throw new ProtocolError('version', `unsupported protocol version ${version}`);
  const ngroups = payload.readUInt16LE(12);
  const argc = payload.readUInt16LE(18);
  const envc = payload.readUInt16LE(20);
  let offset = OPEN_FIXED_LENGTH;
  if (argc === 0) throw new ProtocolError('malformed', 'OPEN has no argv');
  if (payload.length - offset < ngroups * 4) throw new ProtocolError('malformed', `OPEN is too short for ${ngroups} groups`);
  const groups: number[] = [];
  for (let i = 0; i < ngroups; i++, offset += 4) groups.push(payload.readUInt32LE(offset));
  const strings: string[] = [];
  for (let i = 0; i < 1 + argc + envc; i++) {
    const nul = payload.indexOf(0, offset);
    if (nul < 0) throw new ProtocolError('malformed', 'OPEN string is not NUL-terminated');
    strings.push(payload.toString('utf8', offset, nul));
    offset = nul + 1;
  }
  if (offset !== payload.length) throw new ProtocolError('malformed', 'OPEN has trailing bytes');
  return {
    version,
    flags: payload.readUInt16LE(2),
    uid: payload.readUInt32LE(4),
    gid: payload.readUInt32LE(8),
    groups,
    rows: payload.readUInt16LE(14),
    cols: payload.readUInt16LE(16),
    cwd: strings[0]!,
    argv: strings.slice(1, 1 + argc),
    env: strings.slice(1 + argc),
  };
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value, 0);
  return b;
}

function expectLength(what: string, payload: Buffer, length: number): void {
  if (payload.length !== length) throw new ProtocolError('malformed', `${what} payload has ${payload.length} bytes, expected ${length}`);
}

export const encodeStarted = (pid: number): Buffer => u32(pid);
export function decodeStarted(payload: Buffer): number {
  expectLength('STARTED', payload, 4);
  return payload.readUInt32LE(0);
}

export const encodeSignal = (signo: number): Buffer => u32(signo);
export function decodeSignal(payload: Buffer): number {
  expectLength('SIGNAL', payload, 4);
  return payload.readUInt32LE(0);
}

export const encodeStdinAck = (bytes: number): Buffer => u32(bytes);
export function decodeStdinAck(payload: Buffer): number {
  expectLength('STDIN_ACK', payload, 4);
  return payload.readUInt32LE(0);
}

export interface WindowSize {
  rows: number;
  cols: number;
}
export function encodeResize(size: WindowSize): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16LE(size.rows, 0);
  b.writeUInt16LE(size.cols, 2);
  return b;
}
export function decodeResize(payload: Buffer): WindowSize {
  expectLength('RESIZE', payload, 4);
  return { rows: payload.readUInt16LE(0), cols: payload.readUInt16LE(2) };
}

export interface ExitStatus {
  signaled: boolean;
  /** the exit code, or the signal number when signaled */
  code: number;
}
export function encodeExit(status: ExitStatus): Buffer {
  return Buffer.from([status.signaled ? 1 : 0, status.code]);
}
export function decodeExit(payload: Buffer): ExitStatus {
  expectLength('EXIT', payload, 2);
  return { signaled: payload[0] !== 0, code: payload[1]! };
}
/** The shell's view of an EXIT: the code, or 128 + signal. */
export function shellStatus(status: ExitStatus): number {
  return status.signaled ? 128 + status.code : status.code;
}

export interface RemoteErrorPayload {
  /** positive errno number, as in the spawn's errno.h */
  errno: number;
  message: string;
}
/** `<I errno> + message\0`; like kerf-init, the message is cut to 507 bytes. */
export function encodeError(error: RemoteErrorPayload): Buffer {
  const message = Buffer.from(error.message, 'utf8').subarray(0, 507);
  const nul = message.indexOf(0);
  return Buffer.concat([u32(error.errno), nul < 0 ? message : message.subarray(0, nul), Buffer.from([0])]);
}
export function decodeError(payload: Buffer): RemoteErrorPayload {
  if (payload.length < 4) throw new ProtocolError('malformed', `ERROR payload has ${payload.length} bytes, expected at least 4`);
  const text = payload.subarray(4);
  const nul = text.indexOf(0);
  return { errno: payload.readUInt32LE(0), message: text.toString('utf8', 0, nul < 0 ? text.length : nul) };
}

const errnoNumbers = osConstants.errno as Record<string, number>;
const ENOENT = errnoNumbers.ENOENT!;

/** kerf's exit code for an ERROR frame: 127 when the command was not found (ENOENT), otherwise 126. */
export function errorExitCode(errno: number): number {
  return errno === ENOENT ? 127 : 126;
}

/** The errno name for a positive errno number, e.g. 2 → 'ENOENT' (undefined when unknown). */
export function errnoName(errno: number): string | undefined {
  return Object.keys(errnoNumbers).find((name) => errnoNumbers[name] === errno);
}
