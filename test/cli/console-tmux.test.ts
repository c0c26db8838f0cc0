// mkctl console on a real terminal: tmux runs the built mkctl against a simulated host with a
// running instance; keys typed into the pane reach the instance's console and its answer shows;
// Ctrl-] then "." detaches, mkctl exits 0 and the terminal's settings are as before.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { Host } from '../../lib';
import { SimulatedSystem, placeholderImage } from '../../lib/simulated';
import { MKCTL, simulatedHost } from './helpers';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

/**
 * A tmux server of our own (on a socket in the test's directory) whose pane, 120x40, runs `mkctl
 * <args>` and then prints its exit status and whether the terminal settings are as before.
 */
function pane(t: Test, sim: { env: Record<string, string>; dir: string }, args: string) {
  const socket = path.join(sim.dir, 'tmux.sock');
  const tmux = (...a: string[]) => spawnSync('tmux', ['-S', socket, '-f', '/dev/null', ...a], { encoding: 'utf8' });
  t.teardown(() => void tmux('kill-server'));
  const env = Object.entries({ ...sim.env, HOME: sim.dir, PATH: process.env.PATH ?? '/usr/bin:/bin' })
    .map(([k, v]) => `${k}='${v}'`)
    .join(' ');
  const script =
    `before=$(stty -g); env ${env} '${process.execPath}' '${MKCTL}' ${args}; code=$?; ` +
    `if [ "$(stty -g)" = "$before" ]; then restored=yes; else restored=no; fi; echo "EXIT=$code RESTORED=$restored"; sleep 60`;
  const started = tmux('new-session', '-d', '-s', 'mk', '-x', '120', '-y', '40', script);
  t.equal(started.status, 0, started.stderr);
  const screen = (): string => tmux('capture-pane', '-p', '-t', 'mk').stdout;
  const waitFor = async (what: RegExp, ms = 15_000): Promise<string> => {
    const end = Date.now() + ms;
    for (;;) {
      const s = screen();
      if (what.test(s)) return s;
      if (Date.now() > end) throw new Error(`the pane never showed ${what}:\n${s}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { tmux, waitFor };
}

async function runningHost(t: Test) {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR });
  t.teardown(() => system.dispose());
  const host = await Host.open({ system });
  await host.pool.init({ cpus: 2, memory: '1G' });
  const web = await host.createInstance({ name: 'web', cpus: 1, memory: '256M' });
  await web.load(placeholderImage());
  await web.start();
  return sim;
}

if (!hasTmux) {
  t.plan(0, 'tmux is not installed (apt-get install tmux)');
} else {
  t.test('type into mkctl console in tmux, see the console answer, detach with Ctrl-] .', async (t) => {
    const sim = await runningHost(t);
    const { tmux, waitFor } = pane(t, sim, 'console web');

    await waitFor(/connected to the console of web \(id 1\); detach with Ctrl-\] then \./);
    t.equal(tmux('send-keys', '-t', 'mk', '-l', 'echo hello-from-tmux').status, 0);
    t.equal(tmux('send-keys', '-t', 'mk', 'Enter').status, 0);
    let s = await waitFor(/^hello-from-tmux\s*$/m);
    t.match(s, /echo hello-from-tmux\s*\n(.*\n)*?hello-from-tmux\s*\n\/ #/, 'the console echoed the line and ran it');
    tmux('send-keys', '-t', 'mk', '-l', 'uname -n');
    tmux('send-keys', '-t', 'mk', 'Enter');
    await waitFor(/^web\s*$/m);

    // Ctrl-] then "."
    t.equal(tmux('send-keys', '-t', 'mk', 'C-]').status, 0);
    t.equal(tmux('send-keys', '-t', 'mk', '-l', '.').status, 0);
    s = await waitFor(/EXIT=\d+ RESTORED=\w+/);
    t.match(s, /detached from web/);
    t.match(s, /EXIT=0 RESTORED=yes/, 'mkctl exited 0 and the terminal settings were restored');
  });

  t.test('mkctl exec -it on a terminal: the pane size, raw stdin, and an exit while the terminal is idle', async (t) => {
    const sim = await runningHost(t);
    const { waitFor } = pane(t, sim, "exec -it web -- sh -c 'sleep 1; stty size'");
    const s = await waitFor(/EXIT=\d+ RESTORED=\w+/, 10_000);
    t.match(s, /^40 120\s*$/m, 'the command ran on a pty the size of the pane');
    t.match(s, /EXIT=0 RESTORED=yes/, 'mkctl left once the command exited, the terminal as before');
  });
}
