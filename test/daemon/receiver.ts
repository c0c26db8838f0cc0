// A real NOTIFY_SOCKET for the daemon tests: Node has no AF_UNIX datagram sockets, so a small
// python3 script binds one and prints each datagram as a JSON line with its CLOCK_MONOTONIC
// arrival time (python's time.monotonic() is CLOCK_MONOTONIC on Linux). Also: the built mkctl
// run as a daemon process, its stderr kept line by line.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { placeholderImage } from '../../lib/image';
import { MKCTL } from '../cli/helpers';

export const PYTHON = spawnSync('python3', ['-c', 'import socket'], { encoding: 'utf8' }).status === 0;

const RECEIVER = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps({"t": time.monotonic(), "state": data.decode()}), flush=True)
`;

export interface Datagram {
  /** CLOCK_MONOTONIC seconds when it arrived */
  t: number;
  state: string;
}

/** Polls `check` until it holds. */
async function until(check: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export class NotifyReceiver {
  readonly path: string;
  readonly datagrams: Datagram[] = [];
  readonly #child: ChildProcess;

  private constructor(socketPath: string, child: ChildProcess) {
    this.path = socketPath;
    this.#child = child;
  }

  static async start(dir: string): Promise<NotifyReceiver> {
    const socketPath = path.join(dir, 'notify.sock');
    const child = spawn('python3', ['-c', RECEIVER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    const r = new NotifyReceiver(socketPath, child);
    let buffered = '';
    let bound = false;
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      buffered += s;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, nl)) as Datagram & { bound?: boolean };
        buffered = buffered.slice(nl + 1);
        if (line.bound) bound = true;
        else r.datagrams.push(line);
      }
    });
    await until(() => bound, 10_000, () => 'the python receiver to bind');
    return r;
  }

  /** The states received, in order. */
  get states(): string[] {
    return this.datagrams.map((d) => d.state);
  }

  /** Waits for a datagram matching `re` at index >= from; resolves with its index. */
  async waitFor(re: RegExp, from = 0, ms = 30_000): Promise<number> {
    let found = -1;
    await until(
      () => (found = this.datagrams.findIndex((d, i) => i >= from && re.test(d.state))) >= 0,
      ms,
      () => `a datagram ${re}; got ${JSON.stringify(this.states)}`,
    );
    return found;
  }

  close(): void {
    this.#child.kill();
  }
}

/** A temporary directory with a placeholder kernel, a spec, and the simulated host's state directory. */
export function workspace(spec: string): { dir: string; specPath: string; simDir: string; cleanup(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-daemon-proc-'));
  fs.writeFileSync(path.join(dir, 'vmlinux'), placeholderImage());
  const specPath = path.join(dir, 'host.yaml');
  fs.writeFileSync(specPath, spec);
  return { dir, specPath, simDir: path.join(dir, 'sim'), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export interface DaemonProcess {
  child: ChildProcess;
  /** stderr lines so far */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitLine(re: RegExp, ms?: number): Promise<string>;
}

/** `node dist/cli/mkctl.js daemon ...` on the simulated host of `simDir`. */
export function spawnDaemon(args: string[], env: Record<string, string>): DaemonProcess {
  const child = spawn(process.execPath, [MKCTL, 'daemon', ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), MULTIKERNEL_BACKEND: 'simulated', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines: string[] = [];
  let buffered = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    buffered += s;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    lines.push(...parts);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    lines,
    exited,
    async waitLine(re, ms = 15_000) {
      await until(() => lines.some((l) => re.test(l)), ms, () => `a log line ${re}; got:\n${lines.join('\n')}`);
      return lines.find((l) => re.test(l))!;
    },
  };
}
