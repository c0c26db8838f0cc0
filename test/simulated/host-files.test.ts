/**
 * The simulated host's ordinary files: lock files under /run, /var/run and /tmp, created with
 * createExclusive and removed with unlink (how kerf takes its lock), in memory or shared through a
 * state directory; read-only host directories; and the optional tx_N/reason file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { SimulatedSystem } from '../../lib/system/simulated';
import { StateDir } from '../../lib/system/simulated/state-dir';
import { initialState } from '../../lib/system/simulated/state';
import { dtbo, fragment, instanceCreate } from '../contract/suite';
import { M, MiB, lastTx, overlay, setup } from './helpers';

t.test('createExclusive, stat, readdir and unlink of host files, in memory', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  t.same(await sim.readdir('/var/run'), []);
  t.same(await sim.stat('/tmp'), { type: 'directory', mode: 0o1777, size: 0, mtimeMs: 0 });
  t.same(await sim.stat('/run'), { type: 'directory', mode: 0o755, size: 0, mtimeMs: 0 });
  const t0 = Date.now();
  await sim.createExclusive('/var/run/kerf.lock');
  const st = await sim.stat('/var/run/kerf.lock');
  t.match(st, { type: 'file', mode: 0o644, size: 0 });
  t.ok(st.mtimeMs >= t0 && st.mtimeMs <= Date.now(), 'mtime: when it was created');
  t.same(await sim.readdir('/var/run/'), ['kerf.lock']);
  t.same(await sim.readdir('/run'), [], '/var/run and /run are kept apart');
  t.equal((await sim.readFile('/var/run/kerf.lock')).length, 0, 'empty');
  await t.rejects(sim.createExclusive('/var/run/kerf.lock'), { code: 'EEXIST', syscall: 'open', path: '/var/run/kerf.lock' });
  await t.rejects(sim.writeFile('/var/run/kerf.lock', Buffer.from('x')), { code: 'EACCES' }, 'host files are not written to (not modelled)');
  await t.rejects(sim.createExclusive('/tmp'), { code: 'EEXIST' }, 'an existing directory');
  await t.rejects(sim.createExclusive('/nope/kerf.lock'), { code: 'ENOENT', syscall: 'open' }, 'no such directory');
  await t.rejects(sim.createExclusive('/proc/cpuinfo/x'), { code: 'ENOTDIR' });
  await t.rejects(sim.createExclusive('/sys/fs/x'), { code: 'EACCES' }, 'a directory without ->create');
  await t.rejects(sim.createExclusive('/sys/fs/multikernel/x'), { code: 'EACCES' });
  await sim.mountMultikernel();
  await t.rejects(sim.unlink(`${M}/device_tree`), { code: 'EPERM', syscall: 'unlink' }, 'kernfs has no ->unlink');
  await t.rejects(sim.unlink('/proc/cpuinfo'), { code: 'EACCES' });
  await t.rejects(sim.unlink('/tmp'), { code: 'EISDIR' });
  await sim.unlink('/var/run/kerf.lock');
  // with bytes, read back; empty bytes: an empty file
  await sim.createExclusive('/var/run/kerf.lock', Buffer.from('multikernel pid=1 start=2 boot=x\n'));
  t.equal((await sim.readFile('/var/run/kerf.lock')).toString(), 'multikernel pid=1 start=2 boot=x\n');
  await sim.unlink('/var/run/kerf.lock');
  await sim.createExclusive('/var/run/kerf.lock', new Uint8Array(0));
  t.equal((await sim.readFile('/var/run/kerf.lock')).length, 0);
  await sim.unlink('/var/run/kerf.lock');
  // this machine's processes, as they are: the library reads them to judge a lock file's writer
  t.match((await sim.readFile('/proc/self/stat')).toString(), new RegExp(`^${process.pid} \\(`));
  t.equal((await sim.readFile(`/proc/${process.pid}/stat`)).toString().split(' ')[0], String(process.pid));
  t.match((await sim.readFile('/proc/sys/kernel/random/boot_id')).toString(), /^[0-9a-f-]{36}\n$/);
  await t.rejects(sim.readFile('/proc/999999999/stat'), { code: 'ENOENT' }, 'no such process');
  await t.rejects(sim.unlink('/var/run/kerf.lock'), { code: 'ENOENT', syscall: 'unlink' });
  await t.rejects(sim.stat('/var/run/kerf.lock'), { code: 'ENOENT' });
  t.same(await sim.readdir('/var/run'), []);
});

t.test('host directories exist on a stock kernel too', async (t) => {
  const sim = new SimulatedSystem({ stockKernel: true });
  t.teardown(() => sim.dispose());
  await sim.createExclusive('/tmp/kerf.lock');
  t.same(await sim.readdir('/tmp'), ['kerf.lock']);
});

t.test('readOnlyHostDirs: createExclusive and unlink there fail EACCES', async (t) => {
  const sim = new SimulatedSystem({ readOnlyHostDirs: ['/var/run/'] });
  t.teardown(() => sim.dispose());
  await t.rejects(sim.createExclusive('/var/run/kerf.lock'), { code: 'EACCES', syscall: 'open', path: '/var/run/kerf.lock' });
  await t.rejects(sim.createExclusive('/tmp/../var/run/kerf.lock'), { code: 'EACCES' }, 'the path is normalised');
  await sim.createExclusive('/tmp/kerf.lock');
  t.same(await sim.readdir('/var/run'), [], 'readable');
  t.same(await sim.readdir('/tmp'), ['kerf.lock']);
  await sim.unlink('/tmp/kerf.lock');
});

t.test('host files are shared through a state directory; a later process sees them', async (t) => {
  const stateDir = path.join(t.testdir(), 'state');
  const readOnly = new SimulatedSystem({ stateDir, readOnlyHostDirs: ['/tmp'] });
  const other = new SimulatedSystem({ stateDir });
  t.teardown(() => Promise.all([readOnly.dispose(), other.dispose()]));
  await other.createExclusive('/tmp/kerf.lock');
  t.same(await readOnly.readdir('/tmp'), ['kerf.lock']);
  await t.rejects(readOnly.createExclusive('/tmp/kerf.lock'), { code: 'EEXIST' }, 'exists: EEXIST before EACCES');
  await t.rejects(readOnly.unlink('/tmp/kerf.lock'), { code: 'EACCES' }, 'not removable from a read-only directory');
  t.ok(JSON.parse(fs.readFileSync(path.join(stateDir, 'state.json'), 'utf8')).hostFiles['/tmp/kerf.lock'], 'kept in state.json');
  await other.unlink('/tmp/kerf.lock');
  t.same(await readOnly.readdir('/tmp'), []);
});

t.test('a version-1 state written before host files existed is read as having none', async (t) => {
  const dir = path.join(t.testdir(), 'state');
  const old: Record<string, unknown> = { ...initialState({ cpus: [{ apicId: 0, node: 0 }], memoryBytes: 1024 * MiB, numaNodes: 1 }) };
  delete old.hostFiles;
  new StateDir(dir).save(old as never);
  const sim = new SimulatedSystem({ stateDir: dir });
  t.teardown(() => sim.dispose());
  t.same(await sim.readdir('/var/run'), []);
  await sim.createExclusive('/var/run/kerf.lock');
  t.same(await sim.readdir('/var/run'), ['kerf.lock']);
});

t.test('fault steps create and unlink', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  sim.faults.add({ op: 'create', path: '/var/run/kerf.lock', action: { errno: 'EROFS' }, times: 1 });
  await t.rejects(sim.createExclusive('/var/run/kerf.lock'), { code: 'EROFS', syscall: 'open', path: '/var/run/kerf.lock' });
  await sim.createExclusive('/var/run/kerf.lock');
  sim.faults.add({ op: 'unlink', action: { errno: 'EIO' }, times: 1 });
  await t.rejects(sim.unlink('/var/run/kerf.lock'), { code: 'EIO', syscall: 'unlink' });
  await sim.unlink('/var/run/kerf.lock');
});

const failing = dtbo([fragment('0', '/instances/nope', [])]);
const fine = dtbo([fragment('0', '/instances', [instanceCreate('x', { memoryBytes: 64 * MiB })])]);

t.test('txReason: tx_N/reason holds the errno of the failing operation', async (t) => {
  const sim = await setup({ txReason: true });
  t.teardown(() => sim.dispose());
  const bad = await overlay(sim, failing);
  t.equal(bad.status, 'failed');
  t.same(await sim.readdir(`${M}/overlays/tx_${bad.id}`), ['id', 'status', 'instance', 'resources', 'dtbo', 'reason']);
  t.equal((await sim.readFile(`${M}/overlays/tx_${bad.id}/reason`)).toString(), 'ENOENT: no such file or directory\n');
  t.match(await sim.stat(`${M}/overlays/tx_${bad.id}/reason`), { type: 'file', mode: 0o444 });
  const good = await overlay(sim, fine);
  t.equal(good.status, 'applied');
  t.equal((await sim.readFile(`${M}/overlays/tx_${good.id}/reason`)).toString(), '\n', 'an empty line when nothing failed');
  sim.faults.add({ op: 'overlay.apply', action: { halfway: true }, times: 1 });
  await sim.writeFile(`${M}/overlays/new`, dtbo([fragment('0', '/instances', [instanceCreate('y', { memoryBytes: 64 * MiB })])]));
  t.equal((await sim.readFile(`${M}/overlays/tx_${(await lastTx(sim)).id}/reason`)).toString(), 'EIO: i/o error\n', 'halfway: EIO');
});

t.test('without txReason (the default, as every public overlay.c) there is no reason file', async (t) => {
  const sim = await setup();
  t.teardown(() => sim.dispose());
  const bad = await overlay(sim, failing);
  t.same(await sim.readdir(`${M}/overlays/tx_${bad.id}`), ['id', 'status', 'instance', 'resources', 'dtbo']);
  await t.rejects(sim.readFile(`${M}/overlays/tx_${bad.id}/reason`), { code: 'ENOENT' });
});
