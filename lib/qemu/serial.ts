/**
 * Follows the guest's serial console: splits it into lines, recognises the /init markers and
 * the kernel's first line, and turns them into boot phases. The console is shared with the
 * command, so nothing on it decides the result: that comes from the status device (parseStatus).
 */
import { MARKER } from './initramfs';

export type QemuPhase = 'starting' | 'kernel' | 'init' | 'command' | 'done';

export const PHASE_LABELS: Readonly<Record<QemuPhase, string>> = {
  starting: 'starting qemu',
  kernel: 'kernel booting',
  init: 'init reached',
  command: 'command running',
  done: 'done',
};

export type SerialEvent = { kind: 'phase'; phase: QemuPhase } | { kind: 'warn'; message: string };

/** Console text without a newline for this long is taken as a line: memory stays bounded. */
const MAX_LINE = 64 * 1024;
/** Lines kept for error messages are cut to this. */
const MAX_TAIL_LINE = 1024;

function clip(line: string): string {
  return line.length <= MAX_TAIL_LINE ? line : `${line.slice(0, MAX_TAIL_LINE)}… (${line.length} characters)`;
}

/** Incremental console parser; `push` returns the events the new text completes. */
export class SerialParser {
  private partial = '';
  private phase: QemuPhase = 'starting';
  private readonly tail: string[] = [];

  constructor(private readonly tailLines = 40) {}

  get currentPhase(): QemuPhase {
    return this.phase;
  }

  /** The last lines seen (for error messages). */
  lastLines(): string {
    return [...this.tail, ...(this.partial === '' ? [] : [clip(this.partial)])].join('\n');
  }

  push(text: string): SerialEvent[] {
    const events: SerialEvent[] = [];
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!;
    for (const raw of lines) this.line(raw.replace(/\r$/, ''), events);
    if (this.partial.length > MAX_LINE) {
      this.line(this.partial, events);
      this.partial = '';
    }
    return events;
  }

  private line(line: string, events: SerialEvent[]): void {
    this.tail.push(clip(line));
    if (this.tail.length > this.tailLines) this.tail.shift();
    // SeaBIOS's last words before jumping into the kernel, or the kernel's own log (without `quiet`);
    // on arm64 with `quiet` the first sign is /init's marker
    if (/Booting from ROM|^\[\s*\d+\.\d+\] |Linux version /.test(line)) this.advance('kernel', events);
    const at = line.indexOf(MARKER);
    if (at < 0) return;
    const [word = '', ...rest] = line.slice(at + MARKER.length).trim().split(/\s+/);
    switch (word) {
      case 'init':
        this.advance('init', events);
        break;
      case 'run':
        this.advance('command', events);
        break;
      case 'warn':
        events.push({ kind: 'warn', message: rest.join(' ') });
        break;
    }
  }

  /** `done` is not on the console: the host notes it when the status device has spoken. */
  private advance(to: QemuPhase, events: SerialEvent[]): void {
    const order: QemuPhase[] = ['starting', 'kernel', 'init', 'command', 'done'];
    if (order.indexOf(to) <= order.indexOf(this.phase)) return;
    this.phase = to;
    events.push({ kind: 'phase', phase: to });
  }
}

export interface GuestStatus {
  /** the command's exit status, from the last `exit N` line */
  exitCode?: number;
  /** why /init gave up before the command ran, from the first `fail REASON` line */
  failure?: string;
}

/** Reads what /init wrote to its status device: `fail REASON` and `exit N` lines (CRLF or LF). */
export function parseStatus(text: string): GuestStatus {
  const status: GuestStatus = {};
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const exit = /^exit (\d{1,3})$/.exec(line);
    if (exit !== null && Number(exit[1]) <= 255) status.exitCode = Number(exit[1]);
    else if (line.startsWith('fail ')) status.failure ??= line.slice('fail '.length);
  }
  return status;
}
