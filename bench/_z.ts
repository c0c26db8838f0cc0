import { performance } from 'node:perf_hooks';
import { decodeFdt, encodeFdt } from '../lib/fdt';
import { buildTree } from './fdt';
const blob = encodeFdt(buildTree(1 << 20));
const blob2 = require('fs').readFileSync('/tmp/b.dtb');
for (const b of [blob, blob2, blob]) {
  for (let i = 0; i < 20; i++) encodeFdt(decodeFdt(b));
  const d: number[] = [];
  for (let i = 0; i < 21; i++) { const t0 = performance.now(); const t = decodeFdt(b); d.push(performance.now() - t0); encodeFdt(t); }
  d.sort((x, y) => x - y); console.log('decode', d[10]!.toFixed(2), b.constructor.name, b.byteOffset, b.buffer.byteLength);
}
