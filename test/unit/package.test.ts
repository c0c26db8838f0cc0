// The package as users get it: the compiled dist/ (npm test builds it first), imported by name.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const node = process.execPath;

t.test('import { ... } from "multikernel" works from an ES module, without loading native code', async (t) => {
  const out = execFileSync(
    node,
    ['--input-type=module', '-e', "import * as mk from 'multikernel'; console.log(JSON.stringify({ sim: typeof mk.SimulatedSystem, run: typeof mk.runSelftest, dts: typeof mk.parseDts, n: Object.keys(mk).length }));"],
    { cwd: root, encoding: 'utf8' },
  );
  const r = JSON.parse(out) as { sim: string; run: string; dts: string; n: number };
  t.same({ sim: r.sim, run: r.run, dts: r.dts }, { sim: 'function', run: 'function', dts: 'function' });
  t.ok(r.n > 50, `${r.n} exports`);
});

t.test('require("multikernel") works from CommonJS and loads no .node file until LinuxSystem needs one', async (t) => {
  const out = execFileSync(
    node,
    ['-e', "const mk = require('multikernel'); new mk.LinuxSystem(); console.log(Object.keys(require.cache).filter((f) => f.endsWith('.node')).length)"],
    { cwd: root, encoding: 'utf8' },
  );
  t.equal(out.trim(), '0');
});

t.test('mkctl selftest --simulated: the README main command', async (t) => {
  const r = spawnSync(node, [path.join(root, 'dist', 'cli', 'mkctl.js'), 'selftest', '--simulated'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^probe +\/proc\/filesystems lists "multikernel"/m);
  t.match(r.stdout, /^exec +uname -a -> exit 0: Linux selftest/m);
  t.match(r.stdout, /selftest passed: instance "selftest" \(id 1\)/);
  const json = spawnSync(node, [path.join(root, 'dist', 'cli', 'mkctl.js'), 'selftest', '--simulated', '--json', '--cpus', '2', '--memory', '512M'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  t.equal(json.status, 0, json.stderr);
  const result = JSON.parse(json.stdout) as { instance: { cpus: number[]; memoryBytes: string }; steps: unknown[] };
  t.same({ cpus: result.instance.cpus.length, memory: result.instance.memoryBytes }, { cpus: 2, memory: String(512 * 1024 * 1024) });
});
