/**
 * /dev/mktty in the simulated kernel, following drivers/tty/mktty.c (host side) and
 * kernel/multikernel/ipi.c (the IPI ring that carries console input), with a simulated console
 * in each instance: the boot log, a minimal line-based shell, and the panic message
 * (docs/kernel-interface.md, "Console, vsock and the exec agent").
 */
import { systemError } from '../../errors';
import { shellStatus } from '../../exec/protocol';
import type { DeviceHandle } from '../system';
import { KERNEL_RELEASE, KERNEL_VERSION, runWords, startProcess, tokenize } from './agent';
import type { SimInstanceIdentity, SimProcessIo } from './agent';
import type { SimChannelHost, SimStopCause } from './channels';

export const MKTTY_PATH = '/dev/mktty';
/** MKTTY_RX_BUF_SIZE: a ring of 16384 bytes that holds at most 16383. */
export const MKTTY_RX_BUFFER = 16384;
/** MKTTY_MAX_DATA = MK_MAX_DATA_SIZE (4096) - 16: input is sent in IPI messages of this size. */
export const MKTTY_MAX_DATA = 4080;
/** MK_IPI_RING_SIZE: a ring of 64 slots holds at most 63 unread messages. */
export const IPI_RING_SLOTS = 64;
const SELECT_MAX = 15; // sizeof(numbuf) - 1
const DEFAULT_READ_MAX = 64 * 1024;
const PROMPT = '/ # ';
/** what the simulated spawn panics with: init (pid 1) died of SIGSEGV */
const PANIC_REASON = 'Attempted to kill init! exitcode=0x0000000b';
const CONSOLE_ENV = ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'TERM=linux'];

/** kstrtoint(s, 10): optional sign, decimal digits, one optional trailing newline. */
export function kstrtoint(text: string): number {
  let i = text[0] === '-' || text[0] === '+' ? 1 : 0;
  const start = i;
  while (i < text.length && text[i]! >= '0' && text[i]! <= '9') i++;
  if (i === start) throw systemError('EINVAL', 'write', MKTTY_PATH);
  const value = Number(text.slice(0, i)); // at most 15 characters: exact in a double
  if (text[i] === '\n') i++;
  if (i !== text.length) throw systemError('EINVAL', 'write', MKTTY_PATH);
  if (value > 2147483647 || value < -2147483648) throw systemError('ERANGE', 'write', MKTTY_PATH);
  return value;
}

function timestamp(seconds: number): string {
  const micros = Math.round(seconds * 1e6);
  return `[${String(Math.floor(micros / 1e6)).padStart(5, ' ')}.${String(micros % 1e6).padStart(6, '0')}]`;
}

/** The console side of one instance: the spawn's tty with a shell on it. */
class InstanceConsole {
  /** bumped at every start, stop and hang: output of an older life is dropped */
  generation = 0;
  /** console input messages waiting in the instance's IPI ring (nobody drains it while it is not running) */
  ringPending = 0;
  bootedAt = 0;
  line = '';
  lastStatus = 0;
  queue: Promise<void> = Promise.resolve();
}

class MkttyConnection implements DeviceHandle {
  instanceId = -1;
  #rx: Buffer[] = [];
  #rxBytes = 0;
  #waiters = new Set<() => void>();
  #closed = false;
  readonly #mktty: SimMktty;

  constructor(mktty: SimMktty) {
    this.#mktty = mktty;
  }

  /** mktty_host_ipi_handler: copy what fits, drop the rest. */
  deliver(data: Buffer): void {
    const room = MKTTY_RX_BUFFER - 1 - this.#rxBytes;
    const taken = data.subarray(0, room);
    if (taken.length === 0) return;
    this.#rx.push(Buffer.from(taken));
    this.#rxBytes += taken.length;
    for (const wake of [...this.#waiters]) wake();
  }

  async write(data: Uint8Array): Promise<number> {
    const selected = this.instanceId >= 0;
    const fault = await this.#mktty.host.faults.hit('mktty.write', { path: MKTTY_PATH, syscall: 'write', ...(selected ? { id: this.instanceId } : {}) });
    if (this.#closed) throw systemError('EBADF', 'write', MKTTY_PATH);
    if (!selected) return this.#select(data);
    // halfway: the first half goes out, the write returns short.
    const count = fault === 'halfway' ? Math.ceil(data.length / 2) : data.length;
    let sent = 0;
    while (sent < count) {
      const chunk = Math.min(count - sent, MKTTY_MAX_DATA);
      try {
        await this.#mktty.sendInput(this.instanceId, Buffer.from(data.subarray(sent, sent + chunk)));
      } catch (e) {
        if (sent > 0) return sent;
        throw e;
      }
      sent += chunk;
    }
    return sent;
  }

  async #select(data: Uint8Array): Promise<number> {
    let text = Buffer.from(data.subarray(0, SELECT_MAX)).toString('latin1');
    const nul = text.indexOf('\0');
    if (nul >= 0) text = text.slice(0, nul);
    const id = kstrtoint(text);
    if (id < 1) throw systemError('EINVAL', 'write', MKTTY_PATH);
    if (!(await this.#mktty.host.instanceById(id))) throw systemError('ENODEV', 'write', MKTTY_PATH);
    this.instanceId = id;
    return data.length;
  }

  async read(options: { max?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    const { signal } = options;
    const max = options.max ?? DEFAULT_READ_MAX;
    await this.#mktty.host.faults.hit('mktty.read', { path: MKTTY_PATH, syscall: 'read', ...(this.instanceId >= 0 ? { id: this.instanceId } : {}) });
    if (this.instanceId < 0 && !this.#closed) throw systemError('ENOTCONN', 'read', MKTTY_PATH);
    while (this.#rxBytes === 0) {
      if (this.#closed) throw systemError('EBADF', 'read', MKTTY_PATH);
      if (signal?.aborted) throw signal.reason;
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          this.#waiters.delete(wake);
          signal?.removeEventListener('abort', wake);
          resolve();
        };
        this.#waiters.add(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
    const all = Buffer.concat(this.#rx);
    const out = all.subarray(0, max);
    const rest = all.subarray(out.length);
    this.#rx = rest.length > 0 ? [rest] : [];
    this.#rxBytes = rest.length;
    return Buffer.from(out);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#mktty.release(this);
    for (const wake of [...this.#waiters]) wake();
  }
}

export class SimMktty {
  readonly host: SimChannelHost;
  readonly #nextPid: (id: number) => number;
  /** newest open first, as mktty_host_open's list_add() keeps them */
  readonly #connections: MkttyConnection[] = [];
  readonly #consoles = new Map<number, InstanceConsole>();

  constructor(host: SimChannelHost, nextPid: (id: number) => number) {
    this.host = host;
    this.#nextPid = nextPid;
  }

  async open(): Promise<DeviceHandle> {
    await this.host.faults.hit('mktty.open', { path: MKTTY_PATH, syscall: 'open' });
    const connection = new MkttyConnection(this);
    this.#connections.unshift(connection);
    return connection;
  }

  release(connection: MkttyConnection): void {
    this.#connections.splice(this.#connections.indexOf(connection), 1);
  }

  #console(id: number): InstanceConsole {
    let console = this.#consoles.get(id);
    if (!console) this.#consoles.set(id, (console = new InstanceConsole()));
    return console;
  }

  /** Console output of instance `id`: to the newest open connection that selected it, else lost. */
  emit(id: number, text: string): void {
    this.#connections.find((c) => c.instanceId === id)?.deliver(Buffer.from(text, 'utf8'));
  }

  /** One IPI message of console input for instance `id` (multikernel_send_ipi_data's errors). */
  async sendInput(id: number, data: Buffer): Promise<void> {
    const info = await this.host.instanceById(id);
    if (!info) throw systemError('EINVAL', 'write', MKTTY_PATH);
    if (info.status === 'ready') throw systemError('ENODEV', 'write', MKTTY_PATH);
    const console = this.#console(id);
    if (info.status !== 'active' || info.hung) {
      if (console.ringPending >= IPI_RING_SLOTS - 1) throw systemError('ENOSPC', 'write', MKTTY_PATH);
      console.ringPending++;
      return;
    }
    this.#input(id, info, console, data.toString('latin1'));
  }

  /** The spawn's tty: echo (ECHO, ICRNL, ONLCR) and hand each complete line to the shell. */
  #input(id: number, instance: SimInstanceIdentity, console: InstanceConsole, text: string): void {
    for (const ch of text.replaceAll('\r', '\n')) {
      if (ch !== '\n') {
        console.line += ch;
        this.emit(id, ch);
        continue;
      }
      this.emit(id, '\r\n');
      const line = console.line;
      console.line = '';
      const generation = console.generation;
      console.queue = console.queue.then(() => this.#runLine(id, instance, console, generation, line));
    }
  }

  async #runLine(id: number, instance: SimInstanceIdentity, console: InstanceConsole, generation: number, line: string): Promise<void> {
    const alive = (): boolean => console.generation === generation;
    if (!alive()) return;
    const pid = this.#nextPid(id);
    const words = tokenize(line, console.lastStatus, pid);
    if (words.length > 0) {
      const process = startProcess((killed) => {
        const io: SimProcessIo = {
          instance,
          pid,
          env: CONSOLE_ENV,
          cwd: '/',
          uid: 0,
          gid: 0,
          groups: [],
          tty: { rows: 24, cols: 80 },
          killed,
          write: async (_fd, data) => {
            if (alive()) this.emit(id, Buffer.from(data).toString('utf8').replaceAll('\n', '\r\n'));
          },
          // The console shell runs commands with nothing on stdin.
          async readStdin() {
            return null;
          },
        };
        return runWords(io, words);
      });
      const status = await process.status;
      console.lastStatus = shellStatus(status);
    }
    if (alive()) this.emit(id, PROMPT);
  }

  instanceStarted(id: number): void {
    const console = this.#console(id);
    const generation = ++console.generation;
    // Starting resets the instance's IPI rings: input queued while it was down is gone.
    console.ringPending = 0;
    console.line = '';
    console.lastStatus = 0;
    console.bootedAt = performance.now();
    void this.host.instanceById(id).then((info) => {
      if (!info || console.generation !== generation) return;
      const log: [number, string][] = [
        [0, `Linux version ${KERNEL_RELEASE} (multikernel simulator) ${KERNEL_VERSION}`],
        [0, `Command line: ${info.cmdline}`],
        [0, `multikernel: instance ${info.id} (${info.name}) booting`],
        [0, `mktty: early console for instance ${info.id}`],
        [0.215, `mktty: initializing spawn (instance ${info.id})`],
        [0.2151, 'mktty: spawn ready (/dev/mktty0)'],
        [0.23, 'Multikernel vsock transport registered'],
        [0.31, 'Run /init as init process'],
        [0.312, 'kerf-init: starting'],
      ];
      this.emit(id, log.map(([t, text]) => `${timestamp(t)} ${text}\n`).join('') + PROMPT);
    });
  }

  /**
   * The spawn kernel goes down: what it prints on the way (at the default console log level),
   * then nothing. A graceful halt runs mk_shutdown_work_fn ("Shutdown requested by instance %d",
   * the sender being the host, 0); a poweroff goes through kernel_power_off ("reboot: Power
   * down"); a panic prints its reason and, with panic_timeout -1 (arch/x86/multikernel/spawn.c
   * mk_spawn_reboot_init), restarts before the "---[ end Kernel panic" line: the restart is the
   * halt to the pool. All three end in mk_notify_down_and_park ("Multikernel instance %d shutting
   * down"). A forced halt is an NMI that parks the CPUs without a word.
   */
  instanceStopped(id: number, how: SimStopCause): void {
    const console = this.#console(id);
    const lines = {
      halt: ['Shutdown requested by instance 0'],
      poweroff: ['reboot: Power down'],
      panic: [`Kernel panic - not syncing: ${PANIC_REASON}`],
      forced: [],
    }[how];
    if (how !== 'forced') {
      const at = timestamp((performance.now() - console.bootedAt) / 1000);
      this.emit(id, [...lines, `Multikernel instance ${id} shutting down`].map((line) => `${at} ${line}\n`).join(''));
    }
    console.generation++;
  }

  /** The spawn kernel hangs: it prints nothing more and reads no input. */
  instanceHung(id: number): void {
    this.#console(id).generation++;
  }

  async close(): Promise<void> {
    for (const connection of [...this.#connections]) await connection.close();
    for (const console of this.#consoles.values()) console.generation++;
  }
}
