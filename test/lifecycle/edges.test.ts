// The lifecycle API's edges: kernels that answer oddly, other writers racing us, hosts seen by a
// later process, aborts at every entry point, and the default (real) kernel door.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { Host, Instance, type InstanceStatus } from '../../lib';
import { systemError } from '../../lib/errors';
import { candidateOf } from '../../lib/select';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';
import { wrap } from './helpers';
import type { VsockStream } from '../../lib/system/system';
import { pciIds } from '../../lib/readback';
import { encodeBaseline } from '../../lib/model';

const kernel = placeholderImage('x86_64');
const lockPath = path.join(os.tmpdir(), `mk-edges-test-${process.pid}.lock`);


async function withPool(options: ConstructorParameters<typeof SimulatedSystem>[0] = {}) {
  const system = new SimulatedSystem({ haltTimeoutMs: 200, resourceAckTimeoutMs: 200, ...options });
  const host = await Host.open({ system, lockPath });
  await host.pool.init({ cpus: 4, memory: '2G', devices: ['0000:00:04.0'] });
  return { system, host };
}

t.test('Host.open() without a system speaks to this machine\'s kernel, which has no multikernel support', async (t) => {
  if (fs.existsSync('/sys/fs/multikernel') || fs.existsSync('/proc/kimage')) return t.plan(0, 'this machine runs a multikernel kernel');
  // only reads: /proc/filesystems, stat of /sys/fs/multikernel and /proc/kimage
  await t.rejects(Host.open(), { code: 'ERR_MK_NO_SUPPORT', message: /no multikernel support.*CONFIG_MULTIKERNEL/ });
});

t.test('topology, kerfLock: false, and a host opened after the pool was made', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  const topology = await host.topology();
  t.equal(topology.arch, 'x86_64');
  t.notOk(topology.cpus.some((c) => c.physicalId === (host.pool && -2)), 'a topology of the host');
  let kerfFiles = 0;
  const counting = wrap(system, {
    createExclusive: async (p: string) => {
      kerfFiles += 1;
      return system.createExclusive(p);
    },
  });
  const quiet = await Host.open({ system: counting, lockPath, kerfLock: false });
  const later = (await quiet.pool.snapshot()).cpus;
  t.ok(later.every((c) => c.logical === undefined), 'a pooled CPU departed from the host before this Host opened: its logical number is unknown');
  const a = await quiet.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  await a.delete();
  t.equal(kerfFiles, 0, 'kerf\'s lock file was never created');
  await host.createInstance({ name: 'b', cpus: 1, memory: '128M' });
  t.ok(kerfFiles === 0, 'the other host takes kerf\'s lock through its own system');
});

t.test('an instance deleted between the listing and the read is left out', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  const racing = wrap(system, { readdir: async (p: string) => [...(await system.readdir(p)), ...(p.endsWith('/instances') ? ['ghost'] : [])] });
  const h = await Host.open({ system: racing, lockPath });
  t.same((await h.instances()).map((i) => i.name), ['a']);
});

t.test('aborted signals stop every entry point before the kernel is touched', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  const signal = AbortSignal.abort(new Error('aborted'));
  await t.rejects(host.createInstance({ name: 'x', cpus: 1, memory: '1M' }, { signal }), { message: 'aborted' });
  await t.rejects(host.pool.init({ cpus: 1, memory: '1G' }, { signal }), { message: 'aborted' });
  await t.rejects(host.pool.grow({ cpus: 1 }, { signal }), { message: 'aborted' });
  await t.rejects(host.pool.shrink({ cpus: 1 }, { signal }), { message: 'aborted' });
  await t.rejects(host.pool.teardown({ signal }), { message: 'aborted' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  await a.load(kernel);
  await a.start();
  await t.rejects(host.detectVsockReset({ signal }), { message: 'aborted' });
  t.equal(system.faults.size, 0);
});

t.test('detectVsockReset skips instances that do not run, and closes a connection someone accepted', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  await host.createInstance({ name: 'idle', cpus: 1, memory: '128M' });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  await a.load(kernel);
  await a.start();
  const stream = new PassThrough() as unknown as VsockStream;
  const accepting = wrap(system, { vsockConnect: async () => stream });
  const h = await Host.open({ system: accepting, lockPath });
  t.equal(await h.detectVsockReset({ signal: new AbortController().signal }), undefined, 'an answer is no evidence either way');
  t.ok(stream.destroyed, 'the connection was closed');
});

t.test('odd kernel answers: an unknown status, a status that did not change, a removal that did not take', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  const failed = wrap(system, { readFile: async (p: string) => (p.endsWith('/instances/a/status') ? Buffer.from('failed\n') : system.readFile(p)) });
  const odd = await (await Host.open({ system: failed, lockPath })).instance('a');
  await t.rejects(odd.start(), { code: 'ERR_MK_INSTANCE_NOT_LOADED', message: /reports the status "failed"/ });
  await a.load(kernel);
  const deaf = wrap(system, { reboot: async () => undefined });
  const b = await (await Host.open({ system: deaf, lockPath })).instance('a');
  await t.rejects(b.start(), { code: 'ERR_MK_TX_FAILED', message: /after start, instance "a" is "loaded", not "active"/ });
  await a.unload();
  const stuck = new Instance(
    {
      system,
      arch: 'x86_64',
      applyOverlay: async () => ({ id: 0, status: 'applied', ops: [], resources: '' }),
      applyPlannedOverlay: async () => Promise.reject(new Error('unused')),
      freePoolCpus: async () => [],
      requested: () => undefined,
    },
    'a',
    a.id,
  );
  await t.rejects(stuck.delete(), { code: 'ERR_MK_TX_FAILED', message: /still listed after its removal applied/ });
  const weird = wrap(system, { kexecFileLoad: async () => Promise.reject(new Error('not a system error')) });
  const c = await (await Host.open({ system: weird, lockPath })).instance('a');
  await t.rejects(c.load(kernel), { message: 'not a system error' });
});

t.test('a host of another architecture: images go to the kernel as given', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  const unused = async (): Promise<never> => Promise.reject(new Error('unused'));
  const riscv = new Instance({ system, arch: 'riscv64', applyOverlay: unused, applyPlannedOverlay: unused, freePoolCpus: async () => [], requested: () => undefined }, 'a', a.id);
  await riscv.load(kernel);
  t.equal(await riscv.status(), 'loaded', 'no conversion: the kernel\'s loader took it');
  await riscv.unload();
  await t.rejects(riscv.load(Buffer.from('not a kernel at all')), { code: 'ERR_MK_IMAGE', message: /ENOEXEC: no kexec loader/ });
});

t.test('the trust check is for root only', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-trust-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vmlinux');
  fs.writeFileSync(file, kernel);
  fs.chmodSync(file, 0o666);
  const getuid = process.getuid;
  process.getuid = () => 1000;
  t.teardown(() => {
    process.getuid = getuid;
  });
  await a.load(file);
  t.equal(await a.status(), 'loaded', 'a non-root caller loads what it can read');
});

t.test('pool edges: devices and chunks that cannot go back', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  await t.rejects(host.pool.shrink({ devices: ['0000:00:05.0'] }), { code: 'ERR_MK_RESOURCES', message: /free: 0000:00:04.0/ });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '2G' });
  await t.rejects(host.pool.shrink({ memory: '1G' }), { code: 'ERR_MK_RESOURCES', message: /unused chunks are none/ });
  system.faults.add({ op: 'read', path: '/proc/iomem', action: { errno: 'EACCES' } });
  await t.rejects(a.update({ memory: '1G' }), { code: 'ERR_MK_INVALID_SPEC', message: /unknown \(\/proc\/iomem is unreadable\)/ });
  system.faults.clear();
  await a.delete();
  const pool = await host.pool.teardown();
  t.equal(pool.exists, false);
  await t.rejects(host.pool.init({ memory: '256M' }), { code: 'ERR_MK_INVALID_SPEC', message: /needs CPUs/ });
  await host.pool.init({ cpus: 1, memory: '256M' });
  await t.rejects(host.pool.shrink({ devices: ['0000:00:04.0'] }), { code: 'ERR_MK_RESOURCES', message: /free: none/ });
});

t.test('candidates leave out what the topology does not know; pciIds skips platform devices', async (t) => {
  t.same(candidateOf({ cpu: 3, physicalId: 6, online: true, boot: false, package: -1, core: -1, siblings: [3], node: -1 }), { physicalId: 6, logical: 3 });
  t.same(candidateOf({ cpu: 3, physicalId: 6, online: true, boot: false, package: 0, core: -1, siblings: [3], node: 0 }), { physicalId: 6, logical: 3, node: 0 });
  t.same(pciIds([{ type: 'platform', name: 'uart0', path: '/resources/devices/uart0' }, { type: 'pci', pciId: '0000:00:04.0', vendorId: 1, deviceId: 2, path: '/pci@0' }]), ['0000:00:04.0']);
  const statuses: InstanceStatus[] = ['ready', 'loaded', 'active', 'empty', 'failed'];
  t.equal(statuses.length, 5);
  t.equal(systemError('EIO', 'read').code, 'EIO');
});

t.test('a baseline the kernel refuses after growing memory is torn down, outside the locks', async (t) => {
  const cpus = [{ apicId: 0, node: 0 }, { apicId: 2, node: 0 }, { apicId: 4, node: 0, online: false }];
  const system = new SimulatedSystem({ topology: { cpus, memoryBytes: 16 * 2 ** 30, numaNodes: 1 } });
  t.teardown(() => system.dispose());
  // Between our choice and our write the CPU went offline: the kernel grows the memory, fails
  // to move the CPU and answers EBUSY (baseline.c), leaving the memory in the pool.
  const racing = wrap(system, {
    writeFile: async (p: string, data: Uint8Array) =>
      p === '/sys/fs/multikernel/device_tree' ? system.writeFile(p, encodeBaseline({ cpus: [4], memory: [{ size: 1n << 30n }] })) : system.writeFile(p, data),
  });
  const host = await Host.open({ system: racing, lockPath });
  const started = Date.now();
  await t.rejects(host.pool.init({ cpus: 1, memory: '1G' }), { code: 'EBUSY' });
  t.ok(Date.now() - started < 5000, 'no wait on our own lock');
  const pool = await host.pool.snapshot();
  t.same([pool.exists, pool.memory.length], [false, 0], 'the memory the kernel kept went back');
});

t.test('kerf\'s lock file that cannot be removed after a baseline: ERR_MK_LOCKED says the baseline was written', async (t) => {
  const system = new SimulatedSystem();
  t.teardown(() => system.dispose());
  const sticky = wrap(system, { unlink: async (p: string) => Promise.reject(systemError('EIO', 'unlink', p)) });
  const host = await Host.open({ system: sticky, lockPath });
  await t.rejects(host.pool.init({ cpus: 1, memory: '1G' }), { code: 'ERR_MK_LOCKED', message: /^the baseline was written, but kerf's lock \/var\/run\/kerf.lock could not be removed afterwards \(EIO\)/ });
  t.equal((await host.pool.snapshot()).exists, true, 'the pool is there');
});

t.test('a /proc/iomem with its addresses hidden (a reader without CAP_SYS_ADMIN) gives no regions', async (t) => {
  const { system, host } = await withPool();
  t.teardown(() => system.dispose());
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  const hidden = wrap(system, {
    readFile: async (p: string) =>
      p === '/proc/iomem' ? Buffer.from((await system.readFile(p)).toString().replace(/[0-9a-f]+-[0-9a-f]+ :/g, '00000000-00000000 :')) : system.readFile(p),
  });
  const b = await (await Host.open({ system: hidden, lockPath })).instance('a');
  t.same((await b.info()).memory, [], 'no made-up regions at address 0');
  t.equal((await a.info()).memory.length, 1, 'root sees the region');
});
