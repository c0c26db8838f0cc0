/**
 * Host side of the QEMU lane: fetches the stock kernel (scripts/qemu/fetch-kernel.sh), builds the
 * static guest helper, boots a guest with lib/qemu and turns the guest's `RESULT {json}` lines
 * into tap assertions.
 */
import { execFile } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, statSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { readKernelCache, runQemu, type KernelCache, type QemuOptions, type QemuResult } from '../../lib/qemu';

const execFileAsync = promisify(execFile);

export const ROOT = path.resolve(__dirname, '..', '..');
export const CACHE = path.join(ROOT, '.cache', 'qemu');
export const LOGS = path.join(CACHE, 'logs');

/** Checks of guest/stock.mjs that every architecture runs. */
export const COMMON_STOCK_CHECKS = [
  'addon-loads',
  'support-probe-stock',
  'reboot-start-no-support',
  'reboot-halt-no-support',
  'reboot-halt-force-no-support',
  'kernfs-missing-no-support',
  'mount-multikernel-no-support',
  'mount-unknown-fstype-enodev',
  'cpu-topology',
  'host-open-no-support',
  'topology-read',
  'cpu-offline-online',
  'flock-across-processes',
  'sd-notify',
] as const;
/** The kexec checks of guest/stock.mjs, for kernels built with CONFIG_KEXEC_FILE. */
export const KEXEC_CHECKS = ['kexec-plain-load-unload', 'kexec-multikernel-load-no-support', 'kexec-multikernel-unload-no-support'] as const;
/** Checks of guest/vsock.mjs. */
export const VSOCK_CHECKS = [
  'vsock-loopback-available',
  'vsock-echo',
  'vsock-64MiB-checksum',
  'vsock-back-pressure',
  'vsock-100-concurrent',
  'vsock-peer-vanishes',
  'vsock-connect-refused',
  'vsock-script-complete',
] as const;
/**
 * Checks of guest/messaging.mjs: the library's channel and exec code (lib/channels.ts,
 * lib/exec/client.ts, lib/exec-process.ts) on the same loopback transport, exec against the
 * simulated kerf-init agent served on a real listener.
 */
export const MESSAGING_CHECKS = [
  'channel-refused',
  'channel-probe-alive',
  'channel-round-trip',
  'channel-100-concurrent',
  'exec-64MiB-stdin-stdout',
  'exec-kill',
  'exec-tty-resize',
  'exec-exit-127-126',
  'exec-lost-connection',
  'exec-unreserved-port-refused',
  'exec-100-concurrent',
  'kmsg-follow',
  'messaging-script-complete',
] as const;
/** The guest command of the stock guests: the three scripts in turn, each run whatever the one before did. */
export const STOCK_GUEST_COMMAND = [
  'sh',
  '-c',
  'node test/qemu/guest/stock.mjs; a=$?; node test/qemu/guest/vsock.mjs; b=$?; node test/qemu/guest/messaging.mjs; c=$?; [ $a = 0 ] && [ $b = 0 ] && [ $c = 0 ]',
];

export interface GuestCheck {
  name: string;
  ok: boolean;
  ms?: number;
  error?: string;
  [key: string]: unknown;
}

/** Why the lane cannot run here, or undefined when it can; `dist: false` for guests that load nothing from dist/. */
export async function missingPrerequisite(arch: 'x86_64' | 'aarch64' = 'x86_64', { dist = true } = {}): Promise<string | undefined> {
  try {
    await execFileAsync(`qemu-system-${arch}`, ['--version']);
  } catch {
    return `qemu-system-${arch} is not installed (scripts/qemu/ci.sh installs it)`;
  }
  if (dist && !existsSync(path.join(ROOT, 'dist', 'system', 'linux', 'index.js'))) return 'dist/ is not built: run `npm run build:ts` first';
  return undefined;
}

/** scripts/qemu/fetch-kernel.sh (idempotent) and the kernel cache it fills. */
export async function fetchKernel(arch: 'amd64' | 'arm64' = 'amd64'): Promise<KernelCache> {
  const { stdout } = await execFileAsync('bash', [path.join(ROOT, 'scripts', 'qemu', 'fetch-kernel.sh'), '--arch', arch], { maxBuffer: 1 << 20 });
  return readKernelCache(stdout.trim().split('\n').pop()!);
}

/**
 * test/qemu/guest/mkhelper.c built static (rebuilt when the source is newer); arm64 with Debian's
 * cross compiler (gcc-aarch64-linux-gnu, which the arm64 prebuild needs anyway).
 */
export async function buildHelper(arch: 'x86_64' | 'aarch64' = 'x86_64'): Promise<string> {
  const src = path.join(ROOT, 'test', 'qemu', 'guest', 'mkhelper.c');
  const out = path.join(CACHE, arch === 'x86_64' ? 'mkhelper' : 'mkhelper-arm64');
  if (!existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs) {
    mkdirSync(CACHE, { recursive: true });
    await execFileAsync(arch === 'x86_64' ? 'gcc' : 'aarch64-linux-gnu-gcc', ['-static', '-O2', '-Wall', '-o', out, src]);
  }
  return out;
}

/** The addon the guest loads: the local build or a prebuild for the guest's architecture. */
export function addonFor(arch: 'x86_64' | 'aarch64'): string | undefined {
  if (arch === 'x86_64') {
    const local = path.join(ROOT, 'build', 'Release', 'multikernel.node');
    if (existsSync(local)) return local;
  }
  const dir = path.join(ROOT, 'prebuilds', arch === 'x86_64' ? 'linux-x64' : 'linux-arm64');
  return existsSync(dir) ? dir : undefined;
}

export interface Boot {
  result: QemuResult;
  checks: Map<string, GuestCheck>;
  /** the whole console (result.output keeps only its head and tail past runQemu's outputLimit) */
  console: string;
  log: string;
}

/**
 * Boots one guest; the console goes to .cache/qemu/logs/<name>.log (and stderr with MKQEMU_VERBOSE=1).
 * A guest kernel that panics before it reaches /init (phase "kernel": nothing of ours has run
 * yet) is booted once more: under TCG on a loaded machine the stock kernel has been seen to die
 * in its timer softirq 1.3 s into boot (CI, 2026-12-02). The first console is kept as
 * <name>.panic.log and the retry is said on stderr; a second panic fails as before.
 */
export async function boot(name: string, options: QemuOptions): Promise<Boot> {
  try {
    return await bootOnce(name, options);
  } catch (error) {
    const details = (error as { details?: { phase?: unknown; consoleTail?: unknown } }).details;
    const panicked = (error as { code?: unknown }).code === 'ERR_MK_QEMU' && details?.phase === 'kernel' && String(details.consoleTail ?? '').includes('Kernel panic');
    if (!panicked) throw error;
    const log = path.join(LOGS, `${name}.log`);
    if (existsSync(log)) copyFileSync(log, path.join(LOGS, `${name}.panic.log`));
    process.stderr.write(`qemu: the guest kernel of ${name} panicked before /init (console kept in ${name}.panic.log); booting it once more\n`);
    return bootOnce(name, options);
  }
}

async function bootOnce(name: string, options: QemuOptions): Promise<Boot> {
  mkdirSync(LOGS, { recursive: true });
  const log = path.join(LOGS, `${name}.log`);
  const verbose = process.env['MKQEMU_VERBOSE'] === '1';
  // written as it arrives, so a hung guest can be watched with tail -f
  const fd = openSync(log, 'w');
  let consoleText = '';
  let result: QemuResult;
  try {
    result = await runQemu({
      ...options,
      onOutput: (text) => {
        consoleText += text;
        writeSync(fd, text);
        if (verbose) process.stderr.write(text);
      },
    });
  } finally {
    closeSync(fd);
  }
  const checks = new Map<string, GuestCheck>();
  for (const line of consoleText.split('\n')) {
    const at = line.indexOf('RESULT {');
    if (at < 0) continue;
    try {
      const check = JSON.parse(line.slice(at + 'RESULT '.length).trim()) as GuestCheck;
      checks.set(check.name, check);
    } catch {
      // a RESULT line cut by kernel messages on the console: its check will count as missing
    }
  }
  return { result, checks, console: consoleText, log };
}

/** One tap assertion per expected check; extra checks the guest reported are asserted too. */
export function assertChecks(t: Test, b: Boot, expected: readonly string[]): void {
  for (const name of new Set([...expected, ...b.checks.keys()])) {
    const c = b.checks.get(name);
    if (c === undefined) {
      t.fail(`${name}: the guest reported nothing (console: ${b.log})`);
      continue;
    }
    const { ok, error, name: _n, ...detail } = c;
    t.ok(ok, name, ok ? { detail } : { error, detail, console: b.log });
  }
}
