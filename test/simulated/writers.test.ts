/**
 * Eight processes create and delete instances on one simulated host (a state directory) through
 * the library, while a ninth takes kerf's lock now and then (issue 13): every transaction on the
 * host is applied, and each is attributed, by the resources tag the library writes
 * (`multikernel-js pid=<pid> ...`), to the process that made it; none is lost. CI runs 25
 * create+delete pairs per writer; MK_WRITERS_OPS=100 is the long form (docs/reliability.md).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import t from 'tap';
import { encodeBaseline } from '../../lib/model';
import { SimulatedSystem } from '../../lib/system/simulated';
import { M } from './helpers';

const loader = '@tapjs/typescript/import';
const root = path.join(__dirname, '..', '..');
const WRITERS = 8;
const OPS = Number(process.env.MK_WRITERS_OPS ?? 25);

function child(script: string, args: string[]): { pid: number; out: Promise<string>; code: Promise<number | null>; end(): void } {
  const proc = spawn(process.execPath, [`--import=${loader}`, path.join(__dirname, 'fixtures', script), ...args], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)));
  return { pid: proc.pid!, out: code.then(() => out), code, end: () => proc.stdin.end() };
}

t.test(`${WRITERS} writers x ${OPS} create+delete, kerf's lock taken by a ninth: every transaction applied and attributed`, async (t) => {
  const dir = t.testdir();
  const stateDir = path.join(dir, 'state');
  const sim = new SimulatedSystem({ stateDir, topology: { cpus: Array.from({ length: 12 }, (_, i) => ({ apicId: i, node: 0 })), memoryBytes: 8 * 2 ** 30, numaNodes: 1 } });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, encodeBaseline({ cpus: [2, 3, 4, 5, 6, 7, 8, 9, 10, 11], memory: [{ size: 2n << 30n }] }));
  const kerf = child('kerf-cycler.ts', [stateDir, '30', '150']);
  const writers = Array.from({ length: WRITERS }, (_, i) => child('writer.ts', [stateDir, path.join(dir, 'flock'), `w${i}`, String(OPS)]));
  const codes = await Promise.all(writers.map((w) => w.code));
  kerf.end();
  t.same(codes, writers.map(() => 0), 'every writer finished');
  t.equal(await kerf.code, 0);
  const held = Number(/held (\d+)/.exec(await kerf.out)?.[1]);
  t.ok(held > 0, `kerf's lock was taken ${held} times meanwhile`);
  const reported = await Promise.all(writers.map(async (w) => Number(/done (\d+)/.exec(await w.out)?.[1])));
  t.same(reported, writers.map(() => 2 * OPS), 'each writer made two transactions per pair');

  const txs = (await sim.readdir(`${M}/overlays`)).filter((x) => x.startsWith('tx_'));
  const byPid = new Map<number, number>();
  for (const tx of txs) {
    t.equal((await sim.readFile(`${M}/overlays/${tx}/status`)).toString().trim(), 'applied', `${tx} applied`);
    const tag = (await sim.readFile(`${M}/overlays/${tx}/resources`)).toString();
    const pid = Number(/^multikernel-js pid=(\d+) /.exec(tag)?.[1]);
    byPid.set(pid, (byPid.get(pid) ?? 0) + 1);
  }
  t.equal(txs.length, WRITERS * 2 * OPS, 'none lost, none extra');
  t.same(
    writers.map((w) => byPid.get(w.pid) ?? 0),
    writers.map(() => 2 * OPS),
    'each attributed to the process that made it',
  );
  t.same(await sim.readdir(`${M}/instances`), [], 'every instance deleted');
  t.same(await sim.readdir('/var/run'), [], "no kerf lock left");
});
