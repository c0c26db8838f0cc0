/**
 * Bounded, seeded fuzzing: random and mutated blobs and DTS text must either decode/parse or
 * fail with a MultikernelError; never another exception, never a hang.
 */
import { deepStrictEqual } from 'node:assert';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import fc from 'fast-check';
import { MultikernelError } from '../../lib/errors';
import { decodeFdt, encodeFdt, parseDts, printDts } from '../../lib/fdt';
import { fdtArb } from './arbitraries';
import { assemble, plainFdt } from './helpers';
import { SOURCES } from './sources';

/** xorshift32: a seeded generator, so every run fuzzes the same inputs. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

interface Tally {
  ok: number;
  rejected: number;
  slowestMs: number;
}

function attempt(tally: Tally, input: string, fn: () => void): void {
  const t0 = performance.now();
  try {
    fn();
    tally.ok++;
  } catch (e) {
    if (!(e instanceof MultikernelError) || !['ERR_MK_INVALID_FDT', 'ERR_MK_FDT_LIMIT', 'ERR_MK_DTS_SYNTAX'].includes(e.code)) {
      throw new Error(`unexpected ${String(e)} for input ${input.slice(0, 400)}`, { cause: e });
    }
    tally.rejected++;
  }
  tally.slowestMs = Math.max(tally.slowestMs, performance.now() - t0);
}

/** Decoding succeeded: the result must encode and decode to itself. */
function checkDecoded(blob: Uint8Array): void {
  const tree = decodeFdt(blob, { maxSize: 1 << 20 });
  deepStrictEqual(plainFdt(decodeFdt(encodeFdt(tree))), plainFdt(tree));
}

const seeds = fc.sample(fdtArb, { seed: 0xf022, numRuns: 60 }).map((f) => encodeFdt(f));
seeds.push(...Object.values(SOURCES).map((s) => encodeFdt(parseDts(s).fdt)));

t.test('mutated and random blobs end in a tree or a MultikernelError', async (t) => {
  const next = rng(0xb10b);
  const tally: Tally = { ok: 0, rejected: 0, slowestMs: 0 };
  const ITER = 6000;
  for (let i = 0; i < ITER; i++) {
    const base = seeds[next(seeds.length)];
    let b: Buffer = Buffer.from(base);
    const kind = next(7);
    if (kind === 0) {
      for (let k = 1 + next(8); k > 0; k--) b[next(b.length)] ^= 1 << next(8); // bit flips
    } else if (kind === 1) {
      b = Buffer.from(b.subarray(0, next(b.length))); // truncation
    } else if (kind === 2) {
      const field = 4 * (1 + next(9)); // header field: offsets, sizes, versions
      const v = [0, 1, 0xffffffff, 0x7fffffff, b.length, b.length + 4, b.length - 4, b.readUInt32BE(field) + 4 * (next(9) - 4), next(1 << 30)][next(9)];
      b.writeUInt32BE(v >>> 0, field);
    } else if (kind === 3) {
      const structOff = b.readUInt32BE(8);
      const words = (b.readUInt32BE(36) >> 2) || 1;
      const at = structOff + 4 * next(words); // a structure word: token, length or name offset
      if (at + 4 <= b.length) b.writeUInt32BE([1, 2, 3, 4, 9, 0, 0xffffffff, next(64), next(1 << 24)][next(9)] >>> 0, at);
    } else if (kind === 4) {
      const at = next(b.length); // insert or delete a few bytes
      b = next(2) === 0 ? Buffer.concat([b.subarray(0, at), Buffer.alloc(1 + next(7), next(256)), b.subarray(at)]) : Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + next(7))]);
    } else if (kind === 5) {
      b = Buffer.alloc(next(200)); // random bytes, sometimes behind a valid magic
      for (let k = 0; k < b.length; k++) b[k] = next(256);
      if (b.length >= 4 && next(2) === 0) b.writeUInt32BE(0xd00dfeed, 0);
    } else {
      const parts: (number | string)[] = [1, ''];
      for (let k = next(40); k > 0; k--) parts.push([1, 2, 3, 4, 9, 'n', 0, 3, 1][next(9)]);
      b = assemble(parts, 'a\0bc\0'); // random token streams in a valid frame
    }
    attempt(tally, b.toString('hex'), () => checkDecoded(b));
  }
  t.comment(`blob fuzz: ${ITER} inputs, ${tally.ok} decoded, ${tally.rejected} rejected, slowest ${tally.slowestMs.toFixed(1)} ms`);
  t.equal(tally.ok + tally.rejected, ITER);
  t.ok(tally.rejected > ITER / 2, 'most mutations are caught');
  t.ok(tally.slowestMs < 2000, 'no input takes long');
});

t.test('hostile blobs stay bounded', async (t) => {
  // Many properties naming distinct offsets inside one long unterminated-looking string.
  const n = 50000;
  const parts: number[] = [1, 0];
  for (let i = 0; i < n; i++) parts.push(3, 0, i);
  parts.push(2, 9);
  const blob = assemble(parts, `${'a'.repeat(n + 1000)}\0`);
  const t0 = performance.now();
  const e = (() => {
    try {
      decodeFdt(blob, { maxSize: 8 << 20 });
    } catch (err) {
      return err as MultikernelError;
    }
    return undefined;
  })();
  t.equal(e?.code, 'ERR_MK_FDT_LIMIT');
  t.match(e?.message, /property names total more than maxSize/);
  t.ok(performance.now() - t0 < 2000, 'rejected quickly');
});

const TOKENS = ['/', '{', '}', ';', '=', '<', '>', '[', ']', '"', "'", ',', '&', '(', ')', ':', '/delete-node/', '/delete-property/', '/bits/', '/memreserve/', '/plugin/', '/dts-v1/', '0x1f', '017', '7', 'a', 'b@1', 'lbl:', '&lbl', '&{/a}', '//', '/*', '*/', '\\', '\n', ' ', '-', '~', '!', '?', '#', '"x"', "'c'", '64'];

t.test('mutated and random DTS text ends in a tree or a MultikernelError', async (t) => {
  const next = rng(0xd75);
  const tally: Tally = { ok: 0, rejected: 0, slowestMs: 0 };
  const texts = [...Object.values(SOURCES), ...fc.sample(fdtArb, { seed: 0x7e47, numRuns: 30 }).map((f) => printDts(f))];
  const ITER = 6000;
  for (let i = 0; i < ITER; i++) {
    let s = texts[next(texts.length)];
    const kind = next(4);
    if (kind === 0) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length + 1); // insert tokens
        s = s.slice(0, at) + TOKENS[next(TOKENS.length)] + s.slice(at);
      }
    } else if (kind === 1) {
      for (let k = 1 + next(4); k > 0; k--) {
        const at = next(s.length); // delete a span
        s = s.slice(0, at) + s.slice(at + 1 + next(6));
      }
    } else if (kind === 2) {
      s = s.slice(0, next(s.length + 1)); // truncate
    } else {
      s = '/dts-v1/;'; // random token soup
      for (let k = next(60); k > 0; k--) s += TOKENS[next(TOKENS.length)];
    }
    attempt(tally, s, () => {
      const { fdt } = parseDts(s, { limits: { maxSize: 1 << 20 } });
      decodeFdt(encodeFdt(fdt));
    });
  }
  t.comment(`DTS fuzz: ${ITER} inputs, ${tally.ok} parsed, ${tally.rejected} rejected, slowest ${tally.slowestMs.toFixed(1)} ms`);
  t.equal(tally.ok + tally.rejected, ITER);
  t.ok(tally.rejected > 0 && tally.ok > 0);
  t.ok(tally.slowestMs < 2000, 'no input takes long');
});

t.test('hostile DTS stays bounded', async (t) => {
  const cases: [string, RegExp][] = [
    [`/dts-v1/; / { a: a { }; p = ${'&a, '.repeat(100000)}&a; };`, /./],
    [`/dts-v1/; / { ${'x { '.repeat(100)}${'}; '.repeat(100)} };`, /maxDepth/],
    [`/dts-v1/; / { p = <${'('.repeat(100000)}`, /expression nested/],
    [`/dts-v1/; / { p = <(${'~'.repeat(100000)}1)>; };`, /expression nested/],
    [`/dts-v1/; / { a: a { }; }; ${'&a { b { }; }; '.repeat(20000)}`, /./],
  ];
  for (const [src, re] of cases) {
    const t0 = performance.now();
    try {
      parseDts(src);
    } catch (e) {
      t.ok(e instanceof MultikernelError, String(e));
      t.match((e as Error).message, re);
    }
    t.ok(performance.now() - t0 < 3000, `bounded: ${src.slice(0, 40)}`);
  }
});
