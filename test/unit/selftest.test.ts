import t, { type Test } from 'tap';
import { MultikernelError, isSystemError } from '../../lib/errors';
import { parseCpuinfo, parseKimage, txIds } from '../../lib/kernfs';
import { encodeBaseline, encodeOverlay, parsePool } from '../../lib/model';
import { placeholderImage } from '../../lib/image';
import { runSelftest, type SelftestStep } from '../../lib/selftest';
import { SimulatedSystem } from '../../lib/system/simulated';
import type { System } from '../../lib/system/system';
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
  // Without a pool, /resources lists the host's CPUs (dts.c): none of them is pooled.
  return { instances, pooledCpus: pool.hasPool ? pool.cpus.length : 0, poolMemory: pool.memory.length };
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
  t.match(steps.find((s) => s.step === 'create')!.detail, /^instance "selftest" id 1: 1 CPU, 256 MiB granted/);
  t.match(steps.find((s) => s.step === 'load')!.detail, /\/proc\/kimage multikernel/);
  t.ok(result.console.length > 0, 'the boot log reached the console selected before start');
  t.equal(result.exec?.exitCode, 0);
  t.match(result.exec?.stdout, /Linux/);
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, 'nothing is left behind');
});

t.test('an existing pool is reused and kept', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2, 4, 6], memory: [{ size: 1n << 30n }] }));
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, cpus: 2, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'mount')!.detail, 'already mounted');
  t.match(steps.find((s) => s.step === 'pool')!.detail, 'reusing: 3 of 3 CPUs free');
  t.notOk(steps.some((s) => s.step === 'teardown'), 'a pool the run did not make is not torn down');
  t.same(await leftovers(system), { instances: [], pooledCpus: 3, poolMemory: 1 }, 'the pool is as it was');
});

t.test('a pool emptied by an earlier run takes a new baseline (baseline.c: EBUSY only while the pool holds something)', async (t) => {
  const system = await sim(t);
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK });
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, cpus: 2, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'pool')!.detail, /^created: cpus \d+,\d+, memory 512 MiB/);
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, 'what was added went back');
});

t.test('a failure part way undoes what the run did, driven by the kernel state', async (t) => {
  for (const [op, errno, code] of [
    ['reboot', 'EBUSY', 'EBUSY'],
    // kexec's ENOMEM comes with what to do: the instance memory is too small
    ['kexec_file_load', 'ENOMEM', 'ERR_MK_RESOURCES'],
  ] as const) {
    const system = await sim(t);
    system.faults.add({ op, action: { errno }, times: 1 });
    const err = await runSelftest(system, { image: placeholderImage(), lockPath: LOCK }).catch((e: unknown) => e);
    t.match(err, { code }, `${op} ${errno} surfaces as ${code}`);
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
  await t.rejects(runSelftest(system, { image: placeholderImage(), cpus: 64, lockPath: LOCK }), { code: 'ERR_MK_RESOURCES', message: /64 CPUs wanted, 7 available/ });
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

t.test('CPUs taken by a concurrent writer are caught: instance-create only warns about them', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2, 4], memory: [{ size: 1n << 30n }] }));
  // Between reading the pool and creating the instance, another writer (one that skips the locks) takes both CPUs.
  let raced = false;
  const racing = tweak(system, {
    writeFile: async (p: string, data: Uint8Array) => {
      if (p.endsWith('/overlays/new') && !raced) {
        raced = true;
        await system.writeFile(p, encodeOverlay([{ op: 'instance-create', name: 'thief', id: 7, memoryBytes: 1n << 24n, cpus: [2, 4] }]));
      }
      return system.writeFile(p, data);
    },
  });
  const err = (await runSelftest(racing, { image: placeholderImage(), lockPath: LOCK }).catch((e: unknown) => e)) as MultikernelError;
  // the half-granted instance is removed and the CPUs chosen afresh: none is free any more
  t.equal(err.code, 'ERR_MK_RESOURCES');
  t.match(err.message, /^cpus: 1 CPUs wanted, 0 available/);
  t.same(await system.readdir('/sys/fs/multikernel/instances'), ['thief'], 'the half-granted instance was removed, the other writer\'s kept');
});

t.test('a graceful halt that times out (the spawn hangs) falls back to a forced halt', async (t) => {
  const system = await sim(t, { haltTimeoutMs: 200 });
  const steps: SelftestStep[] = [];
  await runSelftest(system, {
    image: placeholderImage(),
    lockPath: LOCK,
    bootTimeoutMs: 2000,
    onStep: (s) => {
      steps.push(s);
      if (s.step === 'start') void system.hang(1);
    },
  });
  t.match(steps.find((s) => s.step === 'stop')!.detail, 'graceful halt timed out; forced halt: loaded');
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 });
});

t.test('aborting stops between steps and undoes the run', async (t) => {
  const system = await sim(t);
  const ac = new AbortController();
  const err = await runSelftest(system, {
    image: placeholderImage(),
    lockPath: LOCK,
    signal: ac.signal,
    onStep: (s) => s.step === 'start' && ac.abort(new Error('operator said stop')),
  }).catch((e: unknown) => e);
  t.match(err, { message: 'operator said stop' });
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 }, 'the active instance was force-halted, unloaded and removed');
});

t.test('the agent is reached from the first free reserved port', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'vsock.connect', action: { errno: 'EADDRINUSE' }, times: 2 });
  const r = await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, exec: ['true'] });
  t.equal(r.exec?.exitCode, 0, 'ports 1023 and 1022 were busy; 1021 worked');
  const busy = await sim(t);
  busy.faults.add({ op: 'vsock.connect', action: { errno: 'EADDRINUSE' } });
  await t.rejects(runSelftest(busy, { image: placeholderImage(), lockPath: LOCK, exec: ['true'] }), { message: /no free local vsock port in 512..1023/ });
  const refused = await sim(t);
  refused.faults.add({ op: 'vsock.connect', action: { errno: 'ECONNREFUSED' } });
  await t.rejects(runSelftest(refused, { image: placeholderImage(), lockPath: LOCK, exec: ['true'] }), { code: 'ERR_MK_EXEC_NO_AGENT' });
  t.same(await leftovers(refused), { instances: [], pooledCpus: 0, poolMemory: 0 });
});

t.test('a console that cannot be selected is closed and the run undone', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'mktty.write', action: { errno: 'ENOSPC' }, times: 1 });
  await t.rejects(runSelftest(system, { image: placeholderImage(), lockPath: LOCK }), { code: 'ENOSPC' });
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 });
});

/** The same simulated kernel with some System methods replaced (for kernel behaviours the simulator does not produce). */
function tweak(system: SimulatedSystem, overrides: Partial<System>): System {
  return new Proxy(system, {
    get(target, key, receiver) {
      const own = (overrides as Record<string | symbol, unknown>)[key];
      if (own !== undefined) return own;
      const v = Reflect.get(target, key, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as unknown as System;
}

t.test('an older kernel without /proc/kimage still loads; image and initrd from files', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'read', path: '/proc/kimage', action: { errno: 'ENOENT' } });
  const dir = t.testdir({ vmlinux: Buffer.from(placeholderImage()), 'initrd.cpio': 'initramfs' });
  const steps: SelftestStep[] = [];
  await runSelftest(system, { kernel: `${dir}/vmlinux`, initrd: `${dir}/initrd.cpio`, lockPath: LOCK, onStep: (s) => steps.push(s) });
  t.equal(steps.find((s) => s.step === 'load')!.detail, 'loaded');
});

t.test('on arm64 the physical ids (MPIDR) come from the device tree: the pool is made as on x86', async (t) => {
  const system = await sim(t, { arch: 'arm64' });
  const r = await runSelftest(system, { image: placeholderImage('arm64'), lockPath: LOCK });
  t.same(r.instance.cpus, [14], 'the MPIDR of the last CPU');
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2], memory: [{ size: 1n << 30n }] }));
  const again = await runSelftest(system, { image: placeholderImage('arm64'), lockPath: LOCK });
  t.same(again.instance.cpus, [2], 'and an existing pool is used');
});

t.test('a pool whose CPUs are all lent gets one more host CPU, and the run gives back only that', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2], memory: [{ size: 1n << 30n }] }));
  await applyOverlay(system, [{ op: 'instance-create', name: 'busy', memoryBytes: 1n << 24n, cpus: [2] }], { lockPath: LOCK });
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'pool')!.detail, /^grown: cpus (2,14|14,2), memory 1 GiB/, 'CPU 14 joined; no memory was added');
  t.same(await leftovers(system), { instances: ['busy'], pooledCpus: 1, poolMemory: 1 });
});

t.test('the instance id is the first free one', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2, 4], memory: [{ size: 1n << 30n }] }));
  await applyOverlay(system, [{ op: 'instance-create', name: 'other', id: 1, memoryBytes: 1n << 24n, cpus: [2] }], { lockPath: LOCK });
  const r = await runSelftest(system, { image: placeholderImage(), lockPath: LOCK });
  t.equal(r.instance.id, 2, 'the kernel gives the lowest free id');
});

t.test('an instance removed behind our back is noticed at the next re-read', async (t) => {
  const system = await sim(t);
  let other: Promise<unknown> | undefined;
  // The status read after creation waits until another writer has removed the instance.
  const raced = tweak(system, {
    readFile: async (p: string) => {
      if (p.endsWith('/instances/selftest/status')) await other;
      return system.readFile(p);
    },
  });
  const err = await runSelftest(raced, {
    image: placeholderImage(),
    lockPath: LOCK,
    onStep: (s) => {
      if (s.step === 'create') other = applyOverlay(system, [{ op: 'instance-remove', name: 'selftest' }], { lockPath: LOCK });
    },
  }).catch((e: unknown) => e);
  t.match(err, { code: 'ERR_MK_INSTANCE_NOT_FOUND', message: 'instance "selftest": it no longer exists' });
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 });
});

t.test('a halt that fails, forced or not, is reported: the run is undone and the error kept', async (t) => {
  const system = await sim(t);
  const err = await runSelftest(system, {
    image: placeholderImage(),
    lockPath: LOCK,
    onStep: (s) => s.step === 'start' && system.faults.add({ op: 'reboot', action: { errno: 'EIO' }, times: 2 }),
  }).catch((e: unknown) => e);
  t.ok(isSystemError(err, 'EIO'));
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 });
});

t.test('console trouble: a read error fails the start; end of file ends the capture', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'mktty.read', action: { errno: 'EIO' }, times: 1 });
  await t.rejects(runSelftest(system, { image: placeholderImage(), lockPath: LOCK }), { code: 'EIO' });
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 });
  const eof = tweak(system, {
    openDevice: async (p: string) => {
      const h = await system.openDevice(p);
      return { write: (d: Uint8Array) => h.write(d), read: async () => Buffer.alloc(0), close: () => h.close() };
    },
  });
  const r = await runSelftest(eof, { image: placeholderImage(), lockPath: LOCK });
  t.equal(r.console, '');
});

t.test('undo carries on when the kernel refuses its steps, and leaves what it could not undo', async (t) => {
  const system = await sim(t);
  const err = await runSelftest(system, {
    image: placeholderImage(),
    lockPath: LOCK,
    onStep: (s) => {
      if (s.step !== 'start') return;
      system.faults.add({ op: 'mktty.read', action: { errno: 'EIO' } });
      system.faults.add({ op: 'reboot', action: { errno: 'EPERM' } });
    },
  }).catch((e: unknown) => e);
  t.ok(isSystemError(err, 'EPERM'), 'the halt error is reported');
  t.same((await leftovers(system)).instances, ['selftest'], 'an active instance that cannot be halted stays, as the kernel says');
});

t.test('status files that cannot be read, or say something unexpected, stop the run', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'read', path: /instances\/selftest\/status$/, action: { errno: 'EIO' }, times: 1 });
  await t.rejects(runSelftest(system, { image: placeholderImage(), lockPath: LOCK }), { code: 'EIO' });
  t.same(await leftovers(system), { instances: [], pooledCpus: 0, poolMemory: 0 });
  let reads = 0;
  const odd = tweak(system, {
    readFile: async (p: string) => (p.endsWith('/selftest/status') && ++reads === 1 ? Buffer.from('loaded\n') : system.readFile(p)),
  });
  await t.rejects(runSelftest(odd, { image: placeholderImage(), lockPath: LOCK }), { message: 'instance "selftest" is "loaded", expected "ready"' });
  // the kernel keeps showing the instance after its removal applied
  let id = '';
  const lingering = tweak(system, {
    readFile: async (p: string) => {
      if (!/\/instances\/selftest\/(id|status)$/.test(p) || (await system.readdir('/sys/fs/multikernel/instances')).length > 0) {
        const b = await system.readFile(p);
        if (p.endsWith('/id')) id = b.toString();
        return b;
      }
      return Buffer.from(p.endsWith('/id') ? id : 'ready\n');
    },
  });
  await t.rejects(runSelftest(lingering, { image: placeholderImage(), lockPath: LOCK }), { code: 'ERR_MK_TX_FAILED', message: /"selftest" is still listed after its removal applied/ });
});

t.test('a pool with free CPUs but no free memory gets memory only, and the run gives back only that chunk', async (t) => {
  const system = await sim(t);
  await system.mountMultikernel();
  await system.writeFile('/sys/fs/multikernel/device_tree', encodeBaseline({ cpus: [2, 4], memory: [{ size: 256n << 20n }] }));
  await applyOverlay(system, [{ op: 'instance-create', name: 'busy', memoryBytes: 256n << 20n, cpus: [2] }], { lockPath: LOCK });
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'pool')!.detail, /^grown: cpus (2,4|4,2), memory 256 MiB at 0x[0-9a-f]+, 512 MiB at 0x[0-9a-f]+$/);
  t.same(await leftovers(system), { instances: ['busy'], pooledCpus: 2, poolMemory: 1 }, 'the chunk the run added went back, the CPUs stayed');
});

t.test('without /proc/iomem (root only) the verify step shows no base', async (t) => {
  const system = await sim(t);
  system.faults.add({ op: 'read', path: '/proc/iomem', action: { errno: 'EACCES' } });
  const steps: SelftestStep[] = [];
  await runSelftest(system, { image: placeholderImage(), lockPath: LOCK, onStep: (s) => steps.push(s) });
  t.match(steps.find((s) => s.step === 'verify')!.detail, /^ready: cpus \d+, 256 MiB$/);
});
