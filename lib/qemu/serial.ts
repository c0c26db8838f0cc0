/**
 * Follows the guest's serial console: splits it into lines, recognises the /init markers and
 * the kernel's first line, and turns them into boot phases.
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

export type SerialEvent =
  | { kind: 'phase'; phase: QemuPhase }
  | { kind: 'exit'; code: number }
  | { kind: 'fail'; reason: string }
  | { kind: 'warn'; message: string };

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
    return [...this.tail, ...(this.partial === '' ? [] : [this.partial])].join('\n');
  }

  push(text: string): SerialEvent[] {
    const events: SerialEvent[] = [];
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!;
    for (const raw of lines) this.line(raw.replace(/\r$/, ''), events);
    return events;
  }

  private line(line: string, events: SerialEvent[]): void {
    this.tail.push(line);
    if (this.tail.length > this.tailLines) this.tail.shift();
    // SeaBIOS's last words before jumping into the kernel, or the kernel's own log (without `quiet`);
    // on arm64 with `quiet` the first sign is /init's marker
    if (/Booting from ROM|^\[\s*\d+\.\d+\] |Linux version /.test(line)) this.advance('kernel', events);
    const at = line.indexOf(MARKER);
    if (at < 0) return;
    const [word = '', ...rest] = line.slice(at + MARKER.length).trim().split(/\s+/);
    const arg = rest.join(' ');
    switch (word) {
      case 'init':
        this.advance('init', events);
        break;
      case 'run':
        this.advance('command', events);
        break;
      case 'exit': {
        const code = Number(arg);
        if (Number.isInteger(code) && code >= 0 && code <= 255) {
          events.push({ kind: 'exit', code });
          this.advance('done', events);
        }
        break;
      }
      case 'fail':
        events.push({ kind: 'fail', reason: arg });
        break;
      case 'warn':
        events.push({ kind: 'warn', message: arg });
        break;
    }
  }

  private advance(to: QemuPhase, events: SerialEvent[]): void {
    const order: QemuPhase[] = ['starting', 'kernel', 'init', 'command', 'done'];
    if (order.indexOf(to) <= order.indexOf(this.phase)) return;
    this.phase = to;
    events.push({ kind: 'phase', phase: to });
  }
}
