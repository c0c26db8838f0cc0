/**
 * mkctl console: a raw relay between the terminal and an instance's console (lib/console.ts):
 * stdin to the console, the console to stdout. On a terminal stdin goes raw (every key, Ctrl-C
 * included, goes to the instance) and Ctrl-] then `.` detaches, as ssh's `~.`; without a
 * terminal it relays until stdin ends, then the output that follows until the console is quiet.
 */
import { addAbortListener } from 'node:events';
import { parseArgs } from 'node:util';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { HOST_OPTIONS, rawMode, withHost } from '../common';
import { instanceArg } from './show';

/** Ctrl-] */
export const ESCAPE = 0x1d;
const DOT = 0x2e;

const CONSOLE_HELP = `usage: mkctl console NAME [--linger MS] [options]

A raw relay between this terminal and the console of instance NAME (/dev/mktty selected for it):
what you type goes to the instance, what it prints comes here.

On a terminal, stdin is put in raw mode (restored on exit), so every key, Ctrl-C included, goes to
the instance. Detach with Ctrl-] followed by "." (as ssh's "~."); Ctrl-] twice sends one Ctrl-].
Without a terminal (a pipe or a file on stdin) bytes go through unchanged until stdin ends; the
console's output is then relayed until it has been quiet for --linger milliseconds.

The kernel sends an instance's output to the newest console opened for it: while this relay runs,
an older one (another mkctl console, a library client) reads nothing.

options:
  --linger MS          without a terminal: after stdin ends, relay output until none came for
                       MS milliseconds (default 500; 0 leaves at once)
  --simulate, --state-dir DIR, --lock PATH, -h/--help: as for every host command (mkctl status --help)

exit status: 0 detached (or stdin ended) · 1 the console failed · 2 usage · 130 interrupted.
No --json: the console is a byte stream.
`;

/**
 * Finds Ctrl-] "." in terminal input, across chunks: `feed` returns the bytes to send and whether
 * the user asked to detach (bytes after the "." are dropped).
 */
export class EscapeDetector {
  #pending = false;

  feed(chunk: Uint8Array): { data: Buffer; detach: boolean } {
    const out: number[] = [];
    for (const b of chunk) {
      if (this.#pending) {
        this.#pending = false;
        if (b === DOT) return { data: Buffer.from(out), detach: true };
        out.push(ESCAPE);
        if (b !== ESCAPE) out.push(b);
      } else if (b === ESCAPE) {
        this.#pending = true;
      } else {
        out.push(b);
      }
    }
    return { data: Buffer.from(out), detach: false };
  }
}

export const consoleCommand: Command = {
  path: ['console'],
  summary: "a raw relay to an instance's console (detach with Ctrl-] then .)",
  help: CONSOLE_HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({ args, options: { ...HOST_OPTIONS, linger: { type: 'string' } }, allowPositionals: true, strict: true });
    if (values.json === true) throw new UsageError('the console is a byte stream: it has no --json');
    const which = instanceArg(positionals, 'usage: mkctl console NAME');
    const linger = values.linger === undefined ? 500 : /^\d+$/.test(values.linger) ? Number(values.linger) : undefined;
    if (linger === undefined) throw new UsageError(`--linger takes milliseconds (a whole number), got ${JSON.stringify(values.linger)}`);
    return withHost(values, io, async ({ host }) => {
      const instance = await host.instance(which);
      const stream = await instance.console();
      const stdin = io.stdin;
      const terminal = rawMode(stdin);
      const tty = terminal !== undefined;
      if (tty) {
        io.stderr.write(`connected to the console of ${instance.name} (id ${instance.id}); detach with Ctrl-] then .\r\n`);
      }
      return new Promise<number>((resolve, reject) => {
        const escape = new EscapeDetector();
        let quiet: NodeJS.Timeout | undefined;
        let inputEnded = false;
        const finish = (error: Error | undefined, code: number): void => {
          clearTimeout(quiet);
          unlisten[Symbol.dispose]();
          stream.removeListener('data', onOutput);
          stream.removeListener('error', onError);
          if (stdin !== undefined) {
            stdin.removeListener('data', onInput);
            stdin.removeListener('end', onInputEnd);
            stdin.pause();
          }
          if (tty) {
            terminal.restore();
            io.stderr.write(`\r\ndetached from ${instance.name}\r\n`);
          }
          stream.destroy();
          if (error !== undefined) reject(error);
          else resolve(code);
        };
        const settle = (): void => {
          clearTimeout(quiet);
          quiet = setTimeout(() => finish(undefined, EXIT.ok), linger);
        };
        const onOutput = (chunk: Buffer): void => {
          io.stdout.write(chunk);
          if (inputEnded) settle();
        };
        const onError = (err: Error): void => finish(err, EXIT.failure);
        const onAbort = (): void => finish(undefined, EXIT.interrupted);
        const onInput = (chunk: Buffer): void => {
          if (!tty) {
            stream.write(chunk);
            return;
          }
          const { data, detach } = escape.feed(chunk);
          if (data.length > 0) stream.write(data);
          if (detach) finish(undefined, EXIT.ok);
        };
        const onInputEnd = (): void => {
          inputEnded = true;
          // a terminal that closes ends the session; a pipe's end leaves the console time to answer
          if (tty || linger === 0) finish(undefined, EXIT.ok);
          else settle();
        };
        stream.on('data', onOutput);
        stream.on('error', onError);
        // also when the signal is aborted already (then on the next tick)
        const unlisten = addAbortListener(io.signal, onAbort);
        if (stdin === undefined) return onInputEnd();
        stdin.on('data', onInput);
        stdin.on('end', onInputEnd);
        stdin.resume();
      });
    });
  },
};
