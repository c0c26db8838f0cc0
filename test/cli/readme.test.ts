// The README's command lines run as written: its first commands (npx mkctl demo, from the
// package directory) and the mkctl example on the simulated host.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { simulatedHost, spawnMkctl } from './helpers';

const root = path.join(__dirname, '..', '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const shBlocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);

t.test('the first commands: npm ci, npx mkctl demo, npm test', async (t) => {
  const first = shBlocks[0]!.split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
  t.same(first, ['npm ci', 'npx mkctl demo', 'npm test']);
  // npm ci and npm test are what CI itself runs (.ci/run); the one in between runs here
  const r = spawnSync('npx', ['--no-install', 'mkctl', 'demo'], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^done: the same calls run on a real multikernel host/m);
});

t.test('the mkctl example on the simulated host', async (t) => {
  const block = shBlocks.find((b) => b.includes('export MULTIKERNEL_BACKEND=simulated'));
  t.ok(block, 'the README has it');
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  for (const line of block!.split('\n').filter((l) => l.startsWith('mkctl'))) {
    for (const command of line.split(' && ')) {
      const args = command.trim().split(/\s+/).slice(1);
      const r = await spawnMkctl(args, sim.env);
      t.equal(r.code, 0, `${command}: ${r.stderr}`);
      if (args[0] === 'exec') t.match(r.stdout, /^Linux web /, 'the command ran inside');
    }
  }
});

t.test("the README's host spec: valid, and mkctl apply converges to it on the simulated host", async (t) => {
  const yaml = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!).find((b) => b.startsWith('version: 1'));
  t.ok(yaml, 'the README has it');
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const dir = t.testdir();
  // the kernel it names is this machine's to provide: here a placeholder the simulated kexec takes
  const { placeholderImage } = await import('../../lib/simulated');
  fs.writeFileSync(path.join(dir, 'vmlinuz-mk'), placeholderImage());
  const spec = path.join(dir, 'host.yaml');
  fs.writeFileSync(spec, yaml!.replace('/boot/vmlinuz-mk', path.join(dir, 'vmlinuz-mk')));
  const plan = await spawnMkctl(['plan', '-f', spec], sim.env);
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stdout, /create web/);
  const apply = await spawnMkctl(['apply', '-f', spec], sim.env);
  t.equal(apply.code, 0, apply.stderr);
  const again = await spawnMkctl(['plan', '-f', spec, '--json'], sim.env);
  t.match(JSON.parse(again.stdout), { converged: true, steps: [] }, 'a second plan has nothing to do');
});
