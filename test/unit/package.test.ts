// The package as users get it: the compiled dist/ (npm test builds it first), imported by name.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const node = process.execPath;

// The package root is the lifecycle API and little else; tooling lives behind subpath exports.
// A change to this list is a change to the public API: make it on purpose.
const ROOT_EXPORTS = [
  'ConsoleStream',
  'ExecProcess',
  'Host',
  'HostWatcher',
  'Instance',
  'MultikernelError',
  'OldKerfFormatError',
  'Pool',
  'applyOverlay',
  'applyOverlayBlob',
  'identifyKernelImage',
  'isSystemError',
  'prepareKernelImage',
];
const SUBPATHS: Record<string, string[]> = {
  system: ['LinuxSystem', 'KEXEC_MULTIKERNEL', 'MK_DEVICE_TREE', 'probeMultikernelSupport'],
  simulated: ['SimulatedSystem', 'FaultInjector', 'SimStateError', 'placeholderImage'],
  model: ['encodeOverlay', 'parsePool', 'encodeBaseline'],
  fdt: ['decodeFdt', 'encodeFdt', 'parseDts', 'printDts'],
  exec: ['execOverStream', 'AGENT_PORT'],
  qemu: ['runQemu', 'readKernelCache'],
  selftest: ['runSelftest'],
  spec: ['parseSpec', 'loadSpecFile', 'SpecError', 'plan', 'apply'],
  daemon: ['Daemon', 'journalLine', 'loadMetrics'],
};

t.test('the root exports exactly the lifecycle API, from an ES module, without loading native code', async (t) => {
  const out = execFileSync(
    node,
    // default and __esModule: Node's wrapping of a CommonJS module for import, not exports of ours
    ['--input-type=module', '-e', "import * as mk from 'multikernel'; console.log(JSON.stringify(Object.keys(mk).filter((k) => k !== 'default' && k !== '__esModule').sort()))"],
    { cwd: root, encoding: 'utf8' },
  );
  t.same(JSON.parse(out), ROOT_EXPORTS);
});

t.test('every subpath loads from ES modules and CommonJS', async (t) => {
  for (const [sub, names] of Object.entries(SUBPATHS)) {
    const esm = execFileSync(node, ['--input-type=module', '-e', `import * as m from 'multikernel/${sub}'; console.log(JSON.stringify(Object.keys(m)))`], { cwd: root, encoding: 'utf8' });
    const cjs = execFileSync(node, ['-e', `console.log(JSON.stringify(Object.keys(require('multikernel/${sub}'))))`], { cwd: root, encoding: 'utf8' });
    for (const name of names) {
      t.ok((JSON.parse(esm) as string[]).includes(name), `import { ${name} } from 'multikernel/${sub}'`);
      t.ok((JSON.parse(cjs) as string[]).includes(name), `require('multikernel/${sub}').${name}`);
    }
  }
  const internal = spawnSync(node, ['-e', "require('multikernel/dist/host')"], { cwd: root, encoding: 'utf8' });
  t.match(internal.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/, 'internal files are not reachable');
});

t.test('require("multikernel") and "multikernel/system" load no .node file until LinuxSystem needs one', async (t) => {
  const out = execFileSync(
    node,
    ['-e', "const mk = require('multikernel'); const s = require('multikernel/system'); new s.LinuxSystem(); console.log(typeof mk.Host.open, Object.keys(require.cache).filter((f) => f.endsWith('.node')).length)"],
    { cwd: root, encoding: 'utf8' },
  );
  t.equal(out.trim(), 'function 0');
});

t.test('TypeScript consumers resolve the root and every subpath, with node10 and node16 module resolution', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-consumer-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'multikernel'));
  fs.symlinkSync(path.join(root, 'node_modules', '@types'), path.join(dir, 'node_modules', '@types'));
  const lines = [
    "import { Host, type InstanceSpec, type PoolSnapshot } from 'multikernel';",
    ...Object.entries(SUBPATHS).map(([sub, names], i) => `import { ${names[0]} as n${i} } from 'multikernel/${sub}';`),
    'export const spec: InstanceSpec = { name: "a", cpus: 1, memory: "1G" };',
    'export type P = PoolSnapshot;',
    `export const all = [Host, ${Object.keys(SUBPATHS).map((_, i) => `n${i}`).join(', ')}];`,
  ];
  fs.writeFileSync(path.join(dir, 'consumer.ts'), lines.join('\n') + '\n');
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  for (const [module, resolution] of [['commonjs', 'node10'], ['node16', 'node16']]) {
    const r = spawnSync(node, [tsc, '--noEmit', '--strict', '--skipLibCheck', '--module', module, '--moduleResolution', resolution, '--types', 'node', 'consumer.ts'], { cwd: dir, encoding: 'utf8' });
    t.equal(r.status, 0, `${resolution}: ${r.stdout}${r.stderr}`);
  }
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
