// Every TypeScript example of the README runs, as a user would run it: imports of "multikernel"
// resolve to the built package (npm test builds dist/ first), through tap's TypeScript loader.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const examples = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
const loader = path.join(root, 'node_modules', '@tapjs', 'typescript', 'dist', 'esm', 'import.mjs');

t.test('the README has examples, and each imports the package by name', async (t) => {
  t.ok(examples.length >= 1, `${examples.length} examples`);
  for (const code of examples) t.match(code, /from 'multikernel(\/[a-z]+)?'/);
});

examples.forEach((code, i) => {
  t.test(`README example ${i + 1} runs`, async (t) => {
    // inside the package, so that "multikernel" resolves to it by its own name
    const dir = fs.mkdtempSync(path.join(root, '.readme-example-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'example.mts');
    fs.writeFileSync(file, code);
    // type-checked as a user's strict ES module project would check it
    const tsconfig = path.join(dir, 'tsconfig.json');
    const compilerOptions = { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, skipLibCheck: true, types: ['node'], noEmit: true };
    fs.writeFileSync(tsconfig, JSON.stringify({ compilerOptions, files: ['example.mts'] }));
    const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', tsconfig], { cwd: root, encoding: 'utf8' });
    t.equal(tsc.status, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
    const env = { ...process.env, TS_NODE_PROJECT: tsconfig, TS_NODE_TRANSPILE_ONLY: '1' };
    const r = spawnSync(process.execPath, ['--import', loader, file], { cwd: root, encoding: 'utf8', timeout: 120_000, env });
    t.equal(r.status, 0, r.stderr);
    // the comments of the example say what it prints: hold them to it
    for (const m of code.matchAll(/console\.log\([^;]*;\s*\/\/ (.+)$/gm)) {
      const said = m[1]!.replace(/ : .*$/, '').trim();
      t.ok(r.stdout.includes(said), `prints "${said}"`);
    }
  });
});
