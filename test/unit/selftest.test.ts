import t, { type Test } from 'tap';
import { MultikernelError, isSystemError } from '../../lib/errors';
import { parseCpuinfo, parseKimage, txIds } from '../../lib/kernfs';
import { encodeOverlay, parsePool } from '../../lib/model';
import { placeholderImage, runSelftest, type SelftestStep } from '../../lib/selftest';
import { SimulatedSystem } from '../../lib/system/simulated';
import { applyOverlay } from '../../lib/transaction';

const LOCK = '/run/multikernel.lock';

async function sim(t: Test, options: ConstructorParameters<typeof SimulatedSystem>[0] = {}) {
  const system = new SimulatedSystem(options);
  t.teardown(() => system.dispose());
  return system;
}

/** What the simulated host holds now: instances and whether a pool exists. */
async function leftovers(system: SimulatedSystem) {
  const instances = await system.readdir('/sys/fs/multikernel/instances');
  const pool = parsePool(await system.readFile('/sys/fs/multikernel/device_tree'));
  return { instances, pooledCpus: pool.cpus.length, poolMemory: pool.memory.length };
}

t.test('the whole lifecycle on the simulated kernel, re-reading the kernel at each step', async (t) => {
  const system = await sim(t);
  const steps: SelftestStep[] = [];
  const result = await runSelftest(system, {
    image: placeholderImage(),
    exec: ['uname', '-a'],
    lockPath: LOCK,
    bootTimeoutMs: 5000,
    onStep: (s) => steps.push(s),
  });
  t.same(
    steps.map((s) => s.step),
    ['probe', 'mount', 'pool', 'create', 'verify', 'load', 'console', 'start', 'exec', 'stop', 'unload', 'remove', 'teardown'],
  );
  t.equal(result.instance.id, 1, 'the first free id');
  t.equal(result.instance.cpus.length, 1);
  t.match(steps.find((s) => s.step === 'create')!.detail, /^tx_2 applied/, 'the first transaction is tx_2');
  t.match(steps.find((s) => s.step === 'load')!.detail, /\/proc\/kimage multikernel/);
  t.ok(result.console.length > 0, 'the boot log reached the console selected before start');
  t.equal(result.exec?.exitCode, 0);
  t.match(result.exec?.stdout, /Linux/);
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, 'nothing is left behind');
});

t.test('an existing pool is reused and kept', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  const { encodeBaseline } = await import('../../lib/model');
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2, 4, 6], memory: [{ size: 1n << 30n }] }));
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, cpus: 2, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'mount')!.detail, 'already mounted');
  t.match(steps.find((s) => s.step === 'pool')!.detail, 'reusing: 3 of 3 CPUs free');
  t.notOk(steps.some((s) => s.step === 'teardown'), 'a pool the run did not make is not torn down');
  t.same(await leftovers(system), { instances: [], pooledCpus: 3, poolMemory: 1 }, 'the pool is as it was');
});

t.test('a pool emptied by an earlier run is grown with a /resources overlay, not a second baseline', async (t) => {
  const system = await sim(t);
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK });
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, cpus: 2, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'pool')!.detail, /^grown: cpus \d+,\d+, memory 512 MiB/);
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, 'what was added went back');
});

t.test('a failure part way undoes what the run did, driven by the kernel state', async (t) => {
  for (const [op, errno] of [
    ['reboot', 'EBUSY'],
    ['kexec_file_load', 'ENOMEM'],
  ] as const) {
    const system = await sim(t);
    system.faults.add({ op, action: { errno }, times: 1 });
    const err = await runSelftest(system, { image: placeholderImage(), lockPath: LOCK }).catch((e: unknown) => e);
    t.ok(isSystemError(err, errno), `${op} ${errno} surfaces unchanged`);
    t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, `nothing left after ${op} failed`);
  }
});

t.test('a transaction that fails while applying is rolled back with rmdir and reported', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'overlay.apply', action: { halfway: true }, times: 1 });
  const err = await runSelftest(system, { image: placeholderImage(), lockPath: LOCK }).catch((e: unknown) => e);
  t.type(err, MultikernelError);
  t.equal((err as MultikernelError).code, 'ERR_MK_TX_FAILED');
  t.match((err as MultikernelError).details, { txId: 2, status: 'failed', rolledBack: true });
  t.same(txIds(await system.readdir('/sys/fs/multikernel/overlays')), [3], 'tx_2 was removed by the rollback; tx_3 is the pool teardown');
});

t.test('applyOverlay: a blob the kernel refuses up front rejects with its errno and creates no transaction', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  const err = await applyOverlay(system, Buffer.from('not a device tree'), { lockPath: LOCK }).catch((e: unknown) => e);
  t.ok(isSystemError(err, 'EINVAL'));
  t.same(await system.readdir('/sys/fs/multikernel/overlays'), ['new']);
});

t.test('applyOverlay: when the rollback fails too, the error says to remove the transaction by hand', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  system.faults.add({ op: 'overlay.apply', action: { halfway: true }, times: 1 });
  system.faults.add({ op: 'rmdir', action: { errno: 'EBUSY' }, times: 1 });
  const err = (await applyOverlay(system, encodeOverlay([{ op: 'instance-remove', name: 'nope' }]), { lockPath: LOCK }).catch((e: unknown) => e)) as MultikernelError;
  t.equal(err.code, 'ERR_MK_TX_FAILED');
  t.match(err.message, /remove \/sys\/fs\/multikernel\/overlays\/tx_2 by hand/);
  t.match(err.details, { rolledBack: false });
});

t.test('a kernel without multikernel support gives one typed error saying what was probed', async (t) => {
  const system = await sim(t, { stockKernel: true });
  const err = (await runSelftest(system, { image: placeholderImage(), lockPath: LOCK }).catch((e: unknown) => e)) as MultikernelError;
  t.equal(err.code, 'ERR_MK_NO_SUPPORT');
  t.match(err.message, /\/proc\/filesystems has no "multikernel"/);
});

t.test('options are checked before anything touches the kernel', async (t) => {
  const system = await sim(t);
  await t.rejects(runSelftest(system, { lockPath: LOCK }), { code: 'ERR_MK_INVALID_SPEC', message: /exactly one of kernel/ });
  await t.rejects(runSelftest(system, { image: placeholderImage(), cpus: 0 }), { code: 'ERR_MK_INVALID_SPEC', message: /cpus must be a positive integer/ });
  await t.rejects(runSelftest(system, { image: placeholderImage(), cpus: 64, lockPath: LOCK }), { code: 'ERR_MK_INVALID_SPEC', message: /to spare besides the boot CPU; 64 more are needed/ });
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, 'no pool was made for a request that cannot fit');
});

t.test('kernfs helpers', async (t) => {
  t.same(txIds(['new', 'tx_10', 'tx_2', 'tx_x']), [2, 10], 'numeric order, not lexical');
  const kimage = 'MK_ID  Type        Start Address   Segments  Mode  Cmdline\n    1  multikernel  0x000001000000         2  file  "console=mktty0 a=\\"b\\""\n';
  t.same(parseKimage(kimage), [{ id: 1, type: 'multikernel', start: 0x1000000n, segments: 2, mode: 'file', cmdline: 'console=mktty0 a=\\"b\\"' }]);
  t.same(parseCpuinfo('processor\t: 0\napicid\t\t: 0\nphysical id\t: 0\n\nprocessor\t: 1\napicid\t\t: 2\n\nflags : x\n'), [
    { processor: 0, apicId: 0, physicalPackage: 0 },
    { processor: 1, apicId: 2 },
  ]);
});
