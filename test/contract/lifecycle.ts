// The lifecycle API's contract: what Host, Pool and Instance do against a kernel, checked the
// same way on the simulated kernel (always) and on a real multikernel kernel (when one is given:
// test/contract/real.test.ts). It needs a host without a pool and without instances, and leaves
// it that way.
import type { Test } from 'tap';
import { Host } from '../../lib/host';
import type { WatchEvent } from '../../lib/watch';
import type { System } from '../../lib/system/system';
import type { ContractEnv } from './suite';

const MiB = 1024n * 1024n;

export async function runLifecycleContract(t: Test, system: System, env: ContractEnv): Promise<void> {
  const host = await Host.open({ system });
  const kernel = 'path' in env.kernelImage ? env.kernelImage.path : env.kernelImage.bytes;
  const load = { cmdline: env.cmdline ?? 'console=mktty0 rdinit=/init panic=-1', ...(env.initrd ? { initrd: env.initrd.path } : {}) };

  const before = await host.pool.snapshot();
  if (before.exists || before.instances.length > 0) {
    await t.test('lifecycle', { skip: 'the lifecycle contract needs a host without a pool and without instances' }, () => undefined);
    return;
  }
  const topology = await host.topology();
  const spare = topology.cpus.filter((c) => c.online && !c.boot && c.physicalId >= 0);
  if (spare.length < 2) {
    await t.test('lifecycle', { skip: `the lifecycle contract needs 2 online CPUs besides the boot CPU, found ${spare.length}` }, () => undefined);
    return;
  }

  await t.test('Host.open detects what the kernel offers', async (t) => {
    t.equal(typeof host.features.console, 'boolean');
    t.ok(['memory-nodes', 'base-bytes'].includes(host.features.poolFormat));
    t.ok(topology.cpus.some((c) => c.boot), 'the boot CPU is listed');
    t.ok(topology.nodes.length >= 1, 'at least one NUMA node');
  });

  await t.test('pool, instance, and the whole lifecycle through the API', async (t) => {
    const pool = await host.pool.init({ cpus: 2, memory: BigInt(env.poolBytes ?? 512 * 1024 * 1024) });
    t.equal(pool.cpus.length, 2);
    t.notOk(pool.cpus.some((c) => topology.cpus.find((x) => x.boot)?.physicalId === c.physicalId), 'never the boot CPU');
    const a = await host.createInstance({ name: 'contract-lifecycle', cpus: 1, memory: BigInt(env.instanceBytes ?? 128 * 1024 * 1024) });
    t.equal(await a.status(), 'ready');
    await t.rejects(a.start(), { code: 'ERR_MK_INSTANCE_NOT_LOADED' });
    await a.load(kernel, load);
    t.equal(await a.status(), 'loaded');
    const info = await a.info();
    t.equal(info.cpus.length, 1);
    await t.rejects(a.delete(), { code: 'ERR_MK_INSTANCE_LOADED' });
    const watcher = host.watch();
    t.teardown(() => watcher.close());
    await watcher.ready;
    const saw = (want: string): Promise<string[]> =>
      new Promise((resolve) => {
        const got: string[] = [];
        const timer = setTimeout(() => done(), 10_000);
        const on = (e: WatchEvent) => {
          if (e.type === 'status' && e.name === a.name) got.push(`${e.from}->${e.to} ${e.cause}`);
          if (got.includes(want)) done();
        };
        function done() {
          clearTimeout(timer);
          watcher.off('event', on);
          resolve(got);
        }
        watcher.on('event', on);
      });
    const started = saw('loaded->active requested');
    await a.start();
    t.equal(await a.status(), 'active');
    t.same(await started, ['loaded->active requested'], `the watcher (${watcher.mode}) saw the start, ours`);
    await t.test('a running instance through the API: probe, channels, console, exec', async (t) => {
      // the spawn needs a moment to bring its vsock transport up: probe until it answers
      const until = Date.now() + (env.bootTimeoutMs ?? 60_000);
      let liveness = await a.probe();
      while (liveness !== 'alive' && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 200));
        liveness = await a.probe();
      }
      t.equal(liveness, 'alive', 'a reset for a port nobody uses');
      await t.rejects(a.connect(49_999, { timeoutMs: 5000 }), { code: 'ERR_MK_CHANNEL_REFUSED' });
      await t.test('the console', { skip: host.features.console ? false : 'this kernel has no /dev/mktty (CONFIG_MKTTY)' }, async (t) => {
        const tty = await a.console();
        t.equal(tty.destroyed, false, 'opened and bound to the instance');
        tty.destroy();
      });
      const echo = await a.execFile(['echo', 'contract']).catch((e: unknown) => e);
      const noAgent = (echo as { code?: string }).code === 'ERR_MK_EXEC_NO_AGENT' ? 'no kerf-init agent in this instance: load an initramfs with kerf-init as /init' : false;
      await t.test('exec through the kerf-init agent', { skip: noAgent }, async (t) => {
        t.match(echo, { code: 0, stdout: Buffer.from('contract\n') }, 'execFile');
        t.equal((await a.execFile(['/nonexistent-mkc-command'])).code, 127, 'not found: 127');
        const proc = await a.exec(['sh', '-c', 'exit 3'], { stdin: 'ignore' });
        t.same(await proc.exited, { code: 3, signal: undefined }, 'exec: the exit code');
      });
    });
    await t.rejects(a.unload(), { code: 'ERR_MK_INSTANCE_ACTIVE' }, 'the library refuses what the kernel would allow');
    const halted = saw('active->loaded requested');
    const stopped = await a.stop({ force: true });
    t.ok(['graceful', 'forced'].includes(stopped.how), `stopped: ${stopped.how}`);
    t.same(await halted, ['active->loaded requested'], 'the watcher saw the halt, ours');
    watcher.close();
    t.equal(await a.status(), 'loaded');
    await a.start();
    await a.stop({ force: true, timeoutMs: 0 });
    t.equal(await a.status(), 'loaded', 'forced at once');
    await a.update({ cpus: 2 });
    t.equal((await a.info()).cpus.length, 2, 'a CPU added to a halted instance');
    await a.unload();
    await a.delete();
    t.same(await host.instances(), []);
    const torn = await host.pool.teardown();
    t.equal(torn.exists, false, 'everything went back to the host');
    t.ok(torn.memoryBytes === 0n || torn.memoryBytes < MiB, 'no pool memory left');
  });
}
