/**
 * The behavioural contract of a multikernel kernel at the `System` level, run against the
 * simulator always (simulated.test.ts) and against a real multikernel kernel inside a QEMU guest
 * on request (real.test.ts). It only issues requests that are safe on a real host: it never uses
 * CPU 0, writes a small pool, refuses each request it expects to be refused in a way that leaves
 * no trace, and tears the pool down at the end.
 *
 * It needs a host without a pool and without other instances (a freshly booted guest). The
 * running-instance checks (console, vsock, exec) boot the spawn image; the exec checks need the
 * kerf-init agent in it (an initramfs with kerf-init as /init, and `echo` and `sh`), and are
 * skipped with the reason when the instance answers port 1023 with a reset.
 */
import type { Test } from 'tap';
import { isSystemError } from '../../lib/errors';
import { ExecRemoteError, execOverStream } from '../../lib/exec/client';
import { AGENT_PORT } from '../../lib/exec/protocol';
import { decodeFdt, encodeFdt } from '../../lib/fdt/codec';
import { findNode, getProperty, node, prop } from '../../lib/fdt/tree';
import { parseCpuinfo } from '../../lib/kernfs';
import type { FdtNode } from '../../lib/fdt/types';
import type { DeviceHandle, System, VsockStream } from '../../lib/system/system';
import {
  KEXEC_FILE_NO_INITRAMFS,
  KEXEC_FILE_UNLOAD,
  KEXEC_MULTIKERNEL,
  kexecMkId,
  LINUX_REBOOT_CMD_MULTIKERNEL as START,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT as HALT,
  LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE as FORCE,
} from '../../lib/uapi';

export interface ContractEnv {
  /** the spawn kernel: a file on the host (real run) or bytes (simulated run) */
  kernelImage: { path: string } | { bytes: Uint8Array };
  /** the spawn's initramfs for the running-instance checks (none: loaded with KEXEC_FILE_NO_INITRAMFS) */
  initrd?: { path: string };
  /** how long a started instance may take to answer on vsock and its agent to listen (default 60000) */
  bootTimeoutMs?: number;
  cmdline?: string;
  /** pool size written in the baseline (default 512 MiB) */
  poolBytes?: number;
  /** memory of each test instance (default 128 MiB) */
  instanceBytes?: number;
}

const M = '/sys/fs/multikernel';
const MiB = 1024 * 1024;
/** instance ids the suite uses; high enough not to collide with anything a user made */
const ID_A = 1501;
const ID_B = 1502;
const ID_NOCPU = 1503;
/** a vsock port nobody listens on in an instance */
const UNLISTENED_PORT = 49_999;

/** Resolves with what `p` settles to within `ms` (a ref'd timer keeps the test alive), or 'pending'. */
async function within<T>(ms: number, p: Promise<T>): Promise<{ value: T } | { error: unknown } | 'pending'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'pending'>((resolve) => (timer = setTimeout(() => resolve('pending'), ms)));
  try {
    return await Promise.race([p.then((value) => ({ value }), (error: unknown) => ({ error })), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `fn` with an abort signal that fires after `ms`: a ref'd timer (the test waits on it),
 * cleared when `fn` settles so that no timer outlives the check.
 */
async function bounded<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`no answer within ${ms} ms`)), ms);
  try {
    return await fn(controller.signal);
  } finally {
    clearTimeout(timer);
  }
}

/** Nobody answered: our own deadline passed, or the kernel's connect timeout. */
function unanswered(e: unknown): boolean {
  return isSystemError(e, 'ETIMEDOUT') || (e instanceof Error && e.message.startsWith('no answer within'));
}

/** Everything that happens to a stream: data, end of file, errors, close. */
export function watch(stream: VsockStream): string[] {
  const seen: string[] = [];
  stream.on('data', (chunk: Buffer) => seen.push(`data ${chunk.length}`));
  stream.on('end', () => seen.push('end'));
  stream.on('error', (e: NodeJS.ErrnoException) => seen.push(`error ${e.code}`));
  stream.on('close', () => seen.push('close'));
  return seen;
}

/** Reads what a console shows within `ms` (nothing: ''). */
async function consoleWithin(tty: DeviceHandle, ms: number): Promise<string> {
  return bounded(ms, async (signal) => {
    let text = '';
    for (;;) {
      try {
        text += (await tty.read({ signal })).toString('utf8');
      } catch (e) {
        if (signal.aborted) return text;
        throw e;
      }
    }
  });
}

export interface HostCpu {
  logical: number;
  apicId: number;
}

/** /proc/cpuinfo → the logical number and physical id (apicid) of every online CPU (lib/kernfs's parser) */
export function hostCpus(text: string): HostCpu[] {
  return parseCpuinfo(text).map((c) => ({ logical: c.processor, apicId: c.apicId ?? NaN }));
}

function u64s(n: FdtNode | undefined, name: string): number[] {
  const v = n && getProperty(n, name)?.value;
  if (!v) return [];
  const d = new DataView(v.buffer, v.byteOffset, v.byteLength);
  return Array.from({ length: v.length / 8 }, (_, i) => Number(d.getBigUint64(i * 8)));
}
function u32(n: FdtNode | undefined, name: string): number | undefined {
  const v = n && getProperty(n, name)?.value;
  return v && v.length === 4 ? new DataView(v.buffer, v.byteOffset, 4).getUint32(0) : undefined;
}
function text(n: FdtNode | undefined, name: string): string | undefined {
  const v = n && getProperty(n, name)?.value;
  return v && Buffer.from(v).toString('utf8').replace(/\0$/, '');
}

export function instanceCreate(name: string, o: { id?: number; cpus?: number[]; memoryBytes?: number; resources?: boolean }): FdtNode {
  const props = [prop.string('instance-name', name)];
  if (o.id !== undefined) props.push(prop.u32('id', o.id));
  const res: ReturnType<typeof prop.u64>[] = [];
  if (o.memoryBytes !== undefined) res.push(prop.u64('memory-bytes', o.memoryBytes));
  if (o.cpus && o.cpus.length > 0) res.push(prop.u64('cpus', ...o.cpus));
  return node('instance-create', props, o.resources === false ? [] : [node('resources', res)]);
}
export function instanceRemove(name: string): FdtNode {
  return node('instance-remove', [prop.string('instance-name', name)]);
}
export function fragment(unit: string, target: string, ops: FdtNode[]): FdtNode {
  return node(`fragment@${unit}`, [prop.string('target-path', target)], [node('__overlay__', [], ops)]);
}
export function dtbo(frags: FdtNode[], resources?: string): Buffer {
  const props = [prop.string('compatible', 'linux,multikernel-overlay')];
  if (resources !== undefined) props.push(prop.string('mk,resources', resources));
  return encodeFdt(node('', props, frags));
}
export function baseline(cpus: number[], memories: FdtNode[], extra: { resources?: FdtNode[]; root?: FdtNode[]; resProps?: ReturnType<typeof prop.u64>[] } = {}): Buffer {
  const resProps = [...(cpus.length > 0 ? [prop.u64('cpus', ...cpus)] : []), ...(extra.resProps ?? [])];
  return encodeFdt(
    node('', [prop.string('compatible', 'multikernel-v1')], [node('resources', resProps, [...memories, ...(extra.resources ?? [])]), ...(extra.root ?? [])]),
  );
}
/**
 * Whether a root device_tree shows a pool. dts.c@0a54b0b4 always writes /resources (before a
 * baseline it lists the host's own CPUs), so a pool shows as free CPUs or memory chunks.
 */
export function hasPool(root: FdtNode): boolean {
  const res = findNode(root, '/resources');
  return !!res && (getProperty(res, 'cpus-available') !== undefined || res.children.some((c) => c.name.startsWith('memory@')));
}
const sorted = (a: number[]): number[] => a.slice().sort((x, y) => x - y);

export function memoryNode(unit: number, size: number): FdtNode {
  return node(`memory@${unit}`, [prop.u64('size', size)]);
}

export async function runContract(t: Test, makeSystem: () => Promise<System>, env: ContractEnv): Promise<void> {
  const sys = await makeSystem();
  const poolBytes = env.poolBytes ?? 512 * MiB;
  const instanceBytes = env.instanceBytes ?? 128 * MiB;
  const cmdline = env.cmdline ?? 'console=mktty0 rdinit=/init panic=-1';
  const read = async (p: string): Promise<string> => (await sys.readFile(p)).toString('utf8');
  const txIds = async (): Promise<number[]> =>
    (await sys.readdir(`${M}/overlays`)).filter((n) => /^tx_\d+$/.test(n)).map((n) => Number(n.slice(3))).sort((a, b) => a - b);
  const pool = async (): Promise<FdtNode> => decodeFdt(await sys.readFile(`${M}/device_tree`)).root;
  const status = async (name: string): Promise<string> => (await read(`${M}/instances/${name}/status`)).trim();
  let lastTx = 0;
  /** write a DTBO, check the full count came back and that exactly one new tx appeared */
  const apply = async (blob: Buffer, label: string, tt: Test = t): Promise<{ id: number; status: string }> => {
    const n = await sys.writeFile(`${M}/overlays/new`, blob);
    tt.equal(n, blob.length, `${label}: write() returns the full byte count`);
    const ids = await txIds();
    const id = ids[ids.length - 1]!;
    tt.equal(id, lastTx + 1, `${label}: tx id is the previous one plus one`);
    lastTx = id;
    return { id, status: (await read(`${M}/overlays/tx_${id}/status`)).trim() };
  };

  await t.test('the kernel announces the multikernel filesystem', async (t) => {
    t.match(await read('/proc/filesystems'), /^nodev\tmultikernel$/m);
    t.equal((await sys.stat(M)).type, 'directory');
  });

  await t.test('mount', async (t) => {
    if ((await sys.readdir(M)).length === 0) {
      await t.rejects(sys.readFile(`${M}/device_tree`), { code: 'ENOENT' }, 'nothing in the mount point before mounting');
      await t.rejects(sys.umountMultikernel(), { code: 'EINVAL' }, 'umount of a mount point that is not mounted');
      await sys.mountMultikernel();
    }
    t.same((await sys.readdir(M)).sort(), ['device_tree', 'instances', 'overlays']);
    await t.rejects(sys.mountMultikernel(), { code: 'EBUSY' }, 'the same filesystem twice on the same mount point');
    t.same(await sys.readdir(`${M}/overlays`).then((l) => l.includes('new')), true);
    t.same((await sys.stat(`${M}/overlays/new`)).mode & 0o777, 0o200);
    t.same((await sys.stat(`${M}/device_tree`)).mode & 0o777, 0o644);
  });

  const root0 = await pool();
  if (hasPool(root0) || (await sys.readdir(`${M}/instances`)).length > 0) {
    await t.test('pool and instance checks', { skip: 'the contract needs a host without a pool and without instances (boot a fresh guest)' }, () => undefined);
    return;
  }
  t.equal(u32(root0, 'id'), 0, 'before a baseline the device_tree is the host tree (id 0)');
  t.notOk(hasPool(root0), 'and shows no pool');
  const existingTx = await txIds();
  lastTx = existingTx.length > 0 ? existingTx[existingTx.length - 1]! : 1;

  const online = hostCpus(await read('/proc/cpuinfo')).filter((c) => c.logical !== 0);
  if (online.length < 3) {
    await t.test('pool and instance checks', { skip: `the contract needs 3 online CPUs besides CPU 0, found ${online.length}` }, () => undefined);
    return;
  }
  const [c1, c2, c3] = online as [HostCpu, HostCpu, HostCpu];
  const poolCpus = [c1.apicId, c2.apicId];

  await t.test('baseline refusals return the errno and leave no pool', async (t) => {
    const dt = `${M}/device_tree`;
    const good = baseline(poolCpus, [memoryNode(0, poolBytes)]);
    await t.rejects(sys.writeFile(dt, Buffer.from('not a device tree at all, just some bytes.....')), { code: 'EINVAL' }, 'bad header');
    await t.rejects(sys.writeFile(dt, Buffer.concat([good, Buffer.alloc(8)])), { code: 'EINVAL' }, 'totalsize differs from the write size');
    await t.rejects(sys.writeFile(dt, encodeFdt(node('', [], [node('chosen')]))), { code: 'EINVAL' }, 'no /resources');
    await t.rejects(
      sys.writeFile(dt, baseline(poolCpus, [memoryNode(0, poolBytes)], { root: [node('instances', [], [node('x')])] })),
      { code: 'EINVAL' },
      '/instances with children',
    );
    await t.rejects(
      sys.writeFile(dt, baseline(poolCpus, [], { resProps: [prop.u64('memory-base', 0), prop.u64('memory-bytes', poolBytes)] })),
      { code: 'EINVAL' },
      'old memory-base/memory-bytes format (baseline.c: refused when there is no memory@N node)',
    );
    await t.rejects(
      sys.writeFile(dt, encodeFdt(node('', [], [node('resources', [prop.u32('cpus', c1.apicId, c2.apicId, c3.apicId)], [memoryNode(0, poolBytes)])]))),
      { code: 'EINVAL' },
      'cpus not a multiple of 8 bytes',
    );
    await t.rejects(sys.writeFile(dt, baseline([c1.apicId, 0xfffff], [memoryNode(0, poolBytes)])), { code: 'ENODEV' }, 'a CPU that is not present');
    await t.rejects(sys.writeFile(dt, baseline(poolCpus, [memoryNode(0, poolBytes + 100)])), { code: 'EINVAL' }, 'memory size not page aligned');
    await t.rejects(sys.writeFile(dt, baseline(poolCpus, [memoryNode(0, 2 ** 50)])), { code: 'ENOMEM' }, 'more memory than the host has');
    t.notOk(hasPool(await pool()), 'still no pool');
  });

  await t.test('baseline', async (t) => {
    const blob = baseline(poolCpus, [memoryNode(0, poolBytes)]);
    t.equal(await sys.writeFile(`${M}/device_tree`, blob), blob.length);
    const res = findNode(await pool(), '/resources');
    t.same(u64s(res, 'cpus'), poolCpus, 'pool cpus');
    t.same(u64s(res, 'cpus-available'), poolCpus, 'all free');
    const mem = res!.children.filter((c) => c.name.startsWith('memory@'));
    t.equal(mem.length, 1);
    const [base, size] = u64s(mem[0], 'reg');
    t.equal(size, poolBytes);
    t.equal(mem[0]!.name, `memory@${base!.toString(16)}`);
    t.equal(text(mem[0], 'device_type'), 'memory');
    t.match(await read('/proc/iomem'), new RegExp(`${base!.toString(16).padStart(8, '0')}-[0-9a-f]+ : Multikernel Memory Pool`));
    const left = hostCpus(await read('/proc/cpuinfo')).map((c) => c.apicId);
    t.notOk(left.includes(c1.apicId) || left.includes(c2.apicId), 'pool CPUs left /proc/cpuinfo');
    t.notMatch(await read('/sys/devices/system/cpu/online'), new RegExp(`(^|,)${c1.logical}(,|$|\\n)`));
    await t.rejects(sys.writeFile(`${M}/device_tree`, blob), { code: 'EBUSY' }, 'a second baseline');
  });

  await t.test('overlays/new refusals create no transaction', async (t) => {
    await t.rejects(sys.readFile(`${M}/overlays/new`), { code: 'EINVAL' }, 'reading the write-only file');
    await t.rejects(sys.writeFile(`${M}/overlays/new`, Buffer.alloc(0)), { code: 'EINVAL' }, 'empty write');
    await t.rejects(sys.writeFile(`${M}/overlays/new`, Buffer.alloc(64, 7)), { code: 'EINVAL' }, 'bad header');
    // kernfs hands the handler the first 4096 bytes (no atomic_write_len): zeros, a bad magic.
    await t.rejects(sys.writeFile(`${M}/overlays/new`, Buffer.alloc(1024 * 1024 + 1)), { code: 'EINVAL' }, 'more than 1 MiB: no EFBIG');
    await t.rejects(sys.mkdir(`${M}/instances/x`), { code: 'EPERM' }, 'mkdir in instances');
    await t.rejects(sys.mkdir(`${M}/overlays/tx_x`), { code: 'EPERM' }, 'mkdir in overlays');
    await t.rejects(sys.rmdir(`${M}/instances`), { code: 'EPERM' }, 'rmdir of a non-transaction directory');
    await t.rejects(sys.rmdir(`${M}/overlays/tx_999999`), { code: 'ENOENT' }, 'rmdir of an unknown transaction');
    t.equal((await txIds()).length, existingTx.length, 'no transaction created');
  });

  await t.test('instance-create', async (t) => {
    const blob = dtbo([fragment('0', '/instances', [instanceCreate('mkc-a', { id: ID_A, cpus: [c1.apicId], memoryBytes: instanceBytes })])], 'contract');
    const tx = await apply(blob, 'create mkc-a', t);
    if (existingTx.length === 0) t.equal(tx.id, 2, 'the first transaction after boot is tx_2');
    t.equal(tx.status, 'applied');
    t.same((await sys.readdir(`${M}/overlays/tx_${tx.id}`)).sort(), ['dtbo', 'id', 'instance', 'resources', 'status']);
    t.equal(await read(`${M}/overlays/tx_${tx.id}/id`), `${tx.id}\n`);
    t.equal(await read(`${M}/overlays/tx_${tx.id}/instance`), '/instances\n', 'target-path of the first fragment');
    t.equal(await read(`${M}/overlays/tx_${tx.id}/resources`), 'contract\n');
    t.same(await sys.readFile(`${M}/overlays/tx_${tx.id}/dtbo`), blob);
    t.same(await sys.readdir(`${M}/instances`), ['mkc-a']);
    t.equal(await read(`${M}/instances/mkc-a/id`), `${ID_A}\n`);
    t.equal(await status('mkc-a'), 'ready');
    const dt = decodeFdt(await sys.readFile(`${M}/instances/mkc-a/device_tree`)).root;
    t.equal(u32(dt, 'id'), ID_A);
    t.equal(text(dt, 'model'), 'mkc-a');
    t.same(u64s(findNode(dt, '/resources'), 'cpus'), [c1.apicId]);
    t.same(u64s(findNode(dt, '/resources'), 'memory-bytes'), [instanceBytes]);
    t.same(u64s(findNode(await pool(), '/resources'), 'cpus-available'), [c2.apicId], 'the CPU left the free list');
    t.match(await read('/proc/iomem'), new RegExp(`^ +[0-9a-f]+-[0-9a-f]+ : mk-instance-${ID_A}-mkc-a-region-0$`, 'm'));
    const tx2 = await apply(dtbo([fragment('0', '/instances', [instanceCreate('mkc-x', { memoryBytes: instanceBytes })])]), 'no mk,resources', t);
    t.equal(await read(`${M}/overlays/tx_${tx2.id}/resources`), 'unknown\n');
    t.equal(tx2.status, 'applied', 'an id is assigned when none is given');
    await sys.rmdir(`${M}/overlays/tx_${tx2.id}`);
    t.same(await sys.readdir(`${M}/instances`), ['mkc-a'], 'rmdir undid the create');
    await t.rejects(sys.rmdir(`${M}/overlays/tx_${tx2.id}`), { code: 'ENOENT' }, 'a removed transaction is gone');
  });

  await t.test('a write longer than a page is cut to 4096 bytes', async (t) => {
    const blob = dtbo([fragment('0', '/instances', [instanceCreate('mkc-s', { memoryBytes: instanceBytes })])], 'contract short write');
    const padded = Buffer.concat([blob, Buffer.alloc(5000 - blob.length, 0xee)]);
    await t.rejects(
      sys.writeFile(`${M}/overlays/new`, padded),
      { code: 'ERR_MK_SHORT_WRITE', details: { written: 4096, expected: 5000 } },
      'write(2) returns 4096: kernfs_fop_write_iter cuts it to PAGE_SIZE',
    );
    const ids = await txIds();
    const id = ids[ids.length - 1]!;
    t.equal(id, lastTx + 1, 'one transaction');
    lastTx = id;
    t.equal((await read(`${M}/overlays/tx_${id}/status`)).trim(), 'applied', 'the handler took the DTBO in the first page (totalsize is not compared with the count)');
    t.same(await sys.readFile(`${M}/overlays/tx_${id}/dtbo`), padded.subarray(0, 4096), 'tx_N/dtbo holds the 4096 bytes');
    await sys.rmdir(`${M}/overlays/tx_${id}`);
    t.same(await sys.readdir(`${M}/instances`), ['mkc-a'], 'rmdir undid it');
  });

  await t.test('a transaction that fails still returns the full count', async (t) => {
    const cases: [string, Buffer][] = [
      ['duplicate name', dtbo([fragment('0', '/instances', [instanceCreate('mkc-a', { id: ID_B, memoryBytes: instanceBytes })])])],
      ['duplicate id', dtbo([fragment('0', '/instances', [instanceCreate('mkc-b', { id: ID_A, memoryBytes: instanceBytes })])])],
      ['id 0', dtbo([fragment('0', '/instances', [instanceCreate('mkc-b', { id: 0, memoryBytes: instanceBytes })])])],
      ['no resources node', dtbo([fragment('0', '/instances', [instanceCreate('mkc-b', { id: ID_B, resources: false })])])],
      ['unknown target-path', dtbo([fragment('0', '/elsewhere', [instanceCreate('mkc-b', { id: ID_B, memoryBytes: instanceBytes })])])],
      ['unknown instance', dtbo([fragment('0', '/instances/nope', [node('cpu-add', [], [node('cpu@0', [prop.u64('reg', c2.apicId)])])])])],
      ['remove of an unknown instance', dtbo([fragment('0', '/instances', [instanceRemove('nope')])])],
      ['no fragment', dtbo([])],
      ['fragment without __overlay__', encodeFdt(node('', [], [node('fragment@0', [prop.string('target-path', '/instances')])]))],
      ['CPU of another instance', dtbo([fragment('0', '/instances/mkc-a', [node('cpu-add', [], [node('cpu@0', [prop.u64('reg', c1.apicId)])])])])],
      ['memory reg of the wrong size', dtbo([fragment('0', '/instances/mkc-a', [node('memory-add', [], [node('memory@0', [prop.u64('reg', 0)])])])])],
    ];
    for (const [label, blob] of cases) {
      const tx = await apply(blob, label, t);
      t.equal(tx.status, 'failed', `${label}: status failed`);
    }
    t.same(await sys.readdir(`${M}/instances`), ['mkc-a'], 'nothing was created');
    t.same(u64s(findNode(await pool(), '/resources'), 'cpus-available'), [c2.apicId]);
  });

  await t.test('partial application stays until rmdir undoes it', async (t) => {
    const blob = dtbo([
      fragment('0', '/instances', [instanceCreate('mkc-b', { id: ID_B, cpus: [c2.apicId], memoryBytes: instanceBytes })]),
      fragment('1', '/instances', [instanceRemove('nope')]),
    ]);
    const tx = await apply(blob, 'create then fail', t);
    t.equal(tx.status, 'failed');
    t.equal(await status('mkc-b'), 'ready', 'the first fragment stayed applied');
    t.same(u64s(findNode(await pool(), '/resources'), 'cpus-available'), [], 'and holds its CPU');
    await sys.rmdir(`${M}/overlays/tx_${tx.id}`);
    t.notOk((await sys.readdir(`${M}/instances`)).includes('mkc-b'), 'rmdir undid it');
    t.notOk((await sys.readdir(`${M}/overlays`)).includes(`tx_${tx.id}`));
    t.same(u64s(findNode(await pool(), '/resources'), 'cpus-available'), [c2.apicId], 'its CPU went back to the pool');
  });

  await t.test('rollback walks every fragment, also the one that failed', async (t) => {
    const blob = dtbo([
      fragment('0', '/instances', [instanceCreate('mkc-b', { id: ID_B, memoryBytes: instanceBytes })]),
      fragment('1', '/instances/nope', [node('cpu-remove', [], [node('cpu@0', [prop.u64('reg', c2.apicId)])])]),
    ]);
    const tx = await apply(blob, 'unknown target after a create', t);
    t.equal(tx.status, 'failed');
    await t.rejects(sys.rmdir(`${M}/overlays/tx_${tx.id}`), { code: 'ENOENT' }, 'the undo stops at the unresolvable target');
    t.ok((await sys.readdir(`${M}/overlays`)).includes(`tx_${tx.id}`), 'the transaction stays');
    t.equal((await read(`${M}/overlays/tx_${tx.id}/status`)).trim(), 'failed');
    t.equal(await status('mkc-b'), 'ready', 'nothing was undone');
    const rm = await apply(dtbo([fragment('0', '/instances', [instanceRemove('mkc-b')])]), 'clean up mkc-b', t);
    t.equal(rm.status, 'applied');
  });

  await t.test('fragments run in ascending unit-address order, operations in the fixed order', async (t) => {
    // Written in the "wrong" order: only the kernel's ordering makes these succeed.
    const frags = await apply(
      dtbo([fragment('a', '/instances', [instanceRemove('mkc-o')]), fragment('9', '/instances', [instanceCreate('mkc-o', { memoryBytes: instanceBytes })])]),
      'fragments',
      t,
    );
    t.equal(frags.status, 'applied', 'fragment@9 (create) ran before fragment@a (remove)');
    const ops = await apply(
      dtbo([fragment('0', '/instances', [instanceRemove('mkc-p'), instanceCreate('mkc-p', { memoryBytes: instanceBytes })])]),
      'ops',
      t,
    );
    t.equal(ops.status, 'applied', 'instance-create runs before instance-remove');
    t.same(await sys.readdir(`${M}/instances`), ['mkc-a']);
    await sys.rmdir(`${M}/overlays/tx_${ops.id}`);
    t.same(await sys.readdir(`${M}/instances`), ['mkc-a'], 'an instance-remove is not undone');
  });

  await t.test('pool overlays', async (t) => {
    const before = findNode(await pool(), '/resources')!.children.filter((c) => c.name.startsWith('memory@')).length;
    const grow = await apply(
      dtbo([fragment('0', '/resources', [node('memory-add', [], [memoryNode(0, 64 * MiB)]), node('cpu-add', [], [node('cpu@0', [prop.u64('reg', c3.apicId)])])])]),
      'grow',
      t,
    );
    t.equal(grow.status, 'applied');
    let res = findNode(await pool(), '/resources')!;
    t.same(sorted(u64s(res, 'cpus')), sorted([...poolCpus, c3.apicId]), 'members: the free CPUs, then those instances hold (dts.c)');
    t.notOk(hostCpus(await read('/proc/cpuinfo')).some((c) => c.apicId === c3.apicId), 'the CPU departed');
    const chunks = res.children.filter((c) => c.name.startsWith('memory@'));
    t.equal(chunks.length, before + 1);
    await sys.rmdir(`${M}/overlays/tx_${grow.id}`);
    res = findNode(await pool(), '/resources')!;
    t.same(sorted(u64s(res, 'cpus')), sorted(poolCpus), 'the CPU-add was undone');
    t.ok(hostCpus(await read('/proc/cpuinfo')).some((c) => c.apicId === c3.apicId), 'the CPU is back on the host');
    const left = res.children.filter((c) => c.name.startsWith('memory@'));
    t.equal(left.length, before + 1, 'a pool memory-add cannot be undone');
    const added = left.find((c) => u64s(c, 'reg')[1] === 64 * MiB)!;
    const shrink = await apply(dtbo([fragment('0', '/resources', [node('memory-remove', [], [node('memory@0', [prop.u64('reg', ...u64s(added, 'reg'))])])])]), 'shrink', t);
    t.equal(shrink.status, 'applied');
    t.equal(findNode(await pool(), '/resources')!.children.filter((c) => c.name.startsWith('memory@')).length, before);
    const bad = await apply(dtbo([fragment('0', '/resources', [node('cpu-remove', [], [node('cpu@0', [prop.u64('reg', c1.apicId)])])])]), 'busy CPU', t);
    t.equal(bad.status, 'failed', 'a pool CPU held by an instance cannot leave');
  });

  let kernelFd = -1;
  await t.test('kexec_file_load refusals', async (t) => {
    kernelFd = 'path' in env.kernelImage ? await sys.openImage(env.kernelImage.path) : await sys.openImageBytes('vmlinux', env.kernelImage.bytes);
    const load = (id: number, fd = kernelFd, line = cmdline): Promise<void> =>
      sys.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: line, flags: KEXEC_MULTIKERNEL | kexecMkId(id) | KEXEC_FILE_NO_INITRAMFS });
    await t.rejects(load(ID_B), { code: 'ENOENT' }, 'no instance with that id');
    const junk = await sys.openImageBytes('junk', Buffer.alloc(4096, 0x41));
    await t.rejects(load(ID_A, junk), { code: 'ENOEXEC' }, 'not a kernel image');
    await sys.closeImage(junk);
    await t.rejects(load(ID_A, kernelFd, 'x'.repeat(2048)), { code: 'EINVAL' }, 'command line longer than COMMAND_LINE_SIZE');
    await t.rejects(
      sys.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(ID_A) }),
      { code: 'ENOENT' },
      'unload with nothing loaded',
    );
    await t.rejects(sys.reboot(START, ID_A), { code: 'EINVAL' }, 'start with nothing loaded');
    await t.rejects(sys.reboot(HALT, ID_A), { code: 'EINVAL' }, 'halt of an instance that is not active');
    await t.rejects(sys.reboot(FORCE, ID_A), { code: 'EINVAL' }, 'force halt of a ready instance');
    await t.rejects(sys.reboot(HALT, ID_B), { code: 'ENOENT' }, 'halt of an unknown instance');
    t.equal(await status('mkc-a'), 'ready');
  });

  await t.test('load, start, halt, restart, force halt, unload', async (t) => {
    const flags = KEXEC_MULTIKERNEL | kexecMkId(ID_A) | KEXEC_FILE_NO_INITRAMFS;
    await sys.kexecFileLoad({ kernelFd, initrdFd: -1, cmdline, flags });
    t.equal(await status('mkc-a'), 'loaded');
    const rows = (await read('/proc/kimage')).split('\n');
    t.equal(rows[0], 'MK_ID  Type        Start Address   Segments  Mode  Cmdline');
    const row = rows.find((r) => r.startsWith(String(ID_A).padStart(5)));
    t.match(row, new RegExp(`^ ${ID_A}  multikernel  0x[0-9a-f]{12}  {1,8}\\d+  file  "${cmdline}"$`));
    await t.rejects(sys.kexecFileLoad({ kernelFd, initrdFd: -1, cmdline, flags }), { code: 'EBUSY' }, 'a second load');
    const rm = await apply(dtbo([fragment('0', '/instances', [instanceRemove('mkc-a')])]), 'remove loaded', t);
    t.equal(rm.status, 'failed', 'a loaded instance cannot be removed');
    await sys.reboot(START, ID_A);
    t.equal(await status('mkc-a'), 'active');
    await t.rejects(sys.reboot(START, ID_A), { code: 'EBUSY' }, 'start of an active instance');
    await t.rejects(sys.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(ID_A) }), { code: 'EBUSY' }, 'unload of an active instance');
    await sys.reboot(HALT, ID_A);
    t.equal(await status('mkc-a'), 'loaded', 'a graceful halt keeps the image');
    await sys.reboot(START, ID_A);
    t.equal(await status('mkc-a'), 'active', 'start again without reloading');
    await sys.reboot(FORCE, ID_A);
    t.equal(await status('mkc-a'), 'loaded');
    await sys.reboot(FORCE, ID_A);
    t.equal(await status('mkc-a'), 'loaded', 'force halt is allowed from loaded');
    await sys.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(ID_A) });
    t.equal(await status('mkc-a'), 'ready');
    t.notOk((await read('/proc/kimage')).includes(`"${cmdline}"`), 'the kimage row is gone');
  });

  await t.test('an instance without CPUs loads but cannot start', async (t) => {
    const tx = await apply(dtbo([fragment('0', '/instances', [instanceCreate('mkc-n', { id: ID_NOCPU, memoryBytes: instanceBytes })])]), 'no cpus', t);
    t.equal(tx.status, 'applied');
    const flags = KEXEC_MULTIKERNEL | kexecMkId(ID_NOCPU) | KEXEC_FILE_NO_INITRAMFS;
    await sys.kexecFileLoad({ kernelFd, initrdFd: -1, cmdline, flags });
    await t.rejects(sys.reboot(START, ID_NOCPU), { code: 'EINVAL' }, 'start without CPUs');
    await t.rejects(sys.reboot(FORCE, ID_NOCPU), { code: 'EINVAL' }, 'force halt without CPUs');
    await t.rejects(sys.rmdir(`${M}/overlays/tx_${tx.id}`), { code: 'EBUSY' }, 'undoing the create of a loaded instance fails');
    t.equal((await read(`${M}/overlays/tx_${tx.id}/status`)).trim(), 'failed', 'the transaction stays, marked failed');
    await sys.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | flags });
    await sys.rmdir(`${M}/overlays/tx_${tx.id}`);
    t.notOk((await sys.readdir(`${M}/instances`)).includes('mkc-n'), 'the retried rmdir removed it');
  });

  await t.test('a running instance: console, vsock, exec, halt', async (t) => {
    const bootMs = env.bootTimeoutMs ?? 60_000;
    const initrdFd = env.initrd ? await sys.openImage(env.initrd.path) : -1;
    const flags = KEXEC_MULTIKERNEL | kexecMkId(ID_A) | (initrdFd === -1 ? KEXEC_FILE_NO_INITRAMFS : 0);
    await sys.kexecFileLoad({ kernelFd, initrdFd, cmdline, flags });
    const hasTty = await sys.stat('/dev/mktty').then((st) => st.type === 'char-device', () => false);
    const ttys: DeviceHandle[] = [];
    const held: VsockStream[] = [];
    try {
      let older: DeviceHandle | undefined;
      let newer: DeviceHandle | undefined;
      await t.test('console: selecting an instance', { skip: hasTty ? false : 'no /dev/mktty (CONFIG_MKTTY off)' }, async (t) => {
        const tty = await sys.openDevice('/dev/mktty');
        ttys.push(tty);
        await t.rejects(tty.read(), { code: 'ENOTCONN' }, 'read before the first write selects an instance');
        await t.rejects(tty.write(Buffer.from(`${ID_B}\n`)), { code: 'ENODEV' }, 'no instance with that id');
        await t.rejects(tty.write(Buffer.from('0\n')), { code: 'EINVAL' }, 'id < 1');
        t.equal(await tty.write(Buffer.from(`${ID_A}\n`)), `${ID_A}\n`.length, 'an instance that is not running can be selected');
        older = tty;
        newer = await sys.openDevice('/dev/mktty');
        ttys.push(newer);
        await newer.write(Buffer.from(`${ID_A}\n`));
      });

      await sys.reboot(START, ID_A);
      t.equal(await status('mkc-a'), 'active');

      if (newer && older) {
        const first = newer;
        await t.test('console: output goes to the newest opened connection', async (t) => {
          const got = await within(bootMs, first.read());
          t.ok(typeof got === 'object' && 'value' in got && got.value.length > 0, 'the boot log arrives on the connection opened last');
          t.equal(await consoleWithin(older!, 500), '', 'the connection opened first gets none of it');
        });
      }

      await t.test('vsock: a live instance answers an unlistened port with a reset', async (t) => {
        const until = Date.now() + bootMs;
        let answer: unknown;
        // Until the spawn's vsock transport is up the request goes unanswered: retry.
        while (Date.now() < until) {
          answer = await bounded(1000, (signal) => sys.vsockConnect({ cid: ID_A, port: UNLISTENED_PORT, signal })).catch((e: unknown) => e);
          if (!unanswered(answer)) break;
        }
        t.match(answer, { code: 'ECONNRESET', syscall: 'connect' }, 'mk_vsock_send_rst: OP_RST, sk_err ECONNRESET');
        const t0 = Date.now();
        await t.rejects(sys.vsockConnect({ cid: ID_A, port: UNLISTENED_PORT }), { code: 'ECONNRESET' });
        t.ok(Date.now() - t0 < 1000, `answered at once (${Date.now() - t0} ms), not after the connect timeout`);
      });

      const connectAgent = async (): Promise<VsockStream> => {
        // As kerf's client: the first free reserved source port from 1023 down (main.py connect_agent).
        for (let port = 1023; ; port--) {
          try {
            return await bounded(5000, (signal) => sys.vsockConnect({ cid: ID_A, port: AGENT_PORT, localPort: port, signal }));
          } catch (e) {
            if (!isSystemError(e, 'EADDRINUSE') || port === 512) throw e;
          }
        }
      };
      // Is there an agent? The kernel answers port 1023 with a reset until kerf-init listens.
      let agent: string | false = false;
      for (const until = Date.now() + bootMs; ; ) {
        const got: VsockStream | Error = await connectAgent().catch((e: unknown) => e as Error);
        if (!(got instanceof Error)) {
          got.destroy();
          break;
        }
        if (isSystemError(got, 'EACCES')) {
          agent = 'binding a reserved vsock port needs root (kerf-init trusts only ports up to 1023)';
          break;
        }
        if (!isSystemError(got, 'ECONNRESET', 'ECONNREFUSED') || Date.now() >= until) {
          agent = `no kerf-init agent on port ${AGENT_PORT} (${(got as NodeJS.ErrnoException).code ?? got.message}): load an initramfs with kerf-init as /init`;
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }

      await t.test('exec through the agent (kerf exec protocol)', { skip: agent }, async (t) => {
        const run = async (argv: string[]) => bounded(30_000, async (signal) => execOverStream(await connectAgent(), { argv, signal }));
        const echo = await run(['echo', 'contract']);
        t.same([echo.exitCode, echo.stdout.toString()], [0, 'contract\n'], 'exit code and stdout');
        t.equal((await run(['sh', '-c', 'exit 3'])).exitCode, 3, 'the exit code of the command');
        const missing = await run(['/nonexistent-mkc-command']).catch((e: unknown) => e);
        t.ok(missing instanceof ExecRemoteError, 'a missing command is an ERROR frame');
        t.match(missing, { errnoCode: 'ENOENT', exitCode: 127 });
      });

      if (agent === false) {
        const stream = await connectAgent();
        held.push(stream);
      }
      await sys.reboot(HALT, ID_A);
      t.equal(await status('mkc-a'), 'loaded', 'a graceful halt');

      await t.test('a halted instance sends nothing to its vsock peers', async (t) => {
        if (held.length > 0) {
          const seen = watch(held[0]!);
          held[0]!.write('anyone?');
          await new Promise((r) => setTimeout(r, 500));
          t.same(seen, [], 'no data, no end of file, no reset (core.c mk_notify_down_and_park)');
        }
        const got = await bounded(1000, (signal) => sys.vsockConnect({ cid: ID_A, port: UNLISTENED_PORT, signal })).catch((e: unknown) => e);
        t.ok(unanswered(got), 'a connect is not answered (not even with a reset)');
      });
    } finally {
      for (const s of held) s.destroy();
      for (const tty of ttys) await tty.close();
      if ((await status('mkc-a')) === 'active') await sys.reboot(FORCE, ID_A);
      await sys.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags: KEXEC_FILE_UNLOAD | KEXEC_MULTIKERNEL | kexecMkId(ID_A) });
      if (initrdFd !== -1) await sys.closeImage(initrdFd);
    }
    t.equal(await status('mkc-a'), 'ready');
  });

  await t.test('teardown', async (t) => {
    await sys.closeImage(kernelFd);
    const rm = await apply(dtbo([fragment('0', '/instances', [instanceRemove('mkc-a')])]), 'remove mkc-a', t);
    t.equal(rm.status, 'applied');
    t.same(await sys.readdir(`${M}/instances`), []);
    const res = findNode(await pool(), '/resources')!;
    const chunks = res.children.filter((c) => c.name.startsWith('memory@'));
    const memRemove = node('memory-remove', [], chunks.map((c, i) => node(`memory@${i}`, [prop.u64('reg', ...u64s(c, 'reg'))])));
    const early = await apply(dtbo([fragment('0', '/resources', [memRemove])]), 'memory first', t);
    t.equal(early.status, 'failed', 'pool memory cannot go while pool CPUs run on its park area');
    const cpuRemove = node('cpu-remove', [], u64s(res, 'cpus').map((c, i) => node(`cpu@${i}`, [prop.u64('reg', c)])));
    const down = await apply(dtbo([fragment('0', '/resources', [memRemove, cpuRemove])]), 'teardown', t);
    t.equal(down.status, 'applied', 'CPUs leave before memory inside one /resources fragment');
    const after = findNode(await pool(), '/resources');
    t.same(u64s(after, 'cpus'), []);
    t.equal(after?.children.filter((c) => c.name.startsWith('memory@')).length ?? 0, 0);
    const cpus = hostCpus(await read('/proc/cpuinfo')).map((c) => c.apicId);
    t.ok(poolCpus.every((c) => cpus.includes(c)), 'the CPUs are back on the host');
    t.notMatch(await read('/proc/iomem'), /Multikernel Memory Pool/);
  });
}
