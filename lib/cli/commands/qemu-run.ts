/**
 * mkctl qemu run: boot a kernel under QEMU (TCG) and run one command inside; exits with the
 * guest command's exit code.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { MultikernelError } from '../../errors';
import { PHASE_LABELS, hostQemuArch, readKernelCache, runQemu, type QemuArch, type QemuOptions } from '../../qemu';
import { type CliIo, type Command, EXIT, UsageError } from '../command';

const HELP = `usage: mkctl qemu run [options] -- <command> [args...]

Boots a kernel under QEMU with TCG emulation (never KVM) and runs <command> in a generated
initramfs (static busybox, node and its libraries, /init). The serial console is printed on
stdout; mkctl exits with the guest command's exit code.

kernel and userspace:
  --kernel-dir DIR     a folder filled by scripts/qemu/fetch-kernel.sh: vmlinuz, busybox and the
                       9p/vsock modules (default: <package>/.cache/qemu/<amd64|arm64>)
  --kernel PATH        kernel image (overrides the one in --kernel-dir)
  --busybox PATH       static busybox (overrides the one in --kernel-dir)
  --module PATH        a .ko to insmod, in order (repeatable; replaces the --kernel-dir modules)
  --node PATH          node binary for /usr/bin/node (default: this node, same architecture only)
  --no-node            no node in the guest
  --binary PATH        a host executable to copy in with its libraries (repeatable)
  --file SRC:DEST      a host file to put at guest path DEST (repeatable)

machine:
  --arch ARCH          x86_64 or aarch64 (default: the host's)
  --machine TYPE       q35 (default) or pc; aarch64: virt,gic-version=3
  --cpus N             virtual CPUs (default 2)
  --memory SIZE        e.g. 1024, 512M, 2G (default 1G)
  --append TEXT        appended to the kernel command line
  --qemu PATH          the QEMU binary (default: qemu-system-<arch> from PATH)

command:
  --share DIR          share DIR read-only over 9p (default: none)
  --share-mount PATH   guest mount point of the share (default /share)
  --cwd PATH           guest working directory (default: the share, else /)
  --env NAME=VALUE     environment of the guest command (repeatable; NO_COLOR=1 is preset)
  --timeout SECONDS    kill QEMU after this long (default 300)

output:
  --json               print {exitCode, durationMs, phases, qemuStatus} on stdout; the console
                       goes to stderr
  --quiet              do not print the console
  -h, --help           this text

exit codes: the guest command's status; 2 wrong usage; 124 timeout; 125 QEMU or guest setup
failed; 130 interrupted. Boot phases are shown on stderr when it is a terminal.
`;

const OPTIONS = {
  'kernel-dir': { type: 'string' },
  kernel: { type: 'string' },
  busybox: { type: 'string' },
  module: { type: 'string', multiple: true },
  node: { type: 'string' },
  'no-node': { type: 'boolean' },
  binary: { type: 'string', multiple: true },
  file: { type: 'string', multiple: true },
  arch: { type: 'string' },
  machine: { type: 'string' },
  cpus: { type: 'string' },
  memory: { type: 'string' },
  append: { type: 'string' },
  qemu: { type: 'string' },
  share: { type: 'string' },
  'share-mount': { type: 'string' },
  cwd: { type: 'string' },
  env: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
} as const;

/** The package root, where .cache/qemu lives (this file is lib/cli/commands or dist/cli/commands). */
const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');

function wholeNumber(name: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--${name} must be a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** Turns the command line into runQemu options (without the I/O callbacks). */
export async function qemuOptionsFromArgs(args: string[], io: Pick<CliIo, 'cwd'>): Promise<{ options: QemuOptions; json: boolean; quiet: boolean }> {
  const { values, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  if (positionals.length === 0) throw new UsageError('missing the guest command (after --)');
  const arch = values.arch ?? hostQemuArch();
  if (arch !== 'x86_64' && arch !== 'aarch64') throw new UsageError(`--arch must be x86_64 or aarch64, got ${JSON.stringify(arch)}`);
  if (values.node !== undefined && values['no-node'] === true) throw new UsageError('--node and --no-node exclude each other');
  const resolve = (p: string): string => path.resolve(io.cwd, p);

  let kernel = values.kernel === undefined ? undefined : resolve(values.kernel);
  let busybox = values.busybox === undefined ? undefined : resolve(values.busybox);
  let modules = values.module?.map(resolve);
  if (kernel === undefined || busybox === undefined || (modules === undefined && values.share !== undefined)) {
    const dir = values['kernel-dir'] === undefined ? path.join(PACKAGE_ROOT, '.cache', 'qemu', arch === 'x86_64' ? 'amd64' : 'arm64') : resolve(values['kernel-dir']);
    const cache = await readKernelCache(dir);
    kernel ??= cache.kernel;
    busybox ??= cache.busybox;
    modules ??= cache.modules;
  }

  const env: Record<string, string> = {};
  for (const pair of values.env ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env wants NAME=VALUE, got ${JSON.stringify(pair)}`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const files = (values.file ?? []).map((spec) => {
    const colon = spec.lastIndexOf(':');
    if (colon <= 0 || !spec.slice(colon + 1).startsWith('/')) throw new UsageError(`--file wants SRC:/guest/path, got ${JSON.stringify(spec)}`);
    return { source: resolve(spec.slice(0, colon)), target: spec.slice(colon + 1) };
  });

  const options: QemuOptions = {
    kernel,
    busybox,
    command: positionals,
    arch: arch as QemuArch,
    env,
    files,
    ...(modules === undefined ? {} : { modules }),
    ...(values.binary === undefined ? {} : { binaries: values.binary.map(resolve) }),
    ...(values['no-node'] === true ? { node: false as const } : values.node === undefined ? {} : { node: resolve(values.node) }),
    ...(values.machine === undefined ? {} : { machine: values.machine }),
    ...(values.cpus === undefined ? {} : { cpus: wholeNumber('cpus', values.cpus) }),
    ...(values.memory === undefined ? {} : { memory: values.memory }),
    ...(values.append === undefined ? {} : { append: values.append }),
    ...(values.qemu === undefined ? {} : { qemuBinary: values.qemu.includes('/') ? resolve(values.qemu) : values.qemu }),
    ...(values.share === undefined ? {} : { share: resolve(values.share) }),
    ...(values['share-mount'] === undefined ? {} : { shareMount: values['share-mount'] }),
    ...(values.cwd === undefined ? {} : { cwd: values.cwd }),
    ...(values.timeout === undefined ? {} : { timeoutMs: wholeNumber('timeout', values.timeout) * 1000 }),
  };
  return { options, json: values.json === true, quiet: values.quiet === true };
}

async function run(args: string[], io: CliIo): Promise<number> {
  const { options, json, quiet } = await qemuOptionsFromArgs(args, io);
  const console = json ? io.stderr : io.stdout;
  const progress = io.stderr.isTTY === true;
  try {
    const result = await runQemu({
      ...options,
      signal: io.signal,
      ...(quiet ? {} : { onOutput: (text: string) => void console.write(text) }),
      ...(progress ? { onPhase: (phase, ms) => void io.stderr.write(`\nmkctl: [${(ms / 1000).toFixed(1).padStart(5)}s] ${PHASE_LABELS[phase]}\n`) } : {}),
    });
    if (json) {
      const { exitCode, durationMs, phases, qemuStatus } = result;
      io.stdout.write(`${JSON.stringify({ exitCode, durationMs, phases, qemuStatus })}\n`);
    }
    return result.exitCode;
  } catch (e) {
    if (!(e instanceof MultikernelError)) throw e;
    const reason = e.details['reason'];
    if (json) io.stdout.write(`${JSON.stringify({ error: { code: e.code, reason, message: e.message } })}\n`);
    io.stderr.write(`\nmkctl qemu run: ${e.message}\n`);
    return reason === 'timeout' ? EXIT.timeout : reason === 'aborted' ? EXIT.interrupted : EXIT.harness;
  }
}

export const qemuRun: Command = {
  path: ['qemu', 'run'],
  summary: 'boot a kernel under QEMU (TCG) and run a command inside',
  help: HELP,
  run,
};
