/**
 * lib/ and a test's worker scripts as plain JavaScript in `out`, beside symlinks to the
 * repository's build/, node_modules/ and package.json: a process started through the TypeScript
 * loader costs ~1.7 s of CPU, one on plain JavaScript ~0.1 s, and the kill tests start hundreds.
 * Used by test/spec/apply-kill.test.ts, test/simulated/state-stress.test.ts and
 * test/lifecycle/kill-matrix.test.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

const root = path.join(__dirname, '..', '..');

/**
 * Transpiles every .ts file of lib/ and the given test files (paths from the repository root)
 * into `out`; returns the .js path of each test file, in order.
 */
export function compileWorkers(out: string, files: readonly string[]): string[] {
  const emit = (rel: string): void => {
    const source = fs.readFileSync(path.join(root, rel), 'utf8');
    const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true }, fileName: rel }).outputText;
    fs.mkdirSync(path.join(out, path.dirname(rel)), { recursive: true });
    fs.writeFileSync(path.join(out, rel.replace(/\.ts$/, '.js')), js);
  };
  for (const rel of fs.readdirSync(path.join(root, 'lib'), { recursive: true }) as string[]) {
    if (rel.endsWith('.ts') && !rel.endsWith('.d.ts')) emit(path.join('lib', rel));
  }
  for (const rel of files) emit(rel);
  for (const link of ['build', 'node_modules', 'package.json']) fs.symlinkSync(path.join(root, link), path.join(out, link));
  return files.map((rel) => path.join(out, rel.replace(/\.ts$/, '.js')));
}
