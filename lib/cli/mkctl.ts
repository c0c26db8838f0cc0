#!/usr/bin/env node
/**
 * mkctl: the command-line face of the library. A table of commands (lib/cli/commands/*), each
 * with its own --help, imported only when it runs; this file routes words to a command, wires
 * the process to it, and turns what it throws into an exit code and one line on stderr (or a
 * JSON document with --json):
 *
 *   0 done · 1 a kernel or runtime error · 2 a usage or validation error · 130 interrupted (SIGINT)
 */
import type { CliIo, Command, CommandSpec } from './command';
import { EXIT, UsageError } from './command';

const lazy = (path: string[], summary: string, load: () => Promise<Command>, more: { ownsSignals?: true } = {}): CommandSpec => ({ path, summary, load, ...more });

export const COMMANDS: readonly CommandSpec[] = [
  lazy(['status'], 'the host, its pool and its instances, and what needs attention', async () => (await import('./commands/status')).status),
  lazy(['list'], 'the instances: name, id, status, CPUs, memory', async () => (await import('./commands/status')).list),
  lazy(['pool', 'init'], 'create the pool of CPUs, memory and devices that instances take from', async () => (await import('./commands/pool')).poolInit),
  lazy(['pool', 'grow'], 'add host CPUs, memory or devices to the pool', async () => (await import('./commands/pool')).poolGrow),
  lazy(['pool', 'shrink'], 'give free CPUs, memory or devices back to the host', async () => (await import('./commands/pool')).poolShrink),
  lazy(['pool', 'teardown'], 'give the whole pool back to the host', async () => (await import('./commands/pool')).poolTeardown),
  lazy(['create'], 'create an instance from free pool CPUs, memory and devices', async () => (await import('./commands/lifecycle')).create),
  lazy(['update'], "change an instance's CPUs, memory or devices, live when it runs", async () => (await import('./commands/lifecycle')).update),
  lazy(['load'], 'load a kernel (and initramfs) into an instance', async () => (await import('./commands/lifecycle')).load),
  lazy(['start'], 'boot the loaded kernel of an instance', async () => (await import('./commands/lifecycle')).start),
  lazy(['stop'], 'halt a running instance (gracefully, or --force)', async () => (await import('./commands/lifecycle')).stop),
  lazy(['restart'], 'stop an instance if it runs, and start it again', async () => (await import('./commands/lifecycle')).restart),
  lazy(['unload'], 'free the loaded kernel of a stopped instance', async () => (await import('./commands/lifecycle')).unload),
  lazy(['delete'], 'remove an instance; its resources go back to the pool', async () => (await import('./commands/lifecycle')).del),
  lazy(['plan'], 'what apply would change to make the host match a spec file', async () => (await import('./commands/spec')).planCommand),
  lazy(['apply'], 'make the host match a spec file, step by step', async () => (await import('./commands/spec')).applyCommand),
  lazy(['show'], 'one instance in detail: status, CPUs, memory, devices, image', async () => (await import('./commands/show')).show),
  lazy(['dump'], "an instance's device tree as the kernel renders it (blob, or DTS with --dts)", async () => (await import('./commands/show')).dump),
  lazy(['probe'], "whether an instance's kernel answers: alive, hung or stopped (exit 0, 3, 4)", async () => (await import('./commands/show')).probe),
  lazy(['watch'], 'the host events as they happen (lines or JSON lines), until Ctrl-C', async () => (await import('./commands/watch')).watch),
  lazy(['console'], "a raw relay to an instance's console (detach with Ctrl-] then .)", async () => (await import('./commands/console')).consoleCommand),
  lazy(['exec'], 'run a command in an instance (-i stdin, -t terminal), exit with its status', async () => (await import('./commands/exec')).exec),
  lazy(['demo'], 'the whole story on a fresh simulated host, in memory', async () => (await import('./commands/demo')).demo),
  lazy(['selftest'], 'take one instance through its whole life and show what the kernel says', async () => (await import('./commands/selftest')).selftest),
  lazy(['completion'], 'a completion script for bash or zsh', async () => (await import('./commands/completion')).completion),
  lazy(['daemon'], 'apply a host spec, then supervise its instances under systemd (Type=notify)', async () => (await import('./commands/daemon')).daemon, { ownsSignals: true }),
  lazy(['qemu', 'run'], 'boot a kernel under QEMU (TCG) and run one command inside', async () => (await import('./commands/qemu-run')).qemuRun),
];

export function usage(commands: readonly (Command | CommandSpec)[] = COMMANDS): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length));
  return [
    'usage: mkctl <command> [options]',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`),
    '',
    'mkctl <command> --help shows the options of one command.',
    '',
  ].join('\n');
}

/** The options of a command line, i.e. what comes before a `--` that starts a guest command line. */
function options(args: readonly string[]): readonly string[] {
  const end = args.indexOf('--');
  return end < 0 ? args : args.slice(0, end);
}

const USAGE_CODES = new Set(['ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL']);

/** The exit code for what a command threw. */
export function exitCodeOf(error: unknown, signal?: AbortSignal): number {
  if (signal?.aborted) return EXIT.interrupted;
  const code = (error as { code?: unknown }).code;
  if (error instanceof UsageError || USAGE_CODES.has(String(code)) || code === 'ERR_MK_INVALID_SPEC') return EXIT.usage;
  return EXIT.failure;
}

/** The command `argv` names: the longest command path that prefixes it. */
function findCommand<C extends Command | CommandSpec>(argv: readonly string[], commands: readonly C[]): C | undefined {
  return [...commands].sort((a, b) => b.path.length - a.path.length).find((c) => c.path.every((w, i) => argv[i] === w));
}

/** Runs mkctl with `argv` (without node and the script) and resolves with the exit code. */
export async function main(argv: readonly string[], io: CliIo, commands: readonly (Command | CommandSpec)[] = COMMANDS): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    (argv.length === 0 ? io.stderr : io.stdout).write(usage(commands));
    return argv.length === 0 ? EXIT.usage : EXIT.ok;
  }
  const match = findCommand(argv, commands);
  if (match === undefined) {
    // a group such as "pool" without its subcommand: name the subcommands
    const group = commands.filter((c) => c.path.length > 1 && c.path[0] === argv[0]);
    if (group.length > 0) {
      const wanted = argv[1] === undefined || argv[1].startsWith('-') ? `needs a subcommand` : `has no subcommand "${argv[1]}"`;
      io.stderr.write(`mkctl ${argv[0]} ${wanted}: ${group.map((c) => c.path.join(' ')).join(', ')}\n`);
      return EXIT.usage;
    }
    io.stderr.write(`mkctl: unknown command "${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}"\n\n${usage(commands)}`);
    return EXIT.usage;
  }
  const name = match.path.join(' ');
  const command = 'load' in match ? await match.load() : match;
  const rest = argv.slice(match.path.length);
  if (options(rest).some((a) => a === '--help' || a === '-h')) {
    io.stdout.write(command.help);
    return EXIT.ok;
  }
  try {
    return await command.run(rest, io);
  } catch (e) {
    const exit = exitCodeOf(e, io.signal);
    const error = e as Error & { code?: unknown; details?: unknown };
    const message = exit === EXIT.interrupted ? 'interrupted' : error.message;
    if (options(rest).includes('--json')) {
      const { jsonDocument } = await import('./common');
      // stable codes: the library's ERR_MK_* as they are, every other usage error ERR_MK_USAGE
      const own = typeof error.code === 'string' && error.code.startsWith('ERR_MK_') ? error.code : undefined;
      const code = exit === EXIT.interrupted ? 'ERR_MK_INTERRUPTED' : (own ?? (exit === EXIT.usage ? 'ERR_MK_USAGE' : 'ERR_MK_FAILED'));
      io.stdout.write(jsonDocument({ error: { code, message, exitCode: exit, ...(error.details !== undefined ? { details: error.details } : {}) } }));
    } else if (exit === EXIT.usage) {
      io.stderr.write(`mkctl ${name}: ${message}\n(see mkctl ${name} --help)\n`);
    } else {
      io.stderr.write(`mkctl ${name}: ${message}\n`);
    }
    return exit;
  }
}

/** Wires the real process: SIGINT/SIGTERM abort the running command, which cleans up first. */
export async function runProcess(proc: NodeJS.Process = process): Promise<number> {
  const controller = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    signalled ??= sig;
    controller.abort(new Error(`received ${sig}`));
  };
  proc.on('SIGINT', onSignal);
  proc.on('SIGTERM', onSignal);
  try {
    const io: CliIo = {
      stdout: proc.stdout,
      stderr: proc.stderr,
      env: proc.env,
      cwd: proc.cwd(),
      signal: controller.signal,
      onSignal: (name, listener) => {
        proc.on(name, listener);
        return () => proc.removeListener(name, listener);
      },
      // process.stdin is made when first read: commands that do not read it do not pay for it
      get stdin() {
        return proc.stdin;
      },
    };
    const argv = proc.argv.slice(2);
    const code = await main(argv, io);
    const owned = findCommand(argv, COMMANDS) as CommandSpec | undefined;
    return signalled === undefined || owned?.ownsSignals === true ? code : signalled === 'SIGINT' ? EXIT.interrupted : 128 + 15;
  } finally {
    proc.removeListener('SIGINT', onSignal);
    proc.removeListener('SIGTERM', onSignal);
  }
}

/* c8 ignore start */
if (require.main === module) {
  // mkctl is done when its command is: a kernel call the command gave up waiting for (a graceful
  // halt, interrupted or followed by a forced one, waits up to 30 s in the kernel on a thread of
  // its own) must not keep the shell waiting. Output is written: stdout and stderr are
  // synchronous on Linux for files, pipes and terminals.
  void runProcess().then((code) => process.exit(code));
}
/* c8 ignore stop */
