// mkctl demo and mkctl completion.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MKCTL, inProcess, simulatedHost, spawnMkctl } from './helpers';

t.test('demo: the whole story on a simulated host in memory', async (t) => {
  const r = await inProcess(['demo'], { NO_COLOR: '1' });
  t.equal(r.code, 0, r.stderr);
  for (const line of [
    /^pool {5}init: CPUs [\d,]+ \(physical ids\), 2 GiB/m,
    /^create {3}web \(id 1\): CPUs [\d,]+, 512 MiB; db \(id 2\): CPU \d+, 256 MiB/m,
    /^start {4}web, with its console selected first, so the boot log is kept:\n {9}\| \[ +0\.0+\] Linux version/m,
    /^exec {5}web: uname -a, .*: exit 0\n {9}\| Linux web /m,
    /^crash {4}db panics .*"db active -> loaded \(crashed\)"/m,
    /^probe {4}db: stopped; web: alive$/m,
    /^pool {5}teardown: everything back to the host$/m,
    /^ {9}web active -> loaded \(requested\)$/m,
  ]) {
    t.match(r.stdout, line);
  }
  t.notMatch(r.stdout, /\u001b\[/, 'no colour without a terminal');
  const spawned = await spawnMkctl(['demo'], { NO_COLOR: '1' });
  t.equal(spawned.code, 0, spawned.stderr);
  t.match(spawned.stdout, /^done: the same calls run on a real multikernel host/m);
});

t.test('demo: paced and coloured on a terminal, interrupted, usage', async (t) => {
  const controller = new AbortController();
  const running = inProcess(['demo'], {}, { tty: true, signal: controller.signal });
  setTimeout(() => controller.abort(new Error('received SIGINT')), 300);
  const r = await running;
  t.equal(r.code, 130, 'Ctrl-C');
  t.match(r.stdout, /\u001b\[1mmkctl demo\u001b\[0m/, 'bold on a terminal');
  t.notMatch(r.stdout, /^done/m, 'stopped before the end');
  const fast = await inProcess(['demo', '--fast'], {}, { tty: true });
  t.equal(fast.code, 0);
  t.equal((await inProcess(['demo', 'extra'], {})).code, 2);
});

t.test('completion: bash and zsh scripts made from the command table', async (t) => {
  const bash = await inProcess(['completion', 'bash'], {});
  t.equal(bash.code, 0);
  t.match(bash.stdout, /complete -o default -F _mkctl mkctl/);
  t.match(bash.stdout, /compgen -W "[^"]*\bstatus\b[^"]*\bdemo\b[^"]*\bqemu\b/);
  const zsh = await inProcess(['completion', 'zsh'], {});
  t.match(zsh.stdout, /^#compdef mkctl\n[\s\S]*bashcompinit[\s\S]*_mkctl\(\)/);
  for (const bad of [[], ['fish'], ['bash', 'zsh']]) t.equal((await inProcess(['completion', ...bad], {})).code, 2, bad.join(' ') || 'nothing');

  // the bash script works: commands, subcommands, options, and instance names from `mkctl list --json`
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const { Host } = await import('../../lib');
  const { SimulatedSystem } = await import('../../lib/simulated');
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR });
  const host = await Host.open({ system });
  await host.pool.init({ cpus: 2, memory: '1G' });
  await host.createInstance({ name: 'web', cpus: 1, memory: '128M' });
  await system.dispose();
  const bin = path.join(sim.dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'mkctl'), `#!/bin/sh\nexec "${process.execPath}" "${MKCTL}" "$@"\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(sim.dir, 'c.bash'), bash.stdout);
  const complete = (words: string[]): string => {
    const script = `source ${path.join(sim.dir, 'c.bash')}; COMP_WORDS=(${words.map((w) => `"${w}"`).join(' ')}); COMP_CWORD=${words.length - 1}; _mkctl; echo "\${COMPREPLY[*]}"`;
    const out = spawnSync('bash', ['-c', script], { env: { ...sim.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
    return out.stdout.trim();
  };
  t.equal(complete(['mkctl', 'qe']), 'qemu');
  t.equal(complete(['mkctl', 'qemu', '']), 'run');
  t.equal(complete(['mkctl', 'list', '--js']), '--json');
  t.equal(complete(['mkctl', 'start', 'w']), 'web', 'an instance name');
});
