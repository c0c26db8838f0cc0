/**
 * mkctl exec: a command in an instance through its kerf-init agent (Instance.exec), as
 * `docker exec` and `kerf exec`: its output here, its exit status as ours.
 */
import { parseArgs } from 'node:util';
import { type CliIo, type Command, UsageError } from '../command';
import { HOST_OPTIONS, HOST_OPTIONS_HELP, jsonDocument, rawMode, terminalSize, withHost } from '../common';

const EXEC_HELP = `usage: mkctl exec NAME [-i] [-t] [-e K=V]... [-w DIR] [-u UID[:GID]] [options] -- CMD [ARG...]

Runs CMD in instance NAME through its kerf-init agent (vsock port 1023; needs root, as kerf's own
client: it binds a reserved port) and exits with the command's status: its exit code, 127 when
it was not found, 126 when it could not be run, 128+n when signal n killed it, as a shell does.
The "--" may be left out when no option follows NAME: mkctl exec web uname -a.

options:
  -i, --interactive    forward stdin to the command (without it, its stdin is /dev/null)
  -t, --tty            run it on a pseudo-terminal (stdout and stderr arrive merged) the size of
                       this terminal (24x80 when stdout is none), resized with it; with -i on a
                       terminal, stdin goes raw so every key reaches the command
  -e, --env K=V        set an environment variable (repeatable, applied in order) over PATH,
                       HOME and, with -t, TERM
  -w, --workdir DIR    the working directory (default /)
  -u, --user UID[:GID] run as these numeric ids (default 0:0); user and group names are not
                       resolved, the instance's passwd is not at hand
${HOST_OPTIONS_HELP}
exit status: the command's as above · 1 the instance is not running, has no agent, or the
connection was lost · 2 usage · 130 interrupted (the command gets SIGTERM).

--json (not with -t): run to the end, then {"version": 1, "name", "id", "code", "signal"?: n
(when a signal killed it), "pid", "stdout", "stderr"} (output as UTF-8 text); the exit status is still the command's.
`;

const OPTIONS = {
  ...HOST_OPTIONS,
  interactive: { type: 'boolean', short: 'i' },
  tty: { type: 'boolean', short: 't' },
  env: { type: 'string', short: 'e', multiple: true },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
} as const;

/** Options that take a value: the word after them is not NAME. */
const TAKES_VALUE = new Set(['-e', '--env', '-w', '--workdir', '-u', '--user', '--state-dir', '--lock']);

/**
 * Splits an exec command line into its options with NAME, and the command: at "--", else right
 * after NAME (the first word that is neither an option nor an option's value).
 */
export function splitExecArgs(args: readonly string[]): { own: string[]; command: string[] } {
  const end = args.indexOf('--');
  if (end >= 0) return { own: args.slice(0, end), command: args.slice(end + 1) };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (TAKES_VALUE.has(a)) i++;
    else if (!a.startsWith('-')) return { own: args.slice(0, i + 1), command: args.slice(i + 1) };
  }
  return { own: [...args], command: [] };
}

/** -e K=V entries, in order. */
export function parseEnv(entries: readonly string[]): [string, string][] {
  return entries.map((e) => {
    const eq = e.indexOf('=');
    if (eq < 1) throw new UsageError(`-e takes KEY=VALUE, got ${JSON.stringify(e)}`);
    return [e.slice(0, eq), e.slice(eq + 1)];
  });
}

/** -u UID[:GID], numbers only. */
export function parseUser(text: string): { uid: number; gid?: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(text);
  if (m === null) throw new UsageError(`-u takes UID or UID:GID as numbers (names are not resolved), got ${JSON.stringify(text)}`);
  return { uid: Number(m[1]), ...(m[2] !== undefined ? { gid: Number(m[2]) } : {}) };
}

export const exec: Command = {
  path: ['exec'],
  summary: 'run a command in an instance (-i stdin, -t terminal), exit with its status',
  help: EXEC_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { own, command } = splitExecArgs(args);
    const { values, positionals } = parseArgs({ args: own, options: OPTIONS, allowPositionals: true, strict: true });
    if (positionals.length === 0) throw new UsageError('which instance? usage: mkctl exec NAME -- CMD [ARG...]');
    if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])} (the command goes after "--")`);
    if (command.length === 0) throw new UsageError('no command: mkctl exec NAME -- CMD [ARG...]');
    if (values.json === true && values.tty === true) throw new UsageError('--json collects the output: it cannot run on a terminal (-t)');
    const name = positionals[0]!;
    const env = parseEnv(values.env ?? []);
    const user = values.user === undefined ? {} : parseUser(values.user);
    const stdin = values.interactive === true ? io.stdin : undefined;
    const settings = { env, ...(values.workdir !== undefined ? { cwd: values.workdir } : {}), ...user, signal: io.signal };
    return withHost(values, io, async ({ host }) => {
      const instance = await host.instance(/^\d+$/.test(name) ? Number(name) : name);
      if (values.json === true) {
        // the exec client lets go of stdin when the session ends (no read left pending on a terminal)
        const r = await instance.execFile(command, { ...settings, ...(stdin !== undefined ? { stdin } : {}) });
        io.stdout.write(
          jsonDocument({ name: instance.name, id: instance.id, code: r.code, signal: r.signal, pid: r.pid, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') }),
        );
        return r.code;
      }
      const out = io.stdout;
      const tty = values.tty === true ? terminalSize(out) : undefined;
      const proc = await instance.exec(command, { ...settings, ...(tty ? { tty } : {}), stdin: stdin ?? 'ignore' });
      const ended = Promise.all([proc.stdout, proc.stderr].map((s) => new Promise((resolve) => s.once('end', resolve))));
      proc.stdout.on('data', (chunk: Buffer) => io.stdout.write(chunk));
      proc.stderr.on('data', (chunk: Buffer) => io.stderr.write(chunk));
      // -it on a terminal: raw, so that every key reaches the command
      const terminal = tty !== undefined ? rawMode(stdin) : undefined;
      const onResize = (): void => proc.resize(out.columns!, out.rows!);
      const follow = tty !== undefined && out.isTTY === true && out.on !== undefined;
      if (follow) out.on!('resize', onResize);
      const status = await proc.exited.then(
        async ({ code }) => {
          await ended;
          return code;
        },
        (err: unknown) => err,
      );
      if (follow) out.removeListener!('resize', onResize);
      terminal?.restore();
      if (typeof status === 'number') return status;
      // the agent could not start it: 127 not found, 126 otherwise, as a shell says
      if ((status as { code?: unknown }).code !== 'ERR_MK_EXEC_REMOTE') throw status;
      io.stderr.write(`mkctl exec: ${(status as Error).message}\n`);
      return (status as { exitCode: number }).exitCode;
    });
  },
};
