// Shared by the guest scripts: loads the COMPILED library from the 9p share and prints one
// machine-readable line per check, `RESULT {"name":…,"ok":…,"ms":…,…}`, which the host-side tap
// test (test/qemu/*.test.ts) turns into assertions.
import { createRequire } from 'node:module';
import { execFile, spawn } from 'node:child_process';

export const ROOT = process.env.MKQEMU_ROOT ?? '/share';
const require = createRequire(`${ROOT}/package.json`);

/** require() of a compiled library module, e.g. lib('system/linux/index') → dist/system/linux/index.js */
export function lib(name) {
  return require(`${ROOT}/dist/${name}.js`);
}

let failures = 0;

export function emit(name, ok, extra = {}) {
  if (!ok) failures++;
  process.stdout.write(`RESULT ${JSON.stringify({ name, ok, ...extra })}\n`);
}

// MKQEMU_ONLY=a,b,c runs only those checks (the arm64 guest has no x86 helper binaries)
const only = process.env.MKQEMU_ONLY ? process.env.MKQEMU_ONLY.split(',') : undefined;

/** Runs `fn`; it returns details (an object) or throws. A thrown error is a failed check. */
export async function check(name, fn) {
  if (only !== undefined && !only.includes(name)) return;
  const t0 = Date.now();
  try {
    const detail = (await fn()) ?? {};
    emit(name, true, { ms: Date.now() - t0, ...detail });
  } catch (e) {
    emit(name, false, { ms: Date.now() - t0, error: String(e?.stack ?? e), code: e?.code });
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

/** Expects `promise` to reject; returns the error. */
export async function rejects(promise, message) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`expected a rejection: ${message}`);
}

export function finish() {
  process.stdout.write(`RESULT-SUMMARY ${JSON.stringify({ failures })}\n`);
  process.exitCode = failures === 0 ? 0 : 1;
}

/** Runs a program, resolves { code, stdout, stderr } (never rejects on a non-zero exit). */
export function run(file, args, options = {}) {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 60_000, ...options }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, error: err ? String(err) : undefined });
    });
  });
}

/** Spawns a program and resolves once a line matching `re` appears on its stdout. */
export function spawnUntil(file, args, re, options = {}) {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'], ...options });
  let out = '';
  const ready = new Promise((resolve, reject) => {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      if (re.test(out)) resolve();
    });
    child.on('exit', (code) => reject(new Error(`${file} exited ${code} before ${re}: ${out}`)));
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, ready, exited, output: () => out };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** All of a stream's bytes, once it ends. */
export async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}

/** `p`, or a rejection after `ms`; the timer is cleared: a pending one would keep node alive after the last check. */
export function withTimeout(p, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}
