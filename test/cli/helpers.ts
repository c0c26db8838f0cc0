// Running mkctl in tests: in this process (main() with captured streams, for coverage) or as a
// real process (dist/cli/mkctl.js, built by `npm test` before tap runs), against one simulated
// host in a temporary state directory.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CliIo } from '../../lib/cli/command';
import { main } from '../../lib/cli/mkctl';

export const MKCTL = path.join(__dirname, '..', '..', 'dist', 'cli', 'mkctl.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON (throws when it is not) */
  json<T = Record<string, unknown>>(): T;
}

function result(code: number, stdout: string, stderr: string): Run {
  return { code, stdout, stderr, json: <T>() => JSON.parse(stdout) as T };
}

/** A fresh simulated host: the environment that points mkctl at it. */
export function simulatedHost(): { env: Record<string, string>; dir: string; cleanup(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mkctl-'));
  return {
    dir,
    env: { MULTIKERNEL_BACKEND: 'simulated', MULTIKERNEL_SIM_DIR: path.join(dir, 'sim'), NO_COLOR: '1' },
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** main() in this process, with in-memory streams. */
export async function inProcess(args: string[], env: Record<string, string>, options: { tty?: boolean; signal?: AbortSignal } = {}): Promise<Run> {
  let out = '';
  let err = '';
  const io: CliIo = {
    stdout: { write: (s: string) => (out += s), isTTY: options.tty === true },
    stderr: { write: (s: string) => (err += s) },
    env: { ...env, HOME: os.tmpdir() },
    cwd: process.cwd(),
    signal: options.signal ?? new AbortController().signal,
  };
  const code = await main(args, io);
  return result(code, out, err);
}

/** The built mkctl as a process of its own. */
export function spawnMkctl(args: string[], env: Record<string, string>, options: { input?: string; killAfterMs?: number; signal?: NodeJS.Signals } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MKCTL, ...args], { env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    if (options.killAfterMs !== undefined) setTimeout(() => child.kill(options.signal ?? 'SIGINT'), options.killAfterMs);
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
    child.on('close', (code, signal) => resolve(result(code ?? 128 + (signal ? os.constants.signals[signal] : 0), out, err)));
  });
}
