// lib/units: the size parser mkctl and the QEMU harness share, and the rule that the CLI takes it
// from there rather than from the QEMU harness.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { parseMemoryMiB } from '../../lib/units';

t.test('parseMemoryMiB: MiB by default, M and G suffixes, numbers', async (t) => {
  t.equal(parseMemoryMiB('512'), 512);
  t.equal(parseMemoryMiB('512M'), 512);
  t.equal(parseMemoryMiB(' 2g '), 2048);
  t.equal(parseMemoryMiB('1m'), 1);
  t.equal(parseMemoryMiB('32M'), 32, 'no QEMU minimum here');
  t.equal(parseMemoryMiB(128), 128);
  for (const bad of ['1T', '512K', 'lots', '', '-1', '1.5G', '0', '0G']) t.throws(() => parseMemoryMiB(bad), RangeError, JSON.stringify(bad));
  t.throws(() => parseMemoryMiB('lots'), { message: 'memory must look like 512, 512M or 2G, got "lots"' });
  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 60]) t.throws(() => parseMemoryMiB(bad), { name: 'RangeError', message: /whole number of MiB >= 1/ }, String(bad));
});

t.test('no CLI command except `qemu run` imports from the QEMU harness', async (t) => {
  const dir = path.resolve(__dirname, '..', '..', 'lib', 'cli');
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && f !== path.join('commands', 'qemu-run.ts'));
  t.ok(files.includes(path.join('commands', 'selftest.ts')), 'the selftest command is among the files checked');
  for (const f of files) {
    const imports = readFileSync(path.join(dir, f), 'utf8').split('\n').filter((l) => /^import .* from '.*\/qemu(\/[^']*)?';$/.test(l));
    t.same(imports, [], f);
  }
});
