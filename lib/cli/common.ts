/**
 * What every mkctl command that talks to a host shares: the backend (this host's kernel, or the
 * built-in simulated one in a state directory shared by successive mkctl processes), the options
 * that select it, opening the Host, the `--json` document shape, colours, and the parsers for
 * sizes and CPU lists. Modules are imported when a command runs, so `--help` and commands that
 * need no host load none of them.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import type { Host } from '../host';
import type { SimulatedSystem, SimulatedSystemOptions } from '../system/simulated';
import type { System } from '../system/system';
import { parseCpuIds } from '../units';
import { type CliInput, type CliIo, type CliOutput, UsageError } from './command';

/** The version of every `--json` document mkctl prints; it changes only when a field changes meaning or goes away. */
export const JSON_VERSION = 1;

/** Options every host command takes (merge into its parseArgs options). */
export const HOST_OPTIONS = {
  json: { type: 'boolean' },
  simulate: { type: 'boolean' },
  'state-dir': { type: 'string' },
  lock: { type: 'string' },
} as const;

/** The help lines of HOST_OPTIONS. */
export const HOST_OPTIONS_HELP = `common options:
  --json               print one JSON document ({"version": ${JSON_VERSION}, ...}); errors too
  --simulate           act on the built-in simulated host (also MULTIKERNEL_BACKEND=simulated)
  --state-dir DIR      the simulated host's state (default MULTIKERNEL_SIM_DIR, else
                       $XDG_STATE_HOME/multikernel/simulated, else ~/.local/state/...)
  --lock PATH          the overlay writers' lock (default /run/multikernel.lock; simulated: in
                       the simulated host)
  -h, --help           this text
`;

export interface HostValues {
  json?: boolean;
  simulate?: boolean;
  'state-dir'?: string;
  lock?: string;
}

export interface Backend {
  kind: 'linux' | 'simulated';
  /** the simulated host's state directory */
  stateDir?: string;
}

/** Which kernel the command acts on, from the options and the environment. */
export function backend(values: HostValues, io: CliIo): Backend {
  const fromEnv = io.env.MULTIKERNEL_BACKEND;
  if (fromEnv !== undefined && fromEnv !== '' && fromEnv !== 'simulated' && fromEnv !== 'linux') {
    throw new UsageError(`MULTIKERNEL_BACKEND must be "simulated" or "linux", got ${JSON.stringify(fromEnv)}`);
  }
  const simulated = values.simulate === true || fromEnv === 'simulated' || values['state-dir'] !== undefined;
  if (!simulated) return { kind: 'linux' };
  const home = io.env.HOME ?? os.homedir();
  const stateHome = io.env.XDG_STATE_HOME || path.join(home, '.local', 'state');
  const stateDir = values['state-dir'] ?? (io.env.MULTIKERNEL_SIM_DIR || path.join(stateHome, 'multikernel', 'simulated'));
  return { kind: 'simulated', stateDir: path.resolve(io.cwd, stateDir) };
}

export interface HostContext {
  host: Host;
  system: System;
  backend: Backend;
}

/**
 * Opens the Host of the chosen backend, runs `fn`, and lets the simulated host go. `simulated`:
 * more options for the simulated system (`mkctl daemon` forwards notify() to the real systemd).
 */
export async function withHost<T>(
  values: HostValues,
  io: CliIo,
  fn: (ctx: HostContext) => Promise<T>,
  options: { simulated?: Pick<SimulatedSystemOptions, 'forwardNotify'> } = {},
): Promise<T> {
  const which = backend(values, io);
  const { Host } = await import('../host');
  let system: System;
  let simulated: SimulatedSystem | undefined;
  if (which.kind === 'simulated') {
    const { SimulatedSystem: Sim } = await import('../system/simulated');
    const fs = await import('node:fs');
    // a fresh user's state directory: its parents may not exist yet (the directory itself is made 0700)
    fs.mkdirSync(path.dirname(which.stateDir!), { recursive: true, mode: 0o700 });
    simulated = new Sim({ ...options.simulated, stateDir: which.stateDir! });
    system = simulated;
  } else {
    const { LinuxSystem } = await import('../system/linux');
    system = new LinuxSystem();
  }
  try {
    const host = await Host.open({ system, signal: io.signal, ...(values.lock !== undefined ? { lockPath: values.lock } : {}) });
    return await fn({ host, system, backend: which });
  } finally {
    await simulated?.dispose();
  }
}

/** A `--json` document: `{"version": 1, ...payload}`, bigints as decimal strings, one line per field level. */
export function jsonDocument(payload: Record<string, unknown>): string {
  return `${JSON.stringify({ version: JSON_VERSION, ...payload }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`;
}

export interface Styles {
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
}

/** ANSI colours on a terminal, never with NO_COLOR (https://no-color.org) or TERM=dumb. */
export function styles(io: CliIo): Styles {
  const on = io.stdout.isTTY === true && (io.env.NO_COLOR ?? '') === '' && io.env.TERM !== 'dumb';
  const wrap = (code: number) => (s: string) => (on ? `\u001b[${code}m${s}\u001b[0m` : s);
  return { bold: wrap(1), dim: wrap(2), red: wrap(31), green: wrap(32), yellow: wrap(33) };
}

/** The CPU options of commands that take CPUs: physical ids, or a count (as kerf's --cpus and --cpu-count). */
export const CPU_OPTIONS = {
  cpus: { type: 'string' },
  'cpu-count': { type: 'string' },
} as const;

/**
 * A CPU request as operators write it, as kerf takes it: `--cpus 2-5,8` names physical ids (one
 * id alone is one CPU: `--cpus 4`), `--cpu-count 4` asks for four; one of them, or neither.
 */
export function cpuRequest(values: { cpus?: string; 'cpu-count'?: string }): number | { physical: number[] } | undefined {
  const { cpus, 'cpu-count': count } = values;
  if (cpus !== undefined && count !== undefined) throw new UsageError('--cpus and --cpu-count exclude each other: give physical ids, or a count');
  if (cpus !== undefined) return { physical: parseCpuList(cpus) };
  if (count === undefined) return undefined;
  if (!/^\d+$/.test(count) || Number(count) < 1) throw new UsageError(`--cpu-count takes a whole number of at least 1, got ${JSON.stringify(count)}`);
  return Number(count);
}

/** "2-5,8" → [2, 3, 4, 5, 8] (lib/units parseCpuIds), or a usage error naming the option. */
export function parseCpuList(text: string, what = '--cpus'): number[] {
  try {
    return parseCpuIds(text, what);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** A size as operators write it ("512M", "2G", "4096"): bytes, or a usage error naming the option. */
export async function parseSize(text: string, what: string): Promise<bigint> {
  const { parseBytes } = await import('../units');
  try {
    return parseBytes(text, what);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Left-aligned columns separated by two spaces; the first row is the header. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

/**
 * A progress line for a step that takes seconds (loading an image, waiting for a state), drawn on
 * a terminal only and erased when the step ends, so that only the result line stays; nothing at
 * all when stdout is a pipe or a file.
 */
export async function withProgress<T>(io: CliIo, text: string, step: () => Promise<T>): Promise<T> {
  if (io.stdout.isTTY !== true) return step();
  io.stdout.write(`${text}…`);
  try {
    return await step();
  } finally {
    io.stdout.write('\r\u001b[K');
  }
}

/** "0000:00:04.0,0000:00:05.0" → the addresses; "" → none (the library checks their form). */
export function parseDeviceList(text: string): string[] {
  return text.split(',').map((d) => d.trim()).filter((d) => d !== '');
}

/** A whole command line's positionals: exactly `names`, or a usage error saying what is missing or extra. */
export function positionalArgs(positionals: readonly string[], names: readonly string[]): string[] {
  if (positionals.length < names.length) throw new UsageError(`missing ${names.slice(positionals.length).join(' ')}`);
  if (positionals.length > names.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[names.length])}`);
  return [...positionals];
}

/**
 * Puts a terminal's stdin in raw mode (every key, Ctrl-C included, reaches the program at the other
 * end); `restore()` puts it back as it was. Undefined when `input` is no terminal.
 */
export function rawMode(input: CliInput | undefined): { restore(): void } | undefined {
  if (input?.isTTY !== true || input.setRawMode === undefined) return undefined;
  const was = input.isRaw === true;
  input.setRawMode(true);
  return { restore: () => input.setRawMode!(was) };
}

/** A terminal's size, 24x80 when `output` is no terminal or does not say. */
export function terminalSize(output: CliOutput): { rows: number; cols: number } {
  return output.isTTY === true && output.rows !== undefined && output.columns !== undefined ? { rows: output.rows, cols: output.columns } : { rows: 24, cols: 80 };
}
