/**
 * The simulated userspace of a spawned instance: a handful of deterministic commands, a minimal
 * shell, and the kerf-init exec agent that serves the kerf exec protocol on vsock port 1023
 * (kerf `src/init/session.c`, `src/init/proto.h`; docs/kernel-interface.md, "Console, vsock and the exec agent").
 */
import { constants as osConstants } from 'node:os';
import { posix } from 'node:path';
import type { Duplex } from 'node:stream';
import { getSystemErrorMap } from 'node:util';
import type { SystemError } from '../../errors';
import {
  CLIENT_PORTS,
  FrameDecoder,
  FrameType,
  MAX_PAYLOAD,
  OPEN_FLAG_STDIN,
  OPEN_FLAG_TTY,
  OPEN_FLAG_USER,
  STDIN_WINDOW,
  decodeOpen,
  decodeResize,
  decodeSignal,
  encodeError,
  encodeExit,
  encodeFrame,
  encodeStarted,
  encodeStdinAck,
  ProtocolError,
} from '../../exec/protocol';
import type { ExitStatus, Frame, OpenRequest, WindowSize } from '../../exec/protocol';
import type { SimInstanceInfo } from './channels';
import type { FaultInjector } from './faults';

export const KERNEL_RELEASE = '7.0.0-mk2';
export const KERNEL_VERSION = '#1 SMP PREEMPT_DYNAMIC';
/** uname -m for the architectures the package supports (package.json "cpu") */
const MACHINE = ({ arm64: 'aarch64', x64: 'x86_64' } as Record<string, string>)[process.arch];
/** execvp's search path when the environment has no PATH (glibc). */
const EXECVP_DEFAULT_PATH = '/bin:/usr/bin';
/** The highest signal number, SIGRTMAX (Linux _NSIG - 1): kill() refuses larger ones with EINVAL. */
const MAX_SIGNAL = 64;
/** What a command's stdin pipe holds unread before a write into it would wait: Linux's default pipe size. */
const PIPE_CAPACITY = 65536;

const errnoNumbers = osConstants.errno as Record<string, number>;
const signals = osConstants.signals as Record<string, number>;
/** Signals whose default action does not terminate (ignore; stop signals are not simulated). */
const NON_TERMINATING = new Set([0, signals.SIGCHLD, signals.SIGCONT, signals.SIGURG, signals.SIGWINCH, signals.SIGSTOP, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU]);

export interface SimInstanceIdentity {
  id: number;
  name: string;
  cmdline: string;
}

/** What a simulated process sees of its surroundings. */
export interface SimProcessIo {
  instance: SimInstanceIdentity;
  pid: number;
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  groups: number[];
  /** the pty size, when the process runs on a pty */
  tty: WindowSize | undefined;
  /** resolves once the bytes are on their way (back-pressure) */
  write(fd: 1 | 2, data: string | Uint8Array): Promise<void>;
  /** the next stdin bytes, or null at end of file */
  readStdin(): Promise<Buffer | null>;
  /** aborted when the process is killed */
  killed: AbortSignal;
}

type Command = (io: SimProcessIo, args: string[]) => Promise<number>;

const DIRECTORIES = new Set(['/', '/bin', '/dev', '/etc', '/home', '/proc', '/root', '/sys', '/tmp', '/usr', '/usr/bin']);

function files(instance: SimInstanceIdentity): Map<string, string> {
  return new Map([
    ['/etc/hostname', `${instance.name}\n`],
    ['/proc/cmdline', `${instance.cmdline}\n`],
    ['/proc/version', `Linux version ${KERNEL_RELEASE} (multikernel simulator) ${KERNEL_VERSION}\n`],
  ]);
}

function resolvePath(cwd: string, path: string): string {
  return posix.resolve(cwd, path);
}

function envValue(env: string[], key: string): string | undefined {
  const entry = env.find((e) => e.startsWith(`${key}=`));
  return entry?.slice(key.length + 1);
}

function sleepFor(ms: number, killed: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      killed.removeEventListener('abort', onKill);
      resolve();
    }, ms);
    const onKill = (): void => {
      clearTimeout(timer);
      reject(killed.reason);
    };
    killed.addEventListener('abort', onKill, { once: true });
  });
}

function idName(n: number): string {
  return n === 0 ? '0(root)' : String(n);
}

const COMMANDS: Record<string, Command> = {
  async true() {
    return 0;
  },
  async false() {
    return 1;
  },
  async echo(io, args) {
    const noNewline = args[0] === '-n';
    const words = noNewline ? args.slice(1) : args;
    await io.write(1, words.join(' ') + (noNewline ? '' : '\n'));
    return 0;
  },
  async cat(io, args) {
    let status = 0;
    for (const arg of args.length === 0 ? ['-'] : args) {
      if (arg === '-') {
        for (let chunk = await io.readStdin(); chunk !== null; chunk = await io.readStdin()) await io.write(1, chunk);
        continue;
      }
      const path = resolvePath(io.cwd, arg);
      const content = files(io.instance).get(path);
      if (content !== undefined) {
        await io.write(1, content);
      } else {
        await io.write(2, `cat: ${arg}: ${DIRECTORIES.has(path) ? 'Is a directory' : 'No such file or directory'}\n`);
        status = 1;
      }
    }
    return status;
  },
  async uname(io, args) {
    const fields = { s: 'Linux', n: io.instance.name, r: KERNEL_RELEASE, v: KERNEL_VERSION, m: MACHINE };
    if (args.length === 0) args = ['-s'];
    const out: string[] = [];
    for (const arg of args) {
      if (arg === '-a') out.push(fields.s, fields.n, fields.r, fields.v, fields.m, 'GNU/Linux');
      else if (/^-[snrvm]$/.test(arg)) out.push(fields[arg[1] as keyof typeof fields]);
      else {
        await io.write(2, `uname: invalid option '${arg}'\n`);
        return 1;
      }
    }
    await io.write(1, `${out.join(' ')}\n`);
    return 0;
  },
  async sleep(io, args) {
    const seconds = Number(args[0]);
    if (args.length !== 1 || !Number.isFinite(seconds) || seconds < 0) {
      await io.write(2, args.length === 0 ? 'sleep: missing operand\n' : `sleep: invalid time interval '${args.join(' ')}'\n`);
      return 1;
    }
    await sleepFor(seconds * 1000, io.killed);
    return 0;
  },
  async pwd(io) {
    await io.write(1, `${io.cwd}\n`);
    return 0;
  },
  async env(io) {
    await io.write(1, io.env.map((e) => `${e}\n`).join(''));
    return 0;
  },
  async id(io) {
    const groups = [io.gid, ...io.groups.filter((g) => g !== io.gid)];
    await io.write(1, `uid=${idName(io.uid)} gid=${idName(io.gid)} groups=${groups.map(idName).join(',')}\n`);
    return 0;
  },
  async stty(io, args) {
    if (args.join(' ') !== 'size') {
      await io.write(2, `stty: invalid argument '${args.join(' ')}'\n`);
      return 1;
    }
    if (!io.tty) {
      await io.write(2, "stty: 'standard input': Inappropriate ioctl for device\n");
      return 1;
    }
    await io.write(1, `${io.tty.rows} ${io.tty.cols}\n`);
    return 0;
  },
  async sh(io, args) {
    if (args[0] === '-c') {
      if (args.length < 2) {
        await io.write(2, 'sh: -c requires an argument\n');
        return 2;
      }
      return runScript(io, args[1]!.split(/[;\n]/));
    }
    // Without -c the shell reads its commands from stdin, one per line.
    let text = '';
    for (let chunk = await io.readStdin(); chunk !== null; chunk = await io.readStdin()) text += chunk.toString('utf8');
    return runScript(io, text.split(/[;\n]/));
  },
};

/** Splits a command line into words: whitespace separated, '…' and "…" quoting, $? and $$ expanded. */
export function tokenize(line: string, lastStatus: number, pid: number): string[] {
  const words: string[] = [];
  const re = /'([^']*)'|"([^"]*)"|(\S+?)(?=\s|'|"|$)|(\s+)/g;
  let current: string | undefined;
  for (const m of line.matchAll(re)) {
    if (m[4] !== undefined) {
      if (current !== undefined) words.push(current);
      current = undefined;
      continue;
    }
    const expand = m[1] === undefined;
    const piece = m[1] ?? m[2] ?? m[3]!;
    current = (current ?? '') + (expand ? piece.replaceAll('$?', String(lastStatus)).replaceAll('$$', String(pid)) : piece);
  }
  if (current !== undefined) words.push(current);
  return words;
}

/** Where execvp would find `name`: a simulated binary, or the errno name execvp fails with. */
export function findExecutable(name: string, env: string[], cwd: string): { command: Command } | { errno: 'ENOENT' | 'EACCES' } {
  const candidates = name.includes('/')
    ? [resolvePath(cwd, name)]
    : (envValue(env, 'PATH') ?? EXECVP_DEFAULT_PATH).split(':').map((dir) => resolvePath(cwd, `${dir || '.'}/${name}`));
  let errno: 'ENOENT' | 'EACCES' = 'ENOENT';
  for (const path of candidates) {
    const dir = posix.dirname(path);
    const base = posix.basename(path);
    if ((dir === '/bin' || dir === '/usr/bin') && Object.hasOwn(COMMANDS, base)) return { command: COMMANDS[base]! };
    if (DIRECTORIES.has(path)) errno = 'EACCES';
  }
  return { errno };
}

/** Runs `;`/newline separated simple commands; `exit [N]` is the only builtin. */
async function runScript(io: SimProcessIo, lines: string[]): Promise<number> {
  let status = 0;
  for (const line of lines) {
    const words = tokenize(line, status, io.pid);
    if (words.length === 0) continue;
    if (words[0] === 'exit') return words[1] === undefined ? status : Number.parseInt(words[1], 10) & 0xff;
    status = await runWords(io, words);
  }
  return status;
}

/** One simple command as a shell runs it: 127 when not found, 126 when not executable. */
export async function runWords(io: SimProcessIo, words: string[]): Promise<number> {
  const found = findExecutable(words[0]!, io.env, io.cwd);
  if ('errno' in found) {
    await io.write(2, `sh: ${words[0]}: ${found.errno === 'ENOENT' ? 'not found' : 'Permission denied'}\n`);
    return found.errno === 'ENOENT' ? 127 : 126;
  }
  return found.command(io, words.slice(1));
}

export interface SimProcess {
  readonly status: Promise<ExitStatus>;
  /**
   * kill(-pid, signo): terminates unless the signal's default action does not; a number above
   * SIGRTMAX does nothing (kill fails with EINVAL, and session.c does not look at the result)
   */
  kill(signo: number): void;
}

/** Starts `main` as a process that a signal can terminate. */
export function startProcess(main: (killed: AbortSignal) => Promise<number>): SimProcess {
  const controller = new AbortController();
  let onKilled!: (status: ExitStatus) => void;
  const killedStatus = new Promise<ExitStatus>((resolve) => (onKilled = resolve));
  const status = Promise.race([
    // A command only rejects when it was killed; the kill then decides the status.
    main(controller.signal).then(
      (code): ExitStatus => ({ signaled: false, code: code & 0xff }),
      () => killedStatus,
    ),
    killedStatus,
  ]);
  return {
    status,
    kill(signo: number) {
      if (signo > MAX_SIGNAL || NON_TERMINATING.has(signo) || controller.signal.aborted) return;
      controller.abort(new Error(`killed by signal ${signo}`));
      onKilled({ signaled: true, code: signo });
    },
  };
}

function strerror(code: string): string {
  const text = getSystemErrorMap().get(-errnoNumbers[code]!)![1];
  return text[0]!.toUpperCase() + text.slice(1);
}

export interface AgentContext {
  instance: SimInstanceInfo;
  faults: FaultInjector;
  nextPid(): number;
}

/** A stream whose peer address the agent can check, as accept() reports it. */
export type AgentStream = Duplex & { readonly remotePort: number };

/**
 * Serves one kerf exec connection on the instance's side, like kerf-init's session.c: the first
 * frame must be OPEN; then STARTED, stdio relaying, EXIT, close. Protocol violations hang up.
 * Only a client bound to one of the ports kerf's client binds (512..1023) is served; others are
 * closed without a frame. That rule is the simulator's: kerf's client says kerf-init trusts only
 * reserved ports, but no check of the peer's port was found in kerf-init's sources
 * (docs/kernel-interface.md, "Trusted source ports"), so the simulator takes the strictest reading.
 */
export function serveExecSession(stream: AgentStream, context: AgentContext): void {
  if (stream.remotePort > CLIENT_PORTS.highest || stream.remotePort < CLIENT_PORTS.lowest) {
    stream.destroy();
    return;
  }
  const decoder = new FrameDecoder();
  const { instance } = context;
  let state: 'open' | 'starting' | 'running' | 'done' = 'open';
  const early: Frame[] = [];
  let process: SimProcess | undefined;
  let tty: WindowSize | undefined;
  let stdinOpen = false;
  let stdinEof = false;
  // session.c's in_buf: stdin received, not yet written into the command's pipe, not acknowledged
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  // the command's stdin pipe: written and acknowledged, not yet read by the command
  let pipe: Buffer[] = [];
  let pipeBytes = 0;
  let stdinWaiter: (() => void) | undefined;

  const finished = (): boolean => state === 'done';
  const hangup = (): void => {
    if (state === 'done') return;
    state = 'done';
    process?.kill(signals.SIGHUP!);
    stream.destroy();
  };
  const send = async (type: number, payload?: Uint8Array): Promise<void> => {
    if (stream.write(encodeFrame(type, payload))) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        stream.off('drain', done);
        stream.off('close', done);
        resolve();
      };
      stream.on('drain', done);
      stream.on('close', done);
    });
  };
  const fail = (code: string, message: string): void => {
    state = 'done';
    void send(FrameType.ERROR, encodeError({ errno: errnoNumbers[code]!, message }));
    stream.end(() => stream.destroy());
  };
  const wakeStdin = (): void => {
    const waiter = stdinWaiter;
    stdinWaiter = undefined;
    waiter?.();
  };
  // flush_stdin: write into the pipe what it has room for, and acknowledge what was written
  const flushStdin = (): void => {
    const n = Math.min(pendingBytes, PIPE_CAPACITY - pipeBytes);
    if (n === 0) return;
    const all = Buffer.concat(pending);
    pipe.push(all.subarray(0, n));
    pipeBytes += n;
    pending = n < all.length ? [all.subarray(n)] : [];
    pendingBytes -= n;
    void send(FrameType.STDIN_ACK, encodeStdinAck(n));
    wakeStdin();
  };

  const handle = (frame: Frame): void => {
    switch (frame.type) {
      case FrameType.STDIN:
        if (pendingBytes + frame.payload.length > STDIN_WINDOW) return hangup();
        if (!stdinOpen || stdinEof) {
          void send(FrameType.STDIN_ACK, encodeStdinAck(frame.payload.length));
          return;
        }
        // Written into the pipe once the frames that came with it are handled (relay's next poll).
        pending.push(frame.payload);
        pendingBytes += frame.payload.length;
        return;
      case FrameType.STDIN_EOF:
        stdinEof = true;
        return wakeStdin();
      case FrameType.RESIZE: {
        const size = decodeResize(frame.payload);
        if (tty) Object.assign(tty, size);
        return;
      }
      case FrameType.SIGNAL:
        return process!.kill(decodeSignal(frame.payload));
      default:
        return hangup();
    }
  };

  const start = async (open: Frame): Promise<void> => {
    let request: OpenRequest;
    try {
      request = decodeOpen(open.payload);
    } catch (e) {
      const version = (e as ProtocolError).reason === 'version';
      return fail(version ? 'EPROTO' : 'EINVAL', version ? 'unsupported protocol version' : 'malformed OPEN request');
    }
    const argv0 = request.argv[0]!;
    let fault: 'halfway' | undefined;
    try {
      fault = await context.faults.hit('agent.exec', { id: instance.id, path: argv0, syscall: 'execve' });
    } catch (e) {
      // The fault injector throws system errors only.
      const code = (e as SystemError).code;
      return fail(code, `exec ${argv0}: ${strerror(code)}`);
    }
    if (finished()) return;
    const cwd = resolvePath('/', request.cwd);
    if (!DIRECTORIES.has(cwd)) return fail('ENOENT', `chdir ${request.cwd}: ${strerror('ENOENT')}`);
    const found = findExecutable(argv0, request.env, cwd);
    if ('errno' in found) return fail(found.errno, `exec ${argv0}: ${strerror(found.errno)}`);

    const pid = context.nextPid();
    // Without the USER flag the command keeps kerf-init's identity: root, no supplementary groups.
    const user = (request.flags & OPEN_FLAG_USER) !== 0;
    tty = (request.flags & OPEN_FLAG_TTY) !== 0 ? { rows: request.rows, cols: request.cols } : undefined;
    stdinOpen = (request.flags & OPEN_FLAG_STDIN) !== 0;
    void send(FrameType.STARTED, encodeStarted(pid));
    // The agent dies right after starting the command: the host sees the connection go away.
    if (fault === 'halfway') return hangup();

    process = startProcess((killed) => {
      killed.addEventListener('abort', wakeStdin, { once: true });
      const io: SimProcessIo = {
        instance,
        pid,
        env: request.env,
        cwd,
        uid: user ? request.uid : 0,
        gid: user ? request.gid : 0,
        groups: user ? request.groups : [],
        tty,
        killed,
        async write(fd, data) {
          let bytes = Buffer.from(data);
          // A pty merges stderr into its one output and translates \n to \r\n (ONLCR).
          if (tty) bytes = Buffer.from(bytes.toString('latin1').replaceAll('\n', '\r\n'), 'latin1');
          for (let offset = 0; offset < bytes.length; offset += MAX_PAYLOAD) {
            await send(fd === 1 || tty ? FrameType.STDOUT : FrameType.STDERR, bytes.subarray(offset, offset + MAX_PAYLOAD));
          }
        },
        async readStdin() {
          while (stdinOpen && pipeBytes === 0 && !(stdinEof && pendingBytes === 0) && !killed.aborted) await new Promise<void>((wake) => (stdinWaiter = wake));
          if (killed.aborted) throw killed.reason;
          if (pipeBytes === 0) return null;
          const chunk = Buffer.concat(pipe);
          pipe = [];
          pipeBytes = 0;
          // Room in the pipe again: what waits in the agent goes in, and its credit goes back.
          flushStdin();
          return chunk;
        },
      };
      return found.command(io, request.argv.slice(1));
    });
    state = 'running';
    try {
      for (const frame of early.splice(0)) handle(frame);
    } catch {
      hangup();
    }
    if (!finished()) flushStdin();
    const status = await process.status;
    if (finished()) return;
    state = 'done';
    await send(FrameType.EXIT, encodeExit(status));
    stream.end(() => stream.destroy());
  };

  stream.on('data', (chunk: Buffer) => {
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch {
      return hangup();
    }
    for (const frame of frames) {
      if (state === 'done') return;
      if (state === 'open') {
        // kerf-init reads exactly one OPEN first; anything else (or an oversize one) ends the session.
        if (frame.type !== FrameType.OPEN) return hangup();
        state = 'starting';
        void start(frame);
      } else if (state === 'starting') {
        early.push(frame);
      } else {
        try {
          handle(frame);
        } catch {
          hangup();
        }
      }
    }
    // read_open decides on the header alone: another type ends the session before its payload.
    const pendingType = decoder.pendingType;
    if (state === 'open' && pendingType !== undefined && pendingType !== FrameType.OPEN) hangup();
    if (state === 'running') flushStdin();
  });
  stream.on('end', hangup);
  stream.on('error', hangup);
  // The connection went away under the session (the spawn kernel stopped): the command dies too.
  stream.on('close', hangup);
}
