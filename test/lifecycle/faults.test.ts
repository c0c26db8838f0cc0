// Every lifecycle verb against every fault the kernel can answer at its steps (the errnos of
// docs/kernel-interface.md, injected at the simulator's step names): the call fails with a typed
// error or the kernel's errno, the kernel state is as it was (no half-applied transaction, no
// resource moved), no fd is left open, and the same call then succeeds.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Host, type Instance } from '../../lib';
import type { FaultAction } from '../../lib/simulated';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';
import { digest as digestOf } from './fixtures/digest';

const digest = (host: Host, system: SimulatedSystem): Promise<string> => digestOf(host, system, { failedIsRecord: true });

const kernel = placeholderImage('x86_64');
const lockPath = path.join(os.tmpdir(), `mk-faults-test-${process.pid}.lock`);

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

type Stage = 'none' | 'pool' | 'ready' | 'loaded' | 'active';

interface Case {
  verb: string;
  stage: Stage;
  run: (host: Host, a: Instance | undefined) => Promise<unknown>;
  /** code: what the call fails with; null: the kernel did it anyway (re-read), so the call succeeds */
  faults: { op: string; path?: string; action: FaultAction; code: string | null }[];
}

const errno = (op: string, names: string[], code?: string, path?: string) => names.map((e) => ({ op, path, action: { errno: e }, code: code ?? e }));
const txFaults = [
  // the kernel fails the transaction while applying it: write() still succeeds, tx_N says failed
  ...errno('overlay.apply', ['EINVAL', 'ENOMEM', 'EBUSY', 'ENOENT', 'EEXIST'], 'ERR_MK_TX_FAILED'),
  { op: 'overlay.apply', action: { halfway: true } as const, code: 'ERR_MK_TX_FAILED' },
  // the write itself is refused (a future kernel may return the errno there)
  ...errno('write', ['EINVAL', 'ENOMEM'], undefined, '/sys/fs/multikernel/overlays/new'),
  // our own locks
  ...errno('lock', ['ETIMEDOUT']),
  ...errno('create', ['EIO'], undefined, '/var/run/kerf.lock'),
];

const cases: Case[] = [
  {
    verb: 'pool.init',
    stage: 'none',
    run: (host) => host.pool.init({ cpus: 2, memory: '1G' }),
    faults: [...errno('write', ['EBUSY', 'EINVAL', 'ENOMEM', 'EPERM'], undefined, '/sys/fs/multikernel/device_tree'), ...errno('lock', ['ETIMEDOUT'])],
  },
  { verb: 'pool.grow', stage: 'pool', run: (host) => host.pool.grow({ cpus: 1, memory: '256M' }), faults: txFaults },
  { verb: 'pool.shrink', stage: 'pool', run: (host) => host.pool.shrink({ cpus: 1 }), faults: txFaults },
  { verb: 'pool.teardown', stage: 'pool', run: (host) => host.pool.teardown(), faults: txFaults },
  { verb: 'createInstance', stage: 'pool', run: (host) => host.createInstance({ name: 'b', cpus: 1, memory: '128M' }), faults: txFaults },
  {
    verb: 'delete',
    stage: 'ready',
    run: (_h, a) => a!.delete(),
    // halfway: the removal ran, then the transaction failed; an instance-remove cannot be undone, and it is what was asked
    faults: txFaults.map((f) => ('halfway' in f.action ? { ...f, code: null } : f)),
  },
  { verb: 'update (ready)', stage: 'ready', run: (_h, a) => a!.update({ cpus: 2, memory: '256M' }), faults: txFaults },
  {
    verb: 'update (active)',
    stage: 'active',
    run: (_h, a) => a!.update({ cpus: 2, memory: '256M' }),
    faults: [...txFaults, ...errno('instance.ack', ['ETIMEDOUT', 'ENODEV', 'EINVAL'], 'ERR_MK_TX_FAILED')],
  },
  {
    verb: 'load',
    stage: 'ready',
    run: (_h, a) => a!.load(kernel, { initrd: Buffer.alloc(4096) }),
    faults: [
      ...errno('open.image', ['ENOMEM', 'EMFILE']),
      ...errno('kexec_file_load', ['EINVAL', 'ENOENT', 'EIO']),
      ...errno('kexec_file_load', ['EPERM'], 'ERR_MK_PERMISSION'),
      ...errno('kexec_file_load', ['EKEYREJECTED', 'ENOEXEC'], 'ERR_MK_IMAGE'),
      ...errno('kexec_file_load', ['ENOMEM'], 'ERR_MK_RESOURCES'),
      ...errno('kexec_file_load', ['EBUSY'], 'ERR_MK_INSTANCE_LOADED'),
    ],
  },
  { verb: 'start', stage: 'loaded', run: (_h, a) => a!.start(), faults: errno('reboot', ['EBUSY', 'EINVAL', 'EPERM', 'ENOENT']) },
  {
    verb: 'stop',
    stage: 'active',
    run: (_h, a) => a!.stop(),
    faults: [...errno('reboot', ['ETIMEDOUT'], 'ERR_MK_HALT_TIMEOUT'), ...errno('reboot', ['EINVAL', 'EPERM', 'ENOENT'])],
  },
  { verb: 'unload', stage: 'loaded', run: (_h, a) => a!.unload(), faults: errno('kexec_file_load', ['EBUSY', 'ENOENT', 'EPERM']) },
];

async function atStage(stage: Stage) {
  const system = new SimulatedSystem({ haltTimeoutMs: 100, resourceAckTimeoutMs: 100 });
  const host = await Host.open({ system, lockPath });
  let a: Instance | undefined;
  if (stage !== 'none') await host.pool.init({ cpus: 4, memory: '2G', devices: ['0000:00:04.0'] });
  if (stage !== 'none' && stage !== 'pool') a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  if (stage === 'loaded' || stage === 'active') await a!.load(kernel);
  if (stage === 'active') await a!.start();
  return { system, host, a };
}

for (const c of cases) {
  t.test(`${c.verb}: every fault leaves the kernel as it was, and the next call succeeds`, async (t) => {
    for (const fault of c.faults) {
      const label = `${fault.op}${fault.path ? ` ${fault.path}` : ''} ${'errno' in fault.action ? fault.action.errno : 'halfway'}`;
      const { system, host, a } = await atStage(c.stage);
      const before = await digest(host, system);
      const fds = openFds();
      system.faults.add({ op: fault.op, ...(fault.path ? { path: fault.path } : {}), times: 1, action: fault.action });
      const err = await c.run(host, a).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.equal(openFds(), fds, `${label}: no fd left open`);
      if (fault.code === null) {
        t.equal(err, undefined, `${label}: done, as the kernel shows`);
      } else {
        t.match(err, { code: fault.code }, `${label}: fails with ${fault.code}`);
        t.equal(await digest(host, system), before, `${label}: the kernel shows what it showed before`);
        await t.resolves(c.run(host, a), `${label}: the next call succeeds`);
      }
      await system.dispose();
    }
  });
}
