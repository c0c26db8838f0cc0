#!/usr/bin/env node
/**
 * mkctl: the command-line face of the library. A table of commands (lib/cli/commands/*), each
 * with its own --help; this file only routes words to a command and wires the process to it.
 */
import type { CliIo, Command } from './command';
import { EXIT, UsageError } from './command';
import { qemuRun } from './commands/qemu-run';
import { selftest } from './commands/selftest';

export const COMMANDS: readonly Command[] = [selftest, qemuRun];

export function usage(commands: readonly Command[] = COMMANDS): string {
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

/** --help or -h among the options, i.e. before a `--` that starts a guest command line. */
function wantsHelp(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** Runs mkctl with `argv` (without node and the script) and resolves with the exit code. */
export async function main(argv: readonly string[], io: CliIo, commands: readonly Command[] = COMMANDS): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    (argv.length === 0 ? io.stderr : io.stdout).write(usage(commands));
    return argv.length === 0 ? EXIT.usage : EXIT.ok;
  }
  // the longest command path that prefixes argv
  const match = [...commands]
    .sort((a, b) => b.path.length - a.path.length)
    .find((c) => c.path.every((w, i) => argv[i] === w));
  if (match === undefined) {
    io.stderr.write(`mkctl: unknown command "${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}"\n\n${usage(commands)}`);
    return EXIT.usage;
  }
  const rest = argv.slice(match.path.length);
  if (wantsHelp(rest)) {
    io.stdout.write(match.help);
    return EXIT.ok;
  }
  try {
    return await match.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (e as { code?: unknown }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      io.stderr.write(`mkctl ${match.path.join(' ')}: ${(e as Error).message}\n(see mkctl ${match.path.join(' ')} --help)\n`);
      return EXIT.usage;
    }
    io.stderr.write(`mkctl ${match.path.join(' ')}: ${(e as Error).message}\n`);
    return EXIT.failure;
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
    const code = await main(proc.argv.slice(2), { stdout: proc.stdout, stderr: proc.stderr, env: proc.env, cwd: proc.cwd(), signal: controller.signal });
    return signalled === undefined ? code : signalled === 'SIGINT' ? EXIT.interrupted : 128 + 15;
  } finally {
    proc.removeListener('SIGINT', onSignal);
    proc.removeListener('SIGTERM', onSignal);
  }
}

/* c8 ignore next 3 */
if (require.main === module) {
  void runProcess().then((code) => { process.exitCode = code; });
}
