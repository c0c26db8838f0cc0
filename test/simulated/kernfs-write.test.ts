/**
 * One write(2) to overlays/new reaches the kernel's handler with at most PAGE_SIZE bytes: the file
 * has no atomic_write_len, so kernfs_fop_write_iter cuts the write to 4096 bytes (a short write)
 * and mk_overlay_new_write works on what it got (docs/kernel-interface.md, "Overlays").
 */
import t from 'tap';
import { MultikernelError } from '../../lib/errors';
import { dtbo, fragment, instanceCreate } from '../contract/suite';
import { lastTx, M, MiB, setup } from './helpers';

const NEW = `${M}/overlays/new`;

t.test('a write longer than 4096 bytes is a short write of 4096', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const blob = dtbo([fragment('0', '/instances', [instanceCreate('padded', { memoryBytes: 64 * MiB })])]);
  const padded = Buffer.concat([blob, Buffer.alloc(5000 - blob.length, 0xee)]);
  const err = await sim.writeFile(NEW, padded).catch((e: unknown) => e);
  t.ok(err instanceof MultikernelError, 'System.writeFile reports the short write');
  t.match(err, { code: 'ERR_MK_SHORT_WRITE', details: { path: NEW, written: 4096, expected: 5000 } });
  const tx = await lastTx(sim);
  t.equal(tx.status, 'applied', 'the handler saw a whole DTBO in the first page (totalsize is not compared with the count)');
  t.same(await sim.readFile(`${M}/overlays/tx_${tx.id}/dtbo`), padded.subarray(0, 4096), 'tx_N/dtbo holds the 4096 bytes the handler got');
  t.same(await sim.readdir(`${M}/instances`), ['padded']);
});

t.test('a DTBO cut at 4096 bytes passes the header check and fails as a transaction', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const cpus = Array.from({ length: 600 }, (_, i) => i + 1);
  const big = dtbo([fragment('0', '/instances', [instanceCreate('big', { memoryBytes: 64 * MiB, cpus })])], 'tagged');
  t.ok(big.length > 4096, `a ${big.length}-byte DTBO`);
  const err = await sim.writeFile(NEW, big).catch((e: unknown) => e);
  t.match(err, { code: 'ERR_MK_SHORT_WRITE', details: { written: 4096, expected: big.length } });
  const tx = await lastTx(sim);
  t.equal(tx.status, 'failed', 'libfdt reads past the 4096 bytes it was given: nothing usable');
  t.equal((await sim.readFile(`${M}/overlays/tx_${tx.id}/dtbo`)).length, 4096);
  t.equal((await sim.readFile(`${M}/overlays/tx_${tx.id}/instance`)).toString(), 'unknown\n');
  t.match((await sim.dmesg()).join('\n'), `Failed to apply overlay transaction ${tx.id}: -22`);
  t.same(await sim.readdir(`${M}/instances`), [], 'nothing was created');
  await t.rejects(sim.rmdir(`${M}/overlays/tx_${tx.id}`), { code: 'EINVAL', syscall: 'rmdir' }, 'its rollback finds no usable fragment either');
  t.match((await sim.dmesg()).slice(-2), [`Rollback tx${tx.id}: no usable fragment@N node: -22`, `Failed to rollback overlay transaction ${tx.id}: -22`]);
});

t.test('the first 4096 bytes decide the header check: EFBIG cannot happen', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  await t.rejects(sim.writeFile(NEW, Buffer.alloc(1024 * 1024 + 1)), { code: 'EINVAL', syscall: 'write' }, 'zeros: bad magic in the first page');
  t.notOk((await sim.readdir(`${M}/overlays`)).some((n) => n.startsWith('tx_')), 'no transaction');
});
