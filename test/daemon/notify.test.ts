// sd_notify over a real NOTIFY_SOCKET (a python3 receiver): the simulated system's forwardNotify,
// the bounded record it keeps, and the built `mkctl daemon` as systemd would run it: READY=1,
// STATUS=, WATCHDOG=1 at WATCHDOG_USEC/2, RELOADING=1 + MONOTONIC_USEC on SIGHUP then READY=1,
// a panic restarted under `restart` and left under `preserve`, a hang force-halted and restarted,
// the restart limit, STOPPING=1 on SIGTERM and exit 0, and every log line with its priority.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NOTIFIED_KEPT, SimulatedSystem } from '../../lib/system/simulated';
import { NotifyReceiver, PYTHON, spawnDaemon, workspace } from './receiver';

if (!PYTHON) {
  t.test('sd_notify to a real socket', { skip: 'python3 is not available to receive unix datagrams' }, async () => {});
} else {
  t.test('SimulatedSystem forwardNotify: the real socket gets it, the record keeps the last 100', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-fwd-'));
    const receiver = await NotifyReceiver.start(dir);
    const saved = process.env.NOTIFY_SOCKET;
    t.teardown(() => {
      receiver.close();
      fs.rmSync(dir, { recursive: true, force: true });
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
    });
    const sim = new SimulatedSystem({ stateDir: path.join(dir, 'sim'), forwardNotify: true });
    process.env.NOTIFY_SOCKET = receiver.path;
    t.equal(await sim.notify('READY=1\nSTATUS=up'), true);
    await receiver.waitFor(/^READY=1\nSTATUS=up$/);
    delete process.env.NOTIFY_SOCKET;
    t.equal(await sim.notify('WATCHDOG=1'), false, 'no NOTIFY_SOCKET: not under a supervisor');
    t.equal(NOTIFIED_KEPT, 100);
    for (let i = 0; i < 150; i++) await sim.notify(`n=${i}`);
    const kept = await sim.notified();
    t.equal(kept.length, 100);
    t.equal(kept[0], 'n=50');
    t.equal(kept.at(-1), 'n=149');
    t.equal(await new SimulatedSystem({ notifyTarget: true }).notify('READY=1'), true, 'without forwarding: notifyTarget as before');
  });

  t.test('mkctl daemon under a real NOTIFY_SOCKET', async (t) => {
    const ws = workspace(`version: 1
pool:
  cpus: 4
  memory: 2G
instances:
  web:
    cpus: 1
    memory: 256M
    kernel: vmlinux
    restart:
      policy: restart
      backoff: { initial: 200ms, max: 400ms }
      limit: { attempts: 2, window: 1m }
    onDaemonStop: stop
  keep:
    cpus: 1
    memory: 256M
    kernel: vmlinux
    restart: { policy: preserve }
  probed:
    cpus: 1
    memory: 256M
    kernel: vmlinux
    restart:
      policy: restart
      backoff: { initial: 100ms, max: 100ms }
    health: { interval: 100ms, timeout: 50ms, failures: 2 }
`);
    const receiver = await NotifyReceiver.start(ws.dir);
    t.teardown(() => {
      receiver.close();
      ws.cleanup();
    });
    const daemon = spawnDaemon(['-c', ws.specPath], { MULTIKERNEL_SIM_DIR: ws.simDir, NOTIFY_SOCKET: receiver.path, WATCHDOG_USEC: '400000' });
    t.teardown(() => daemon.child.kill('SIGKILL'));
    const ready = await receiver.waitFor(/^READY=1\nSTATUS=3\/3 instances running$/);
    t.ok(receiver.states.slice(0, ready).some((s) => /^STATUS=applying: \d+ steps$/.test(s)), 'STATUS while applying');
    await daemon.waitLine(/^<6>watchdog: a ping every 200 ms$/);

    // WATCHDOG=1 at WATCHDOG_USEC/2 = 200 ms: counted over a 2 s window
    const from = receiver.datagrams.length;
    await new Promise((r) => setTimeout(r, 2000));
    const pings = receiver.datagrams.slice(from).filter((d) => d.state === 'WATCHDOG=1');
    // 10 expected; a loaded machine delays timers (never hastens them)
    t.ok(pings.length >= 6 && pings.length <= 11, `${pings.length} pings in 2 s (10 expected)`);
    const gaps = pings.slice(1).map((p, i) => (p.t - pings[i]!.t) * 1000).sort((a, b) => a - b);
    const median = gaps[Math.floor(gaps.length / 2)]!;
    t.ok(median >= 190 && median <= 300, `median interval ${median.toFixed(1)} ms (200 expected)`);
    t.comment(`watchdog: ${pings.length} pings in 2 s, intervals ${gaps.map((g) => g.toFixed(0)).join(' ')} ms`);

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, as the receiver's clock), then READY=1
    let mark = receiver.datagrams.length;
    daemon.child.kill('SIGHUP');
    const reloading = await receiver.waitFor(/^RELOADING=1\nMONOTONIC_USEC=\d+$/, mark);
    const usec = Number(/MONOTONIC_USEC=(\d+)/.exec(receiver.datagrams[reloading]!.state)![1]);
    const arrived = receiver.datagrams[reloading]!.t * 1e6;
    t.ok(usec <= arrived && arrived - usec < 1e6, `MONOTONIC_USEC ${usec} is CLOCK_MONOTONIC just before it arrived (${arrived.toFixed(0)})`);
    await receiver.waitFor(/^READY=1\nSTATUS=3\/3 instances running$/, reloading);

    // a panic under restart: restarted after 200 ms; under preserve: left loaded
    const sim = new SimulatedSystem({ stateDir: ws.simDir });
    t.teardown(() => sim.dispose());
    const idOf = async (name: string) => Number((await sim.readFile(`/sys/fs/multikernel/instances/${name}/id`)).toString());
    const status = async (name: string) => (await sim.readFile(`/sys/fs/multikernel/instances/${name}/status`)).toString().trim();
    mark = receiver.datagrams.length;
    await sim.panic(await idOf('web'));
    await receiver.waitFor(/^STATUS=2\/3 instances running; web restarting in 200 ms \(attempt 1\/2\)$/, mark);
    await receiver.waitFor(/^STATUS=3\/3 instances running$/, mark);
    t.equal(await status('web'), 'active');
    await daemon.waitLine(/^<4>web crashed \(its kernel halted by itself: active -> loaded\)$/);
    await daemon.waitLine(/^<5>restarting web \(attempt 1\/2, after it crashed\)$/);
    await sim.panic(await idOf('keep'));
    await daemon.waitLine(/^<5>keep left loaded for a post-mortem \(restart policy preserve\)$/);
    await receiver.waitFor(/^STATUS=2\/3 instances running; keep crashed, preserved$/, mark);

    // a hang with a health check: force-halted, restarted
    mark = receiver.datagrams.length;
    await sim.hang(await idOf('probed'));
    await daemon.waitLine(/^<4>probed hangs: 2 probes unanswered \(policy restart\)$/);
    await daemon.waitLine(/^<5>probed force-halted$/);
    await daemon.waitLine(/^<5>restarting probed \(attempt 1\/5, after a hang\)$/);
    await receiver.waitFor(/^STATUS=2\/3 instances running; keep crashed, preserved$/, mark + 1);
    t.equal(await status('probed'), 'active');

    // the limit: 2 restarts within the window, the third crash is given up on, at error priority
    await sim.panic(await idOf('web'));
    await daemon.waitLine(/^<5>restarting web \(attempt 2\/2, after it crashed\)$/);
    await new Promise((r) => setTimeout(r, 300));
    await sim.panic(await idOf('web'));
    await daemon.waitLine(/^<3>web: gave up after 2 restarts within 60 s; left loaded until a reload \(SIGHUP\)$/);
    await receiver.waitFor(/^STATUS=1\/3 instances running; web gave up after 2 restarts within 60 s; keep crashed, preserved$/);

    // SIGTERM: STOPPING=1, web (onDaemonStop: stop) is not running any more: nothing to halt; exit 0
    mark = receiver.datagrams.length;
    daemon.child.kill('SIGTERM');
    const exit = await daemon.exited;
    t.same(exit, { code: 0, signal: null });
    // (a watchdog ping may still go out between the signal and STOPPING=1: the pings have their own test)
    t.match(receiver.states.slice(mark).filter((s) => s !== 'WATCHDOG=1'), [/^STOPPING=1/]);
    t.equal(await status('probed'), 'active', 'onDaemonStop: keep');
    for (const line of daemon.lines) t.match(line, /^<[3-7]>\S/, 'a journald priority on every line');
    t.notOk(daemon.lines.some((l) => /\d\d:\d\d:\d\d/.test(l)), 'no timestamps (journald adds them)');
  });

  t.test('WATCHDOG_PID of another process: no pings; a bad spec: exit 2, STATUS says why', async (t) => {
    const ws = workspace('version: 1\ninstances:\n  web:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n');
    const receiver = await NotifyReceiver.start(ws.dir);
    t.teardown(() => {
      receiver.close();
      ws.cleanup();
    });
    fs.writeFileSync(ws.specPath, 'version: 1\npool: { cpus: 2, memory: 1G }\ninstances:\n  web: { cpus: 1, memory: 256M, kernel: vmlinux }\n');
    const daemon = spawnDaemon(['-c', ws.specPath], { MULTIKERNEL_SIM_DIR: ws.simDir, NOTIFY_SOCKET: receiver.path, WATCHDOG_USEC: '100000', WATCHDOG_PID: '1' });
    t.teardown(() => daemon.child.kill('SIGKILL'));
    await receiver.waitFor(/^READY=1/);
    await new Promise((r) => setTimeout(r, 500));
    t.notOk(receiver.states.includes('WATCHDOG=1'));
    daemon.child.kill('SIGINT');
    t.same(await daemon.exited, { code: 0, signal: null }, 'SIGINT stops it as SIGTERM does');

    fs.writeFileSync(ws.specPath, 'version: 1\ninstances:\n  web:\n    cpus: 1\n    memory: 12X\n');
    const mark = receiver.datagrams.length;
    const bad = spawnDaemon(['-c', ws.specPath], { MULTIKERNEL_SIM_DIR: ws.simDir, NOTIFY_SOCKET: receiver.path });
    t.same(await bad.exited, { code: 2, signal: null });
    t.match(bad.lines.find((l) => l.startsWith('<3>')), /^<3>.*host\.yaml:5:\d+: \/instances\/web\/memory: /);
    await receiver.waitFor(/^STATUS=spec .*host\.yaml could not be loaded: /, mark);
  });
}
