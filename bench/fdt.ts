/**
 * FDT codec benchmark: decode + encode of a ~1 MiB DTB, side by side with `dtc -I dtb -O dtb`
 * on the same blob. Prints medians; not a test, no threshold.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { decodeFdt, encodeFdt, node, prop, type FdtNode } from '../lib/fdt';

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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

export function run(): void {
  const blob = encodeFdt(buildTree(1 << 20));
  const runs = 21;
  for (let i = 0; i < 10; i++) encodeFdt(decodeFdt(blob));
  const ours: number[] = [];
  const dec: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const tree = decodeFdt(blob);
    const t1 = performance.now();
    const out = encodeFdt(tree);
    ours.push(performance.now() - t0);
    dec.push(t1 - t0);
    if (!out.equals(blob)) throw new Error('benchmark round trip changed the blob');
  }
  console.log(`fdt: blob ${blob.length} bytes (${(blob.length / 1048576).toFixed(2)} MiB)`);
  console.log(`fdt: ours decode+encode   median ${median(ours).toFixed(2)} ms (decode ${median(dec).toFixed(2)} ms) over ${runs} runs after 10 warm-up`);
  const probe = spawnSync('dtc', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    console.log('fdt: dtc not found (apt-get install device-tree-compiler); no dtc figure');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'fdt-bench-'));
  try {
    const file = join(dir, 'bench.dtb');
    writeFileSync(file, blob);
    const spawns = 9;
    const times: number[] = [];
    for (let i = 0; i < spawns + 1; i++) {
      const t0 = performance.now();
      const r = spawnSync('dtc', ['-q', '-I', 'dtb', '-O', 'dtb', '-o', join(dir, 'out.dtb'), file]);
      const t = performance.now() - t0;
      if (r.status !== 0) throw new Error(`dtc failed: ${r.stderr.toString()}`);
      if (i > 0) times.push(t);
    }
    const d = median(times);
    console.log(`fdt: dtc -I dtb -O dtb    median ${d.toFixed(2)} ms over ${spawns} spawns (${probe.stdout.trim()}, includes process start)`);
    console.log(`fdt: ours is ${(d / median(ours)).toFixed(1)}x faster than dtc`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
