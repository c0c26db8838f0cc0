/**
 * Overlay transactions: the only way to change the pool or an instance on a multikernel kernel.
 *
 * The kernel's rules (docs/kernel-interface.md, "Overlays"): the DTBO goes to `overlays/new` in
 * one write; a transaction that fails while applying still returns the full byte count (only
 * `tx_N/status` says `failed`) and keeps whatever it already did until `rmdir tx_N` undoes it.
 * Transaction ids are monotonic, so under our own lock the newest `tx_N` after the write is ours.
 * A future kernel may return the error from write() instead: both are handled.
 */
import { MultikernelError, isSystemError } from './errors';
import { DEFAULT_LOCK_PATH, MK_OVERLAYS, MK_OVERLAY_NEW, txDir, txIds } from './kernfs';
import type { System } from './system/system';

export type { TxStatus } from './kernfs';

export interface TxResult {
  id: number;
  status: 'applied';
}

export interface ApplyOverlayOptions {
  /** flock taken around write + lookup (default /run/multikernel.lock) */
  lockPath?: string;
  signal?: AbortSignal;
  /** how long to wait for other writers' locks, ms (default 30000) */
  lockTimeoutMs?: number;
}

async function readStatus(system: System, id: number): Promise<string> {
  return (await system.readFile(`${txDir(id)}/status`)).toString('latin1').trim();
}

async function newestTx(system: System): Promise<number | undefined> {
  return txIds(await system.readdir(MK_OVERLAYS)).pop();
}

/**
 * Writes one overlay blob and confirms it applied. On `failed`, rolls the transaction back with
 * `rmdir` (the kernel's only undo) and rejects with ERR_MK_TX_FAILED; the caller must re-read
 * the kernel state, since the kernel's undo has limits and reports them only in dmesg.
 */
export async function applyOverlay(system: System, dtbo: Uint8Array, options: ApplyOverlayOptions = {}): Promise<TxResult> {
  const lock = await system.lock(options.lockPath ?? DEFAULT_LOCK_PATH, {
    exclusive: true,
    timeoutMs: options.lockTimeoutMs ?? 30_000,
    signal: options.signal,
  });
  try {
    const before = await newestTx(system);
    let writeError: unknown;
    try {
      await system.writeFile(MK_OVERLAY_NEW, dtbo);
    } catch (err) {
      writeError = err;
    }
    const after = await newestTx(system);
    const id = after !== undefined && after !== before ? after : undefined;
    if (id === undefined) {
      // Nothing was created: the kernel refused the blob up front (EINVAL, EFBIG, ENOMEM).
      throw writeError ?? new MultikernelError('ERR_MK_TX_FAILED', 'the overlay write created no transaction in overlays/', {});
    }
    const status = await readStatus(system, id);
    if (status === 'applied' && writeError === undefined) return { id, status };
    let rolledBack = false;
    let rollbackError: unknown;
    try {
      await system.rmdir(txDir(id));
      rolledBack = true;
    } catch (err) {
      rollbackError = err;
    }
    const why = writeError !== undefined && isSystemError(writeError) ? `write failed with ${writeError.code}` : `status is "${status}"`;
    throw new MultikernelError(
      'ERR_MK_TX_FAILED',
      `overlay transaction tx_${id} did not apply (${why}); ` +
        (rolledBack
          ? 'it was rolled back with rmdir: check dmesg for the kernel\'s reason and re-read the pool and instances'
          : `rolling it back failed too: remove ${txDir(id)} by hand after checking dmesg`),
      { cause: writeError ?? rollbackError, details: { txId: id, status, rolledBack } },
    );
  } finally {
    await lock.release();
  }
}
