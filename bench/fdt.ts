/**
 * FDT codec benchmark (issue 13): decode + encode of a ~1 MiB DTB against libfdt in-process and
 * against `dtc -I dtb -O dtb`. Returns the cases; not a test.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { encodeFdt, node, prop, type FdtNode } from '../lib/fdt';
import { type BenchCase, buildC, median, notRun } from './results';

/** A realistic tree of about `targetBytes`: CPUs, memory, PCI-like devices with u32/u64/string props. */
export function buildTree(targetBytes: number): FdtNode {
  const cpus: FdtNode[] = [];
  const devices: FdtNode[] = [];
  const memory: FdtNode[] = [];
  const root = node('', [prop.string('compatible', 'multikernel-v1'), prop.u32('#address-cells', 2), prop.u32('#size-cells', 2)], [
    node('cpus', [prop.u32('#address-cells', 1), prop.u32('#size-cells', 0)], cpus),
    node('resources', [prop.u64('cpus', 4, 5, 6, 7)], memory),
    node('devices', [], devices),
  ]);
  let size = 0;
  for (let i = 0; size < targetBytes; i++) {
    const hex = i.toString(16);
    cpus.push(node(`cpu@${hex}`, [prop.string('device_type', 'cpu'), prop.u32('reg', i), prop.strings('compatible', ['arm,cortex-a72', 'arm,armv8']), prop.string('enable-method', 'psci')]));
    memory.push(node(`memory@${hex}`, [prop.string('device_type', 'memory'), prop.u64('reg', BigInt(i) << 30n, 1n << 30n), prop.u32('numa-node-id', i % 4)]));
    devices.push(node(`pci@${hex}`, [
      prop.string('device-type', 'pci'),
      prop.string('pci-id', `0000:${(i >> 8 & 0xff).toString(16).padStart(2, '0')}:${(i & 0x1f).toString(16).padStart(2, '0')}.${i & 7}`),
      prop.u32('vendor-id', 0x8086), prop.u32('device-id', 0x100e), prop.u32('interrupts', 0, i, 4),
      prop.u64('ranges', 0x1000n * BigInt(i), 0x1000n), prop.string('status', 'okay'),
    ]));
    size += 356;
  }
  return root;
}

const LIBFDT = 'device trees: decode+encode of a 1 MiB DTB vs libfdt in-process';
const DTC = 'device trees: round trip vs dtc -I dtb -O dtb (process)';

interface Rounds {
  total: number;
  decode: number;
  gc: number;
}

/** bench/fdt-rounds.cjs in a process of its own (Node options `flags`), on the compiled library. */
function rounds(file: string, n: number, flags: string[]): Rounds {
  const r = spawnSync(process.execPath, [...flags, join(__dirname, 'fdt-rounds.cjs'), file, String(n)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`fdt-rounds.cjs ${flags.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Rounds;
}

/** A young generation that holds a whole decoded tree (MiB per semi-space): no scavenge promotes it. */
const ROOMY = 64;

/**
 * Decode + encode of a ~1 MiB DTB (medians of 31 rounds after a warm-up), in a process of its own on
 * the compiled library (bench/fdt-rounds.cjs), against libfdt doing the same in one process
 * (bench/c/fdt-roundtrip.c: open into a buffer, walk every node and property, pack) and against
 * dtc for the whole round trip (a process each, start-up included, as a user runs it). Context:
 * the collector's share of a round, and the same rounds with a young generation large enough to
 * hold a tree.
 */
export function run(): BenchCase[] {
  const blob = encodeFdt(buildTree(1 << 20));
  const n = 31;
  const size = `${(blob.length / 1048576).toFixed(2)} MiB`;
  if (!existsSync(join(__dirname, '..', 'dist', 'fdt', 'index.js'))) {
    const why = 'dist/ is not built (npm run build:ts)';
    return [notRun(LIBFDT, 'x libfdt', '<= 3', why), notRun(DTC, 'x faster', '>= 1', why)];
  }
  const cases: BenchCase[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'fdt-bench-'));
  try {
    const file = join(dir, 'bench.dtb');
    writeFileSync(file, blob);
    const ours = rounds(file, n, []);
    const roomy = rounds(file, n, [`--max-semi-space-size=${ROOMY}`]);
    const mine = ours.total;
    const c = buildC(dir, 'fdt-roundtrip.c', { args: ['-lfdt'], hint: 'apt-get install libfdt-dev' });
    if ('why' in c) {
      cases.push(notRun(LIBFDT, 'x libfdt', '<= 3', c.why));
    } else {
      const r = spawnSync(c.exe, [file, String(n)], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`fdt-roundtrip: ${r.stderr}`);
      const libfdt = Number(r.stdout.split(' ')[0]);
      cases.push({
        name: LIBFDT,
        value: mine / libfdt,
        unit: 'x libfdt',
        target: '<= 3',
        met: mine / libfdt <= 3,
        context:
          `${size}: ours ${mine.toFixed(2)} ms (decode ${ours.decode.toFixed(2)} ms; ${ours.gc.toFixed(2)} ms of the round in the garbage collector), libfdt ${libfdt.toFixed(2)} ms (medians of ${n} rounds, each side in a process of its own); ` +
          `with --max-semi-space-size=${ROOMY} (a young generation that holds a decoded tree) ours ${roomy.total.toFixed(2)} ms (decode ${roomy.decode.toFixed(2)} ms, collector ${roomy.gc.toFixed(2)} ms) = ${(roomy.total / libfdt).toFixed(2)} x libfdt`,
      });
    }
    const probe = spawnSync('dtc', ['--version'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) {
      cases.push(notRun(DTC, 'x faster', '>= 1', 'dtc not found (apt-get install device-tree-compiler)'));
    } else {
      const times: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t0 = performance.now();
        const r = spawnSync('dtc', ['-q', '-I', 'dtb', '-O', 'dtb', '-o', join(dir, 'out.dtb'), file]);
        const t = performance.now() - t0;
        if (r.status !== 0) throw new Error(`dtc failed: ${r.stderr.toString()}`);
        if (i > 0) times.push(t);
      }
      const d = median(times);
      cases.push({
        name: DTC,
        value: d / mine,
        unit: 'x faster',
        target: '>= 1',
        met: d / mine >= 1,
        context: `dtc ${d.toFixed(2)} ms per process (${probe.stdout.trim()}, median of 9), ours ${mine.toFixed(2)} ms in-process`,
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return cases;
}
