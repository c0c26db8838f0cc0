// lib/cli/common.ts and the framework's error conventions: backends, parsers, colours, JSON errors.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CliIo } from '../../lib/cli/command';
import { UsageError } from '../../lib/cli/command';
import { backend, cpuRequest, parseCpuList, parseSize, styles, table } from '../../lib/cli/common';
import { printStatus } from '../../lib/cli/commands/status';
import { Host } from '../../lib';
import { SimulatedSystem, placeholderImage } from '../../lib/simulated';
import { hostReport } from '../../lib/report';
import { encodeOverlay } from '../../lib/model';
import { wrap } from '../lifecycle/helpers';
import { inProcess, simulatedHost } from './helpers';

const io = (env: Record<string, string>, tty = false): CliIo => ({ stdout: { write: () => true, isTTY: tty }, stderr: { write: () => true }, env, cwd: '/work', signal: new AbortController().signal });

t.test('backend: options and environment', async (t) => {
  t.same(backend({}, io({})), { kind: 'linux' });
  t.same(backend({}, io({ MULTIKERNEL_BACKEND: 'linux' })), { kind: 'linux' });
  t.same(backend({ simulate: true }, io({ HOME: '/home/u' })), { kind: 'simulated', stateDir: '/home/u/.local/state/multikernel/simulated' });
  t.same(backend({}, io({ MULTIKERNEL_BACKEND: 'simulated', HOME: '/home/u', XDG_STATE_HOME: '/xdg' })), { kind: 'simulated', stateDir: '/xdg/multikernel/simulated' });
  t.same(backend({ simulate: true }, io({ MULTIKERNEL_SIM_DIR: 'rel/sim' })), { kind: 'simulated', stateDir: '/work/rel/sim' }, 'relative to the working directory');
  t.same(backend({ 'state-dir': '/s' }, io({})), { kind: 'simulated', stateDir: '/s' }, '--state-dir implies the simulated host');
  t.equal(backend({ simulate: true }, io({})).stateDir, path.join(os.homedir(), '.local/state/multikernel/simulated'), 'no HOME: the account home');
  t.throws(() => backend({}, io({ MULTIKERNEL_BACKEND: 'qemu' })), UsageError);
});

t.test('parsers, tables and colours', async (t) => {
  t.equal(cpuRequest({ 'cpu-count': '4' }), 4);
  t.same(cpuRequest({ cpus: '4' }), { physical: [4] }, 'one id, as kerf reads --cpus 4');
  t.same(cpuRequest({ cpus: '2-5,8' }), { physical: [2, 3, 4, 5, 8] });
  t.equal(cpuRequest({}), undefined);
  t.same(parseCpuList(' 1 , 3-3'), [1, 3]);
  for (const bad of ['a', '5-2', '1,1', '1-2,2', '-1', '']) t.throws(() => cpuRequest({ cpus: bad }), UsageError, JSON.stringify(bad));
  for (const bad of ['0', 'x', '1.5']) t.throws(() => cpuRequest({ 'cpu-count': bad }), UsageError, JSON.stringify(bad));
  t.throws(() => cpuRequest({ cpus: '1', 'cpu-count': '1' }), UsageError);
  t.equal(await parseSize('512M', '--memory'), 512n << 20n);
  await t.rejects(parseSize('lots', '--memory'), UsageError);
  t.equal(table([['A', 'BB'], ['ccc', 'd']]), 'A    BB\nccc  d\n');
  t.equal(styles(io({}, true)).red('x'), '\u001b[31mx\u001b[0m');
  const plain: Record<string, string>[] = [{ NO_COLOR: '1' }, { TERM: 'dumb' }];
  for (const env of plain) t.equal(styles(io(env, true)).red('x'), 'x', JSON.stringify(env));
  t.equal(styles(io({}, false)).bold('x'), 'x');
});

t.test('the real kernel here has no multikernel support: one line, exit 1; --json: its code and details', async (t) => {
  if (fs.readFileSync('/proc/filesystems', 'utf8').includes('multikernel')) {
    t.plan(0, 'this machine runs a multikernel kernel: mkctl must not act on it from a test');
    return;
  }
  let r = await inProcess(['status'], { MULTIKERNEL_BACKEND: 'linux' });
  t.equal(r.code, 1);
  t.match(r.stderr, /^mkctl status: this kernel has no multikernel support; probed: .*Boot a kernel built with CONFIG_MULTIKERNEL\.\n$/);
  r = await inProcess(['status', '--json'], { MULTIKERNEL_BACKEND: 'linux' });
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_NO_SUPPORT', exitCode: 1, details: { probes: { supported: false } } } });
  const interrupted = await inProcess(['list', '--json', '--simulate'], { HOME: os.tmpdir() }, { signal: AbortSignal.abort(new Error('received SIGINT')) });
  t.equal(interrupted.code, 130);
  t.match(interrupted.json(), { error: { code: 'ERR_MK_INTERRUPTED', message: 'interrupted', exitCode: 130 } });
  const invalid = await inProcess(['list', '--json'], { MULTIKERNEL_BACKEND: 'bogus' });
  t.match(invalid.json(), { error: { code: 'ERR_MK_USAGE', exitCode: 2 } });
});

t.test('hostReport: a failed instance, a probe that finds it stopped, unreadable transaction files; status columns', async (t) => {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR, topology: { cpus: [0, 2, 4, 6].map((apicId) => ({ apicId, node: 0 })), memoryBytes: 4 * 2 ** 30, numaNodes: 1, pciDevices: ['0000:00:04.0'] } });
  t.teardown(() => system.dispose());
  const host = await Host.open({ system });
  await host.pool.init({ cpus: 2, memory: '1G', devices: ['0000:00:04.0'] });
  const a = await host.createInstance({ name: 'a', cpus: 1, memory: '128M' });
  // an instance without CPUs, as another tool may make one (the library's create asks for CPUs)
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-create', name: 'nocpu', memoryBytes: 64n << 20n }]));
  await a.load(placeholderImage());
  await a.start();
  await system.writeFile('/sys/fs/multikernel/overlays/new', encodeOverlay([{ op: 'instance-remove', name: 'nope' }]));
  let reads = 0;
  const odd = wrap(system, {
    readFile: async (p: string) => {
      if (p.endsWith('/instances/nocpu/status')) return Buffer.from('failed\n');
      // a: active for info(), then loaded when the probe reads it again
      if (p.endsWith('/instances/a/status') && reads++ > 0) return Buffer.from('loaded\n');
      if (/overlays\/tx_\d+\/resources$/.test(p) || p.endsWith('/overlays/tx_2/status')) throw Object.assign(new Error('EIO'), { code: 'EIO' });
      return system.readFile(p);
    },
  });
  const oddHost = await Host.open({ system: odd });
  const r = await hostReport(oddHost, { probe: true });
  t.match(r.instances, [{ name: 'a', status: 'active' }, { name: 'nocpu', status: 'failed', cpus: [] }]);
  t.equal(r.instances[0]!.liveness, undefined, 'stopped between the reading and the probe: no liveness');
  t.match(r.attention, [{ kind: 'instance-failed', subject: 'nocpu', message: /mkctl stop --force nocpu/ }]);
  t.match(r.transactions, [{ id: 2, status: 'unknown', resources: '' }], 'unreadable status and tag');
  t.ok(r.transactions.every((x) => x.resources === ''));
  t.match(r.attention.find((x) => x.kind === 'transaction-failed'), { message: /^transaction \d+ failed and/ }, 'no tag to show');
  const text = await inProcess(['status', '--probe'], sim.env);
  t.match(text.stdout, /· 1 devices free$/m);
  t.match(text.stdout, /^nocpu +\d+ +ready +- +64 MiB +-$/m, 'no CPUs: a dash');
  t.match(text.stdout, /^a +\d+ +active +\d+ +128 MiB +alive$/m);
});

t.test('status text of a real host with nothing to offer; a plain error with --json; --lock', async (t) => {
  let out = '';
  const sink: CliIo = { ...io({}), stdout: { write: (x: string) => (out += x) } };
  const features = { console: false, kimage: false, vsock: false, poolFormat: 'memory-nodes' as const, llcWayMask: false, missing: [] };
  const pool = { exists: false, format: 'memory-nodes' as const, cpus: [], freeCpus: [], memory: [], memoryBytes: 0n, freeMemoryBytes: 0n, devices: [], instances: [] };
  printStatus(sink, { backend: { kind: 'linux' } }, { features, pool, instances: [{ name: 'x', id: 3, status: 'ready', cpus: [], memoryBytes: 0n, memory: [], devices: [] }], transactions: [], attention: [] }, false);
  t.equal(out, 'host      this kernel\npool      none (mkctl pool init)\n\nNAME  ID  STATUS  CPUS  MEMORY\nx     3   ready   -     -\n');
  const { main } = await import('../../lib/cli/mkctl');
  let json = '';
  const boom = { path: ['boom'], summary: 'x', help: 'x', run: async () => Promise.reject(new Error('boom')) };
  t.equal(await main(['boom', '--json'], { ...io({}), stdout: { write: (x: string) => (json += x) } }, [boom]), 1);
  t.match(JSON.parse(json), { version: 1, error: { code: 'ERR_MK_FAILED', message: 'boom', exitCode: 1 } });
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  t.equal((await inProcess(['list', '--lock', '/run/mkctl-test.lock'], sim.env)).code, 0, 'a lock path of its own');
  t.equal((await inProcess(['list', 'extra'], sim.env)).code, 2);
  t.equal((await inProcess(['status', 'extra'], sim.env)).code, 2);
});
