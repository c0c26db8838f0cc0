/**
 * Overlay transactions: the only way to change the pool or an instance on a multikernel kernel.
 *
 * The kernel's rules (docs/kernel-interface.md, "Overlays"): the DTBO goes to `overlays/new` in
 * one write; a transaction that fails while applying still returns the full byte count (only
 * `tx_N/status` says `failed`) and keeps whatever it already did until `rmdir tx_N` undoes it; a
 * rollback that fails keeps `tx_N` (status `failed`) for a retry. A future kernel may return the
 * error from write() instead: both are handled.
 *
 * Writers are serialised twice: by this library's flock (`DEFAULT_LOCK_PATH`) and by kerf's lock,
 * a file created with exclusive create at `/var/run/kerf.lock` (`/tmp/kerf.lock` when /var/run
 * cannot be written; kerf's is empty, ours names its writer so that one left by a killed process
 * of ours can be removed), so that kerf and this library do not interleave. Neither lock binds
 * a writer that takes neither, so a transaction is never taken to be "the newest tx_N": it is the
 * one that appeared during the write whose `tx_N/dtbo` holds exactly the bytes written, and the
 * blob carries a unique `mk,resources` tag, so that two writers of the same operations cannot be
 * confused (and `tx_N/resources` tells an operator who made it).
 */
import { compensatingOps, readView, type Compensation, type StateView } from './compensate';
import { MultikernelError, isSystemError } from './errors';
import { DEFAULT_LOCK_PATH, KERF_LOCK_PATHS, MK_OVERLAYS, MK_OVERLAY_NEW, txDir, txIds } from './kernfs';
import { MAX_OVERLAY_WRITE_BYTES, MAX_RESOURCES_DESCRIPTION, type OverlayOp } from './model/overlay';
import { encodeOverlay } from './model/overlay-encode';
import type { System } from './system/system';

export type { TxStatus } from './kernfs';

export interface ApplyOverlayOptions {
  /** free text for the transaction's `mk,resources` tag, after `multikernel-js pid=<pid> tx=<nonce>: ` */
  description?: string;
  /**
   * Aborts the wait for the locks and anything before the write. Once the write is issued the
   * transaction is identified, checked and (when it failed) rolled back first: an applied one is
   * then returned as usual, one that left nothing behind rejects with `signal.reason`.
   */
  signal?: AbortSignal;
  /** this library's flock, taken first (default /run/multikernel.lock) */
  lockPath?: string;
  /** how long to wait for both locks together, ms (default 30000) */
  lockTimeoutMs?: number;
  /**
   * kerf's lock file, taken after the flock: the first of `paths` whose directory can be written
   * (default `KERF_LOCK_PATHS`: /var/run/kerf.lock, then /tmp/kerf.lock, as kerf chooses).
   * `false`: do not take it (a host where kerf never runs).
   */
  kerfLock?: false | { paths?: string[] };
}

export type ApplyOverlayBlobOptions = Omit<ApplyOverlayOptions, 'description'>;

/** An applied transaction of `applyOverlayBlob`. */
export interface TxBlobResult {
  id: number;
  status: 'applied';
}

/** An applied transaction of `applyOverlay`. */
export interface TxResult extends TxBlobResult {
  /** the operations, as given */
  ops: OverlayOp[];
  /** the `mk,resources` tag written, as `tx_N/resources` shows it */
  resources: string;
}

const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
/** kerf retries its lock every 100 ms (src/kerf/runtime.py DeviceTreeManager.lock) */
const KERF_LOCK_RETRY_MS = 100;
/** a lock directory that cannot take the file: try the next path, as kerf falls back to /tmp */
const UNUSABLE_LOCK_DIR = ['EACCES', 'EPERM', 'EROFS', 'ENOENT'];

/** What the transaction concerns, for messages and error details. */
interface Subject {
  ops?: OverlayOp[];
  resources?: string;
  /** what the kernel showed of the ops' resources before the write (op lists only; not for a compensation itself) */
  before?: StateView;
}

type Outcome = { value: TxBlobResult } | { error: unknown; clean: boolean };

/**
 * The `mk,resources` tag of one transaction: `multikernel-js pid=<pid> tx=<8 hex>[: description]`,
 * characters outside printable ASCII replaced by `?`, cut to 255 characters (the kernel's buffer).
 */
export function transactionTag(description?: string): string {
  const base = `multikernel-js pid=${process.pid} tx=${(require('node:crypto') as typeof import('node:crypto')).randomBytes(4).toString('hex')}`;
  const full = description === undefined || description === '' ? base : `${base}: ${description}`;
  return full.replace(/[^\x20-\x7e]/g, '?').slice(0, MAX_RESOURCES_DESCRIPTION);
}

/**
 * Applies `ops` as one overlay transaction and confirms it: the DTBO (with a unique
 * `mk,resources` tag) is written under both locks, its transaction found by content, and its
 * status must read `applied`. Otherwise the transaction is rolled back with `rmdir` (the kernel's
 * only undo) and the call rejects with ERR_MK_TX_FAILED; re-read the kernel state then, since the
 * kernel's undo has limits and reports them only in dmesg.
 */
export async function applyOverlay(system: System, ops: OverlayOp[], options: ApplyOverlayOptions = {}): Promise<TxResult> {
  if (!Array.isArray(ops)) {
    throw new TypeError('applyOverlay takes a list of overlay operations; write a DTBO of your own with applyOverlayBlob');
  }
  const resources = transactionTag(options.description);
  const blob = encodeOverlay(ops, { resources });
  const { id } = await transact(system, blob, options, { ops, resources });
  return { id, status: 'applied', ops, resources };
}

/**
 * As `applyOverlay`, with the operations made by `plan` once the writers' locks are held: for a
 * change chosen from what the kernel shows (free CPUs, an instance's status), so that no writer
 * that takes the locks can change it between the reading and the write. A plan with no
 * operations writes nothing (undefined). Not exported from the package root (Host uses it).
 */
export async function applyPlannedOverlay(system: System, plan: () => Promise<OverlayOp[]>, options: ApplyOverlayOptions = {}): Promise<TxResult | undefined> {
  const resources = transactionTag(options.description);
  let ops: OverlayOp[] = [];
  const written = await withWriterLocks(
    system,
    options,
    async () => {
      ops = await plan();
      if (ops.length === 0) return undefined;
      return writeAndConfirm(system, encodeOverlay(ops, { resources }), options.signal, { ops, resources });
    },
    (r) => (r === undefined ? 'nothing to change' : `tx_${r.id} applied`),
  );
  return written === undefined ? undefined : { id: written.id, status: 'applied', ops, resources };
}

/**
 * As `applyOverlay`, for a DTBO built elsewhere (at most MAX_OVERLAY_WRITE_BYTES). Its
 * transaction is found by content too: two identical blobs written at the same time cannot be
 * told apart (ERR_MK_TX_FAILED naming both), so give each a unique `mk,resources`.
 */
export async function applyOverlayBlob(system: System, dtbo: Uint8Array, options: ApplyOverlayBlobOptions = {}): Promise<TxBlobResult> {
  if (dtbo.length > MAX_OVERLAY_WRITE_BYTES) {
    throw new MultikernelError(
      'ERR_MK_INVALID_SPEC',
      `the DTBO is ${dtbo.length} bytes but overlays/new takes at most ${MAX_OVERLAY_WRITE_BYTES} bytes in one write (kernfs passes one page per write(2); more arrives cut): split it into several overlays`,
      { details: { bytes: dtbo.length, limit: MAX_OVERLAY_WRITE_BYTES } },
    );
  }
  return transact(system, Buffer.from(dtbo), options, {});
}

async function transact(system: System, blob: Buffer, options: ApplyOverlayBlobOptions, subject: Subject): Promise<TxBlobResult> {
  return withWriterLocks(system, options, () => writeAndConfirm(system, blob, options.signal, subject), (r) => `tx_${r.id} applied`);
}

/**
 * Runs `fn` under the locks every writer of the multikernel configuration takes: this library's
 * flock, then kerf's lock file (options as for applyOverlay). Used for overlays and for the
 * baseline write, so that kerf and this library never interleave.
 */
export async function withWriterLocks<T>(system: System, options: ApplyOverlayBlobOptions, fn: () => Promise<T>, done: (value: T) => string): Promise<T> {
  const { signal, lockPath = DEFAULT_LOCK_PATH, lockTimeoutMs = DEFAULT_LOCK_TIMEOUT_MS, kerfLock } = options;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 0) throw new RangeError(`lockTimeoutMs must be a non-negative integer, got ${lockTimeoutMs}`);
  const kerfPaths = kerfLock === false ? [] : (kerfLock?.paths ?? KERF_LOCK_PATHS);
  if (kerfLock !== false && kerfPaths.length === 0) throw new RangeError('kerfLock.paths is empty: give at least one path, or kerfLock: false');
  signal?.throwIfAborted();
  const deadline = Date.now() + lockTimeoutMs;
  const lock = await system.lock(lockPath, { exclusive: true, timeoutMs: lockTimeoutMs, signal });
  let kerfFile: string | undefined;
  let outcome: { value: T } | { error: unknown };
  try {
    if (kerfPaths.length > 0) kerfFile = await takeKerfLock(system, kerfPaths, lockTimeoutMs, deadline, signal);
    outcome = { value: await fn() };
  } catch (error) {
    outcome = { error };
  }
  // Release in reverse order; kerf's file is removed only because this call created it.
  let unlinkError: unknown;
  if (kerfFile !== undefined) {
    try {
      await system.unlink(kerfFile);
    } catch (err) {
      if (!isSystemError(err, 'ENOENT')) unlinkError = err;
    }
  }
  await lock.release();
  if ('error' in outcome) throw outcome.error;
  if (unlinkError !== undefined) {
    throw new MultikernelError(
      'ERR_MK_LOCKED',
      `${done(outcome.value)}, but kerf's lock ${kerfFile} could not be removed afterwards (${describe(unlinkError)}): ` +
        `kerf refuses to run while it exists, so remove it: rm ${kerfFile}`,
      { cause: unlinkError, details: { path: kerfFile, result: outcome.value } },
    );
  }
  return outcome.value;
}

// ------------------------------------------------------------------ kerf's lock

/**
 * Who created a kerf lock file, written into it by this library (kerf writes nothing and reads
 * nothing of it: kerf:src/kerf/runtime.py DeviceTreeManager.lock only creates and removes it):
 * `multikernel pid=PID start=STARTTIME boot=BOOT_ID`, STARTTIME being field 22 of /proc/PID/stat.
 * With it a later writer can tell a file left by a killed process of ours (SIGKILL, a crash, a
 * power cut of /tmp) from one a live process holds, and remove it instead of waiting for an
 * operator.
 */
const OWNER = /^multikernel pid=(\d+) start=(\d+) boot=(\S+)\n$/;

/** The start time (clock ticks after boot) of process `pid`, or undefined when it does not run. */
async function startTime(system: System, pid: number | 'self'): Promise<string | undefined> {
  try {
    const stat = (await system.readFile(`/proc/${pid}/stat`)).toString('latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch (err) {
    if (isSystemError(err, 'ENOENT', 'ESRCH')) return undefined;
    throw err;
  }
}

async function bootId(system: System): Promise<string> {
  return (await system.readFile('/proc/sys/kernel/random/boot_id')).toString('latin1').trim();
}

/** Owner records read once per System: this process's start time and the boot id do not change. */
const ownerRecords = new WeakMap<System, Buffer>();

/** This process's owner record, or undefined when /proc cannot tell (then the file is left empty, as kerf's). */
async function ownerRecord(system: System): Promise<Buffer | undefined> {
  const known = ownerRecords.get(system);
  if (known !== undefined) return known;
  try {
    const start = await startTime(system, 'self');
    if (start === undefined) return undefined;
    const record = Buffer.from(`multikernel pid=${process.pid} start=${start} boot=${await bootId(system)}\n`);
    ownerRecords.set(system, record);
    return record;
  } catch {
    return undefined;
  }
}

/**
 * Removes kerf's lock file at `path` when this library wrote it and its writer is gone: another
 * boot, or no process with that pid and start time. Never a file kerf made (it is empty), nor one
 * whose writer still runs. Safe against kerf: kerf cannot create the file while it exists and
 * never removes one it did not create; against other processes of ours: they take our flock first.
 */
async function removeIfStale(system: System, path: string): Promise<boolean> {
  let m: RegExpExecArray | null;
  try {
    m = OWNER.exec((await system.readFile(path)).toString('latin1'));
  } catch {
    return false; // gone meanwhile (the create is retried) or unreadable
  }
  if (m === null) return false;
  const gone = m[3] !== (await bootId(system).catch(() => m![3])) || (await startTime(system, Number(m[1])).catch(() => m![2])) !== m[2];
  if (!gone) return false;
  await system.unlink(path).catch((err: unknown) => {
    if (!isSystemError(err, 'ENOENT')) throw err;
  });
  return true;
}

/**
 * Creates kerf's lock file (the first usable path) with this process's owner record, retrying every
 * 100 ms while it exists; a file our own killed writer left is removed at once.
 */
async function takeKerfLock(system: System, paths: readonly string[], timeoutMs: number, deadline: number, signal: AbortSignal | undefined): Promise<string> {
  const owner = await ownerRecord(system);
  for (;;) {
    signal?.throwIfAborted();
    let held: string | undefined;
    let unusable: unknown;
    for (const path of paths) {
      try {
        await system.createExclusive(path, owner);
        return path;
      } catch (err) {
        if (isSystemError(err, 'EEXIST')) {
          held = path;
          break;
        }
        if (!isSystemError(err, ...UNUSABLE_LOCK_DIR)) throw err;
        unusable = err;
      }
    }
    // No directory takes the file: the errno of the last one says why (kerf would fail too).
    if (held === undefined) throw unusable;
    if (await removeIfStale(system, held)) continue;
    const left = deadline - Date.now();
    if (left <= 0) throw await kerfLockedError(system, held, timeoutMs);
    await sleep(Math.min(KERF_LOCK_RETRY_MS, left), signal);
  }
}

async function kerfLockedError(system: System, path: string, timeoutMs: number): Promise<MultikernelError> {
  let ageMs: number | undefined;
  let since: string;
  try {
    const { mtimeMs } = await system.stat(path);
    ageMs = Math.max(0, Date.now() - mtimeMs);
    since = `since ${new Date(mtimeMs).toISOString()} (${(ageMs / 1000).toFixed(1)} s)`;
  } catch (err) {
    since = `(its age could not be read: ${describe(err)})`;
  }
  return new MultikernelError(
    'ERR_MK_LOCKED',
    `kerf's lock ${path} exists ${since} and was not released within ${timeoutMs} ms: a kerf command holds it, ` +
      'or a kerf that was killed left it behind. kerf writes no pid into it, so whether it is stale cannot be proven, ' +
      `and this library removes only those its own killed processes left. Check that no kerf runs (pgrep -f kerf), then remove it (rm ${path}) and try again`,
    { details: { path, ageMs } },
  );
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// ------------------------------------------------------------------ the transaction

async function writeAndConfirm(system: System, blob: Buffer, signal: AbortSignal | undefined, subject: Subject, compensate = true): Promise<TxBlobResult> {
  if (compensate && subject.ops) subject.before = await readView(system, subject.ops);
  const before = new Set(txIds(await system.readdir(MK_OVERLAYS)));
  // The last point where an abort leaves nothing behind.
  signal?.throwIfAborted();
  let writeError: unknown;
  try {
    await system.writeFile(MK_OVERLAY_NEW, blob);
  } catch (err) {
    writeError = err;
  }
  // From here on an abort waits until the transaction is identified, checked and, if it failed,
  // rolled back: a half-made transaction must not stay because the caller lost interest.
  const outcome = await settle(system, blob, before, writeError, subject);
  // Applied: the change is made, and an abort cannot unmake it, so it is reported.
  if ('value' in outcome) return outcome.value;
  if (signal?.aborted && outcome.clean) throw signal.reason;
  throw outcome.error;
}

async function settle(system: System, blob: Buffer, before: Set<number>, writeError: unknown, subject: Subject): Promise<Outcome> {
  const found = await identify(system, blob, before, writeError, subject);
  if (typeof found !== 'number') return found;
  let status: string | undefined;
  let statusError: unknown;
  try {
    status = (await system.readFile(`${txDir(found)}/status`)).toString('latin1').replace(/\n$/, '');
  } catch (err) {
    statusError = err;
  }
  if (status === 'applied' && writeError === undefined) return { value: { id: found, status: 'applied' } };
  return rollBack(system, found, { status, statusError, writeError }, subject);
}

/** The id of the transaction that holds `blob`, among those that appeared during the write. */
async function identify(system: System, blob: Buffer, before: Set<number>, writeError: unknown, subject: Subject): Promise<number | Outcome> {
  const lookFor = subject.resources === undefined ? '' : ` (look for the tx_N whose resources reads "${subject.resources}")`;
  let after: number[];
  try {
    after = txIds(await system.readdir(MK_OVERLAYS));
  } catch (err) {
    const message =
      `the overlay was written, but ${MK_OVERLAYS} could not be listed afterwards (${describe(err)}), so its transaction ` +
      `is unknown${lookFor}: check its status, and rmdir it if it failed`;
    return { clean: false, error: new MultikernelError('ERR_MK_TX_FAILED', message, { cause: err, details: { ops: subject.ops, resources: subject.resources } }) };
  }
  const appeared = after.filter((id) => !before.has(id));
  const mine: number[] = [];
  const unreadable: number[] = [];
  let readError: unknown;
  for (const id of appeared) {
    try {
      if ((await system.readFile(`${txDir(id)}/dtbo`)).equals(blob)) mine.push(id);
    } catch (err) {
      unreadable.push(id);
      readError ??= err;
    }
  }
  if (mine.length === 1) return mine[0]!;
  const details = { ops: subject.ops, resources: subject.resources };
  if (mine.length > 1) {
    const message =
      `${names(mine)} all hold the overlay just written, byte for byte, so which one this call made cannot be told: ` +
      'none was checked or rolled back. Read their status and rmdir those that must not stay; a unique mk,resources ' +
      'in each blob prevents this (applyOverlay adds one)';
    return { clean: false, error: new MultikernelError('ERR_MK_TX_FAILED', message, { details: { ...details, txIds: mine } }) };
  }
  if (unreadable.length > 0) {
    const message =
      `the dtbo of ${names(unreadable)}, which appeared during the write, could not be read (${describe(readError)}), so ` +
      `whether the overlay just written made it cannot be told${lookFor}: check its status, and rmdir it if it failed`;
    return { clean: false, error: new MultikernelError('ERR_MK_TX_FAILED', message, { cause: readError, details: { ...details, txIds: unreadable } }) };
  }
  // Nothing was created: the kernel refused the blob up front (EINVAL, ENOMEM, ...).
  if (writeError !== undefined) return { clean: true, error: writeError };
  const others = appeared.length === 0 ? '' : ` (${names(appeared)} appeared meanwhile, from other writers)`;
  return { clean: true, error: new MultikernelError('ERR_MK_TX_FAILED', `the overlay write created no transaction in ${MK_OVERLAYS}${others}`, { details }) };
}

/** A transaction that did not apply: its reason if the kernel gives one, then rmdir. */
async function rollBack(
  system: System,
  id: number,
  seen: { status: string | undefined; statusError: unknown; writeError: unknown },
  subject: Subject,
): Promise<Outcome> {
  const dir = txDir(id);
  const reason = await readReason(system, id);
  let rolledBack = false;
  let rollbackError: unknown;
  try {
    await system.rmdir(dir);
    rolledBack = true;
  } catch (err) {
    rollbackError = err;
  }
  // What is still in effect, from what the kernel shows now against what it showed before.
  const comp = await compensate(system, id, subject, rolledBack);
  let undo: string;
  if (rolledBack) {
    undo = `It was rolled back (rmdir ${dir}); ${comp.summary}`;
  } else {
    // What the kernel shows now, not what this call expects.
    const kept = await system.readdir(MK_OVERLAYS).then((entries) => txIds(entries).includes(id), () => undefined);
    const unconfirmed = kept === undefined ? `, though ${MK_OVERLAYS} could not be listed to confirm it` : '';
    undo =
      kept === false
        ? `Rolling it back failed (${describe(rollbackError)}) and ${dir} is gone now (another process removed it?); ${comp.summary}`
        : comp.clean
          ? `Rolling it back failed (${describe(rollbackError)}), so the kernel keeps ${dir} with status "failed"${unconfirmed}; ${comp.summary}, ` +
            'so it is only a record (the kernel\'s rollback runs the inverse of every operation, also of those that never ran, ' +
            `which can fail for good): rmdir ${dir} retries`
          : `Rolling it back failed too (${describe(rollbackError)}): the kernel keeps ${dir} with status "failed" for a retry ` +
            `(overlay.c mk_overlay_rmdir)${unconfirmed}; ${comp.summary}. After reading dmesg, run: rmdir ${dir}`;
  }
  const why =
    seen.writeError !== undefined
      ? `the write failed with ${describe(seen.writeError)}`
      : seen.statusError !== undefined
        ? `its status could not be read (${describe(seen.statusError)}), and an unreadable status is never taken for success`
        : `its status is "${seen.status}"`;
  const because = reason === undefined ? 'see dmesg for the kernel\'s reason' : `the kernel's reason: ${reason}`;
  const error = new MultikernelError('ERR_MK_TX_FAILED', `overlay transaction tx_${id} did not apply: ${why}; ${because}. ${undo}`, {
    cause: seen.writeError ?? seen.statusError ?? rollbackError,
    details: {
      txId: id,
      ops: subject.ops,
      resources: subject.resources,
      status: seen.status,
      reason,
      rolledBack,
      ...(rollbackError !== undefined && { rollbackError }),
      inEffect: !comp.clean,
      ...(comp.txId !== undefined && { compensation: { txId: comp.txId, ops: comp.ops } }),
      ...(comp.irreversible.length > 0 && { irreversible: comp.irreversible }),
      ...(comp.error !== undefined && { compensationError: comp.error }),
    },
  });
  // an abort may hide only a transaction that left nothing, not even its record
  return { error, clean: rolledBack && comp.clean };
}

/**
 * Undoes what the failed transaction `id` left in effect with one more transaction (see
 * lib/compensate.ts). Without a view from before the write (a raw blob), the kernel's rollback
 * is all there is: clean when rmdir worked.
 */
async function compensate(
  system: System,
  id: number,
  subject: Subject,
  rolledBack: boolean,
): Promise<{ clean: boolean; summary: string; irreversible: string[]; txId?: number; ops?: OverlayOp[]; error?: unknown }> {
  if (subject.ops === undefined || subject.before === undefined) {
    return rolledBack
      ? { clean: true, summary: 'the kernel\'s undo has limits (an instance-remove or a pool memory-add is not undone): re-read the pool and instances', irreversible: [] }
      : { clean: false, summary: 're-read the pool and instances', irreversible: [] };
  }
  let comp: Compensation;
  try {
    comp = compensatingOps(subject.ops, subject.before, await readView(system, subject.ops));
  } catch (err) {
    return { clean: false, summary: `what it left in effect could not be read (${describe(err)}): re-read the pool and instances`, irreversible: [], error: err };
  }
  const cannot = comp.irreversible.length > 0 ? ` (${comp.irreversible.join('; ')})` : '';
  if (comp.ops.length === 0) {
    return { clean: comp.irreversible.length === 0, summary: `nothing of it is in effect${cannot}`, irreversible: comp.irreversible };
  }
  const resources = transactionTag(`undo tx_${id}`);
  try {
    const undone = await writeAndConfirm(system, encodeOverlay(comp.ops, { resources }), undefined, { ops: comp.ops, resources }, false);
    return {
      clean: comp.irreversible.length === 0,
      summary: `what it left in effect was undone by tx_${undone.id} (${comp.ops.map((o) => o.op).join(', ')})${cannot}`,
      irreversible: comp.irreversible,
      txId: undone.id,
      ops: comp.ops,
    };
  } catch (err) {
    return {
      clean: false,
      summary: `it left ${comp.ops.map((o) => o.op).join(', ')} in effect, and undoing that failed too (${describe(err)}): re-read the pool and instances`,
      irreversible: comp.irreversible,
      ops: comp.ops,
      error: err,
    };
  }
}

/** `tx_N/reason`, which no public kernel has yet (kmorph reads it when it exists): feature-detected. */
async function readReason(system: System, id: number): Promise<string | undefined> {
  try {
    const text = (await system.readFile(`${txDir(id)}/reason`)).toString('utf8').trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

function names(ids: number[]): string {
  return ids.map((id) => `tx_${id}`).join(', ');
}

/** The errno code of a system error, the code of a library error, or the message. */
function describe(err: unknown): string {
  if (isSystemError(err) || err instanceof MultikernelError) return err.code;
  return err instanceof Error ? err.message : String(err);
}
