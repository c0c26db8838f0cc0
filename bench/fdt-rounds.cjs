// The measured loop of the device-tree benchmark (bench/fdt.ts), in a process of its own as the C
// side (bench/c/fdt-roundtrip.c) is: decode + encode of one blob with the compiled library
// (dist/fdt), ROUNDS times after a warm-up, with the garbage collector's share of each round taken
// from perf_hooks' "gc" entries. Plain JavaScript, so that no TypeScript loader shares the heap.
// bench/fdt.ts runs it twice: with Node's defaults (the figure) and with a young generation large
// enough to hold a whole decoded tree (context: how much of the time is the collector's).
//
//   node [--max-semi-space-size=N] bench/fdt-rounds.cjs FILE ROUNDS   (prints one line of JSON)
'use strict';
const { readFileSync } = require('node:fs');
const path = require('node:path');
const { performance, PerformanceObserver } = require('node:perf_hooks');
const { decodeFdt, encodeFdt } = require(path.join(__dirname, '..', 'dist', 'fdt'));

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main() {
  const blob = readFileSync(process.argv[2]);
  const rounds = Number(process.argv[3]);
  for (let i = 0; i < 20; i++) encodeFdt(decodeFdt(blob));
  const gcSpans = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcSpans.push([e.startTime, e.startTime + e.duration]);
  });
  observer.observe({ entryTypes: ['gc'] });
  const spans = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const tree = decodeFdt(blob);
    const t1 = performance.now();
    const out = encodeFdt(tree);
    const t2 = performance.now();
    spans.push([t0, t1, t2]);
    if (Buffer.compare(out, blob) !== 0) throw new Error('benchmark round trip changed the blob');
  }
  // gc entries arrive asynchronously: let the observer catch up
  await new Promise((resolve) => setTimeout(resolve, 50));
  observer.disconnect();
  const gcIn = (a, b) => gcSpans.reduce((sum, [s, e]) => sum + Math.max(0, Math.min(e, b) - Math.max(s, a)), 0);
  console.log(JSON.stringify({
    total: median(spans.map(([a, , c]) => c - a)),
    decode: median(spans.map(([a, b]) => b - a)),
    gc: median(spans.map(([a, , c]) => gcIn(a, c))),
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
