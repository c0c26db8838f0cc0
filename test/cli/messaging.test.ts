// mkctl show, dump, probe, watch, console and exec on a simulated host: in this process (for
// coverage and the edge cases: terminals, raw mode, resizes, interrupts) and as real processes.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import t, { type Test } from 'tap';
import type { CliInput, CliIo } from '../../lib/cli/command';
import { consoleCommand, EscapeDetector } from '../../lib/cli/commands/console';
import { parseEnv, parseUser, splitExecArgs } from '../../lib/cli/commands/exec';
import { describeDevice, showText } from '../../lib/cli/commands/show';
import { eventJson, eventLine } from '../../lib/cli/commands/watch';
import { rawMode, styles, terminalSize } from '../../lib/cli/common';
import { main, runProcess } from '../../lib/cli/mkctl';
import { Host } from '../../lib';
import { decodeFdt } from '../../lib/fdt';
import { SimulatedSystem, placeholderImage } from '../../lib/simulated';
import { MKCTL, simulatedHost, spawnMkctl } from './helpers';

interface Captured {
  code: number;
  out: Buffer;
  stdout: string;
  stderr: string;
}

/** A terminal's stdin: a stream with isTTY, setRawMode (recorded) and isRaw. */
function terminalInput(): PassThrough & { isTTY: true; isRaw: boolean; modes: boolean[]; setRawMode(mode: boolean): void } {
  const input = new PassThrough() as PassThrough & { isTTY: true; isRaw: boolean; modes: boolean[]; setRawMode(mode: boolean): void };
  input.isTTY = true;
  input.isRaw = false;
  input.modes = [];
  input.setRawMode = (mode: boolean) => {
    input.modes.push(mode);
    input.isRaw = mode;
  };
  return input;
}

interface RunOptions {
  stdin?: CliInput;
  /** stdout is a terminal: with a size and resize events when given */
  terminal?: { rows?: number; columns?: number; events?: EventEmitter };
  signal?: AbortSignal;
  /** called with the growing stdout text as it is written */
  onOutput?: (text: string) => void;
  /** called with the growing stderr text as it is written */
  onStderr?: (text: string) => void;
}

/** main() in this process, stdout kept as bytes. */
async function run(args: string[], env: Record<string, string>, options: RunOptions = {}): Promise<Captured> {
  const out: Buffer[] = [];
  let err = '';
  const term = options.terminal;
  const stdout = {
    write: (d: string | Uint8Array) => {
      out.push(Buffer.from(d));
      options.onOutput?.(Buffer.concat(out).toString());
      return true;
    },
    isTTY: term !== undefined,
    // read when asked: a test changes the size, then emits 'resize'
    get rows() {
      return term?.rows;
    },
    get columns() {
      return term?.columns;
    },
    ...(term?.events !== undefined
      ? { on: (e: 'resize', f: () => void) => term.events!.on(e, f), removeListener: (e: 'resize', f: () => void) => term.events!.removeListener(e, f) }
      : {}),
  };
  const io: CliIo = {
    stdout,
    stderr: {
      write: (s: string | Uint8Array) => {
        err += String(s);
        options.onStderr?.(err);
        return true;
      },
    },
    env: { ...env, HOME: '/tmp' },
    cwd: process.cwd(),
    signal: options.signal ?? new AbortController().signal,
    ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
  };
  const code = await main(args, io);
  const all = Buffer.concat(out);
  return { code, out: all, stdout: all.toString(), stderr: err };
}

/** A simulated host with a pool and three instances: web (active, with a PCI device), idle (ready), stuck (active). */
async function setup(t: Test) {
  const sim = simulatedHost();
  t.teardown(sim.cleanup);
  const system = new SimulatedSystem({ stateDir: sim.env.MULTIKERNEL_SIM_DIR });
  t.teardown(() => system.dispose());
  const host = await Host.open({ system });
  await host.pool.init({ cpus: 4, memory: '1G', devices: ['0000:00:04.0'] });
  const web = await host.createInstance({ name: 'web', cpus: 1, memory: '256M', devices: ['0000:00:04.0'] });
  await web.load(placeholderImage());
  await web.start();
  const idle = await host.createInstance({ name: 'idle', cpus: 1, memory: '128M' });
  return { env: sim.env, system, host, web, idle };
}

const until = async (what: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
};

t.test('show: text, --json, --probe, by id; usage and kernel errors', async (t) => {
  const { env, web } = await setup(t);
  let r = await run(['show', 'web'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^name {6}web\nid {8}1\nstatus {4}active\ncpus {6}\d+ \(1 CPU\)\nmemory {4}256 MiB\n {10}0x[0-9a-f]+-0x[0-9a-f]+ {2}256 MiB\ndevices {3}pci 0000:00:04\.0 \[8086:[0-9a-f]{4}\]\nimage {5}multikernel, \d+ segments at 0x[0-9a-f]+, mode file, cmdline "console=mktty0"\n$/);
  r = await run(['show', String(web.id), '--json', '--probe'], env);
  const doc = JSON.parse(r.stdout);
  t.match(doc, { version: 1, instance: { name: 'web', id: web.id, status: 'active', memoryBytes: String(256 << 20), devices: [{ type: 'pci', pciId: '0000:00:04.0' }], liveness: 'alive' } });
  t.match(doc.instance.image, { id: web.id, cmdline: 'console=mktty0' });
  r = await run(['show', 'idle', '--probe'], env);
  t.match(r.stdout, /^image {5}none\nliveness  stopped\n/m);
  r = await run(['show', 'idle', '--json'], env);
  t.notOk('liveness' in JSON.parse(r.stdout).instance);
  r = await run(['show'], env);
  t.equal(r.code, 2);
  t.match(r.stderr, /^mkctl show: which instance\? usage: mkctl show NAME\n\(see mkctl show --help\)\n$/);
  r = await run(['show', 'a', 'b'], env);
  t.equal(r.code, 2);
  t.match(r.stderr, 'unexpected argument "b"');
  r = await run(['show', 'nope', '--json'], env);
  t.equal(r.code, 1);
  t.match(JSON.parse(r.stdout), { version: 1, error: { code: 'ERR_MK_INSTANCE_NOT_FOUND', exitCode: 1 } });
  r = await run(['show', '--help'], env);
  t.match(r.stdout, /^usage: mkctl show NAME[\s\S]*--json: \{"version": 1, "instance"/);
});

t.test('show text: CPUs, memory, devices and image, present or not', async (t) => {
  const s = styles({ stdout: { write: () => true }, stderr: { write: () => true }, env: {}, cwd: '/', signal: new AbortController().signal });
  const text = showText(
    {
      name: 'x',
      id: 3,
      status: 'ready',
      cpus: [2, 3, 4],
      memoryBytes: 0n,
      memory: [],
      devices: [
        { type: 'pci', pciId: '0000:00:05.0', vendorId: 0x8086, deviceId: 0x100e, path: '/pci@0/pci@5,0', alias: 'eth0' },
        { type: 'platform', name: 'uart0', deviceName: 'serial', acpiHid: 'PNP0501', path: '/resources/devices/uart0' },
      ],
    },
    undefined,
    s,
  );
  t.equal(text, 'name      x\nid        3\nstatus    ready\ncpus      2-4 (3 CPUs)\nmemory    none\ndevices   pci 0000:00:05.0 [8086:100e] (eth0)\n          platform uart0 (serial, PNP0501)\nimage     none\n');
  t.match(showText({ name: 'y', id: 4, status: 'ready', cpus: [], memoryBytes: 0n, memory: [], devices: [] }, 'hung', s), /^cpus {6}none\n[\s\S]*^devices {3}none\n[\s\S]*^liveness  hung\n$/m);
  t.equal(describeDevice({ type: 'platform', name: 'rtc', path: '/resources/devices/rtc' }), 'platform rtc');
  t.equal(describeDevice({ type: 'pci', pciId: '0000:00:06.0', vendorId: 1, deviceId: 2, path: '/pci@0/pci@6,0' }), 'pci 0000:00:06.0 [0001:0002]');
});

t.test('dump: the blob, DTS, --json; never binary to a terminal', async (t) => {
  const { env, web } = await setup(t);
  const blob = await web.deviceTree();
  t.equal(Buffer.from(decodeFdt(blob).root.properties.find((p) => p.name === 'model')!.value).toString(), 'web\0', 'Instance.deviceTree(): the rendered tree');
  let r = await run(['dump', 'web'], env);
  t.equal(r.code, 0, r.stderr);
  t.same(r.out, blob, 'the blob as the kernel renders it');
  r = await run(['dump', 'web', '--dts'], env, { terminal: {} });
  t.match(r.stdout, /^\/dts-v1\/;\n\n\/ \{\n\tcompatible = "multikernel-v1";\n\tmodel = "web";\n/);
  r = await run(['dump', 'web', '--json'], env);
  t.same(JSON.parse(r.stdout), { version: 1, name: 'web', id: web.id, bytes: blob.length, dtb: blob.toString('base64') });
  r = await run(['dump', 'web', '--json', '--dts'], env);
  t.match(JSON.parse(r.stdout), { version: 1, name: 'web', bytes: blob.length, dts: /^\/dts-v1\/;/ });
  r = await run(['dump', 'web'], env, { terminal: {} });
  t.equal(r.code, 2);
  t.match(r.stderr, /^mkctl dump: the device tree blob is binary and stdout is a terminal: redirect it \(mkctl dump NAME > NAME\.dtb\) or print DTS with --dts\n/);
  r = await run(['dump'], env);
  t.equal(r.code, 2);
  await t.rejects(Promise.resolve().then(async () => (await (await Host.open({ system: new SimulatedSystem() })).instance('x')).deviceTree()), { code: 'ERR_MK_INSTANCE_NOT_FOUND' });
});

t.test('probe: alive 0, stopped 4, hung 3; options and usage errors', async (t) => {
  const { env, system, host } = await setup(t);
  let r = await run(['probe', 'web'], env);
  t.same([r.code, r.stdout], [0, 'web alive\n']);
  r = await run(['probe', 'idle', '--json'], env);
  t.same([r.code, JSON.parse(r.stdout)], [4, { version: 1, name: 'idle', id: 2, liveness: 'stopped' }]);
  const stuck = await host.createInstance({ name: 'stuck', cpus: 1, memory: '128M' });
  await stuck.load(placeholderImage());
  await stuck.start();
  await system.hang(stuck.id);
  r = await run(['probe', 'stuck', '--attempts', '2', '--attempt-ms', '20'], env);
  t.same([r.code, r.stdout], [3, 'stuck hung\n']);
  r = await run(['probe', 'web', '--attempts', '0'], env);
  t.equal(r.code, 2);
  t.match(r.stderr, '--attempts takes a whole number of at least 1, got "0"');
  r = await run(['probe', 'web', '--attempt-ms', 'x'], env);
  t.equal(r.code, 2);
  r = await run(['probe', 'gone'], env);
  t.equal(r.code, 1);
  t.match(r.stderr, /^mkctl probe: instance "gone": no such instance\n$/);
});

t.test('watch: lines and JSON lines until interrupted (130)', async (t) => {
  const at = new Date(2026, 0, 2, 3, 4, 5, 6);
  const events = [
    { type: 'instance-added', name: 'a', id: 1, status: 'ready' },
    { type: 'instance-removed', name: 'a', id: 1 },
    { type: 'status', name: 'a', id: 1, from: 'active', to: 'loaded', cause: 'crashed' },
    { type: 'pool-changed' },
    { type: 'transaction', id: 7, status: 'applied', resources: 'instance a' },
    { type: 'hung', name: 'a', id: 1 },
    { type: 'responsive', name: 'a', id: 1 },
  ] as const;
  t.same(
    events.map((e) => eventLine(e, at)),
    [
      '03:04:05.006 added a id 1 ready\n',
      '03:04:05.006 removed a id 1\n',
      '03:04:05.006 status a active->loaded crashed\n',
      '03:04:05.006 pool changed\n',
      '03:04:05.006 transaction 7 applied "instance a"\n',
      '03:04:05.006 hung a\n',
      '03:04:05.006 responsive a\n',
    ],
  );
  t.same(JSON.parse(eventJson(events[2], at)), { version: 1, time: at.toISOString(), ...events[2] });

  const { env, system, web } = await setup(t);
  for (const json of [false, true]) {
    const controller = new AbortController();
    let seen = '';
    let said = '';
    const done = run(['watch', ...(json ? ['--json'] : []), '--liveness'], env, { signal: controller.signal, onOutput: (s) => (seen = s), onStderr: (s) => (said = s) });
    // the change must come after the watcher's first reading, or it is not a change to it: wait for
    // the line it prints then (a fixed 300 ms was not always enough on a loaded CI machine)
    await until(() => said.includes('watching the host'));
    if (!json) await system.panic(web.id);
    else {
      await web.start();
    }
    await until(() => seen.includes(json ? '"to":"active"' : 'active->loaded'));
    controller.abort();
    const r = await done;
    t.equal(r.code, 130, 'interrupted');
    t.match(r.stderr, 'watching the host (Ctrl-C stops)');
    if (json) t.match(JSON.parse(r.stdout.split('\n')[0]!), { version: 1, type: 'status', name: 'web', from: 'loaded', to: 'active', cause: 'external' });
    else t.match(r.stdout, /^\d\d:\d\d:\d\d\.\d{3} status web active->loaded crashed\n/);
  }
  const r = await run(['watch', 'x'], env);
  t.equal(r.code, 2);
});

t.test('console: escape detection', async (t) => {
  const d = new EscapeDetector();
  t.same(d.feed(Buffer.from('ab')), { data: Buffer.from('ab'), detach: false });
  t.same(d.feed(Buffer.from([0x1d])), { data: Buffer.alloc(0), detach: false }, 'Ctrl-] waits for the next key');
  t.same(d.feed(Buffer.from([0x1d, 0x1d, 0x78])), { data: Buffer.from([0x1d, 0x1d, 0x78]), detach: false }, 'Ctrl-] Ctrl-] sends one; Ctrl-] x sends both');
  t.same(d.feed(Buffer.from([0x79, 0x1d, 0x2e, 0x7a])), { data: Buffer.from('y'), detach: true }, 'Ctrl-] . detaches');
});

t.test('console: relay from a pipe, a terminal, nothing; interrupts and errors', async (t) => {
  const { env } = await setup(t);
  // a pipe: bytes go through, then the answer until the console is quiet
  let input = new PassThrough();
  input.end('echo from-a-pipe\n');
  let r = await run(['console', 'web', '--linger', '300'], env, { stdin: input });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'echo from-a-pipe\r\nfrom-a-pipe\r\n/ # ');
  t.equal(r.stderr, '', 'no banner without a terminal');
  input = new PassThrough();
  input.end('echo x\n');
  r = await run(['console', 'web', '--linger', '0'], env, { stdin: input });
  t.equal(r.code, 0, 'leaves at once with --linger 0');
  r = await run(['console', 'web', '--linger', '50'], env);
  t.same([r.code, r.stdout], [0, ''], 'no stdin at all');

  // a terminal: raw mode, the banner, Ctrl-] . detaches and restores
  const term = terminalInput();
  let seen = '';
  const done = run(['console', 'web'], env, { stdin: term, onOutput: (s) => (seen = s) });
  await until(() => term.modes.length > 0);
  term.write('uname -n\r');
  await until(() => seen.includes('web\r\n/ # '));
  term.write(Buffer.from([0x1d]));
  term.write(Buffer.from([0x2e]));
  r = await done;
  t.equal(r.code, 0);
  t.same(term.modes, [true, false], 'raw, then restored');
  t.match(r.stderr, /^connected to the console of web \(id 1\); detach with Ctrl-\] then \.\r\n\r\ndetached from web\r\n$/);
  t.equal(r.stdout, 'uname -n\r\nweb\r\n/ # ');
  // a terminal that closes
  const closing = terminalInput();
  closing.end();
  r = await run(['console', 'web'], env, { stdin: closing });
  t.same([r.code, closing.modes], [0, [true, false]]);

  // interrupted
  const controller = new AbortController();
  const pipe = new PassThrough();
  const interrupted = run(['console', 'web'], env, { stdin: pipe, signal: controller.signal });
  setTimeout(() => controller.abort(), 200);
  t.equal((await interrupted).code, 130);
  // the console of an instance without a kernel refuses input
  const refused = new PassThrough();
  refused.end('hello\n');
  r = await run(['console', 'idle'], env, { stdin: refused });
  t.equal(r.code, 1);
  t.match(r.stderr, /^mkctl console: .*ENODEV/);

  for (const [args, message] of [
    [['console', 'web', '--json'], 'the console is a byte stream: it has no --json'],
    [['console', 'web', '--linger', 'soon'], '--linger takes milliseconds (a whole number), got "soon"'],
    [['console'], 'which instance?'],
  ] as const) {
    r = await run([...args], env);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr + r.stdout, message);
  }
  t.equal(consoleCommand.path[0], 'console');
});

t.test('exec: argument parsing', async (t) => {
  t.same(splitExecArgs(['-e', 'A=1', 'web', 'uname', '-a']), { own: ['-e', 'A=1', 'web'], command: ['uname', '-a'] });
  t.same(splitExecArgs(['web', '-i', '--', 'cat', '--', 'x']), { own: ['web', '-i'], command: ['cat', '--', 'x'] });
  t.same(splitExecArgs(['-i', '-t']), { own: ['-i', '-t'], command: [] });
  t.same(parseEnv(['A=1', 'B=', 'A=x=y']), [['A', '1'], ['B', ''], ['A', 'x=y']]);
  t.throws(() => parseEnv(['=1']), { name: 'UsageError', message: '-e takes KEY=VALUE, got "=1"' });
  t.throws(() => parseEnv(['PATH']), { name: 'UsageError' });
  t.same(parseUser('1000'), { uid: 1000 });
  t.same(parseUser('1000:50'), { uid: 1000, gid: 50 });
  t.throws(() => parseUser('nobody'), { name: 'UsageError', message: /names are not resolved/ });
  t.same(terminalSize({ write: () => true }), { rows: 24, cols: 80 });
  t.same(terminalSize({ write: () => true, isTTY: true }), { rows: 24, cols: 80 });
  t.same(terminalSize({ write: () => true, isTTY: true, rows: 50, columns: 132 }), { rows: 50, cols: 132 });
  t.equal(rawMode(undefined), undefined);
  t.equal(rawMode(new PassThrough()), undefined);
  t.equal(rawMode(Object.assign(new PassThrough(), { isTTY: true })), undefined, 'a terminal that cannot go raw');
  const term = terminalInput();
  term.isRaw = true;
  rawMode(term)!.restore();
  t.same(term.modes, [true, true], 'restored as it was');

});

t.test('exec: output, status, env, cwd, user, stdin, terminals, --json, errors', async (t) => {
  const { env, system, web } = await setup(t);
  let r = await run(['exec', 'web', 'uname', '-n'], env);
  t.same([r.code, r.stdout, r.stderr], [0, 'web\n', '']);
  r = await run(['exec', String(web.id), '-e', 'A=1', '-e', 'A=2', '-w', '/tmp', '-u', '7:8', '--', 'sh', '-c', 'echo $? ; pwd; id; env; cat /nope; exit 5'], env);
  t.equal(r.code, 5);
  t.match(r.stdout, /^\/tmp\nuid=7 gid=8 groups=8\n[\s\S]*^A=2$/m);
  t.equal(r.stderr, 'cat: /nope: No such file or directory\n');
  r = await run(['exec', 'web', '-u', '3', '--', 'id'], env);
  t.match(r.stdout, /^uid=3 gid=0\(root\)/);
  r = await run(['exec', 'web', '--', 'nope'], env);
  t.equal(r.code, 127);
  t.match(r.stderr, /^mkctl exec: the instance could not run the command: .*No such file or directory\n$/);
  // -i: stdin forwarded
  let input = new PassThrough();
  input.end('through stdin\n');
  r = await run(['exec', '-i', 'web', '--', 'cat'], env, { stdin: input });
  t.same([r.code, r.stdout], [0, 'through stdin\n']);
  // -t: the terminal's size; resizes follow; -it on a terminal goes raw
  r = await run(['exec', '-t', 'web', '--', 'stty', 'size'], env);
  t.same([r.code, r.stdout], [0, '24 80\r\n']);
  const events = new EventEmitter();
  const term = terminalInput();
  const size = { rows: 40, columns: 100, events };
  const running = run(['exec', '-it', 'web', '--', 'sh'], env, { stdin: term, terminal: size });
  await until(() => term.modes.length > 0 && events.listenerCount('resize') > 0);
  size.rows = 50;
  size.columns = 120;
  events.emit('resize');
  // the simulated sh reads its whole script before it runs it
  term.end('stty size\n');
  r = await running;
  t.same([r.code, r.stdout], [0, '50 120\r\n'], r.stderr);
  t.same(term.modes, [true, false]);
  t.equal(events.listenerCount('resize'), 0, 'stops following resizes');
  r = await run(['exec', '-t', 'web', '--', 'stty', 'size'], env, { terminal: { rows: 30, columns: 90 } });
  t.equal(r.stdout, '30 90\r\n', 'a terminal that emits no resize events');
  // --json
  r = await run(['exec', '--json', 'web', '--', 'sh', '-c', 'echo out; cat /nope; exit 3'], env);
  t.equal(r.code, 3);
  t.same(JSON.parse(r.stdout), { version: 1, name: 'web', id: web.id, code: 3, pid: JSON.parse(r.stdout).pid, stdout: 'out\n', stderr: 'cat: /nope: No such file or directory\n' });
  input = new PassThrough();
  input.end('json stdin');
  r = await run(['exec', '--json', '-i', 'web', '--', 'cat'], env, { stdin: input });
  t.match(JSON.parse(r.stdout), { code: 0, stdout: 'json stdin' });
  // kernel errors: not running, connection lost (the instance crashes under the command), interrupted
  r = await run(['exec', 'idle', '--', 'true'], env);
  t.equal(r.code, 1);
  t.match(r.stderr, /^mkctl exec: cannot exec in instance "idle" \(status ready\): it is not running/);
  const unread = new PassThrough();
  r = await run(['exec', '-i', 'idle', '--', 'cat'], env, { stdin: unread });
  t.same([r.code, unread.listenerCount('data')], [1, 0], 'stdin let go of when the exec is refused');
  const lost = run(['exec', 'web', '--', 'sleep', '30'], env);
  setTimeout(() => void system.panic(web.id), 300);
  r = await lost;
  t.equal(r.code, 1);
  t.match(r.stderr, /^mkctl exec: .*lost/);
  await web.start();
  const controller = new AbortController();
  const interrupted = run(['exec', 'web', '--', 'sleep', '30'], env, { signal: controller.signal });
  setTimeout(() => controller.abort(), 300);
  t.equal((await interrupted).code, 130);
  // usage errors
  for (const [args, message] of [
    [['exec'], 'which instance?'],
    [['exec', 'web'], 'no command'],
    [['exec', 'web', 'x', '--', 'true'], 'unexpected argument "x" (the command goes after "--")'],
    [['exec', '--json', '-t', 'web', '--', 'true'], 'cannot run on a terminal'],
    [['exec', '-u', 'root', 'web', '--', 'true'], 'names are not resolved'],
  ] as const) {
    r = await run([...args], env);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr + r.stdout, message);
  }
});

t.test('runProcess hands the process stdin to commands', async (t) => {
  const { env } = await setup(t);
  const stdin = new PassThrough();
  stdin.end('echo via-runProcess\n');
  let out = '';
  const proc = Object.assign(new EventEmitter(), {
    argv: ['node', 'mkctl', 'console', 'web', '--linger', '200'],
    stdout: { write: (d: string | Uint8Array) => (out += String(d)) },
    stderr: { write: () => true },
    env: { ...env, HOME: '/tmp' },
    cwd: () => process.cwd(),
    stdin,
  });
  t.equal(await runProcess(proc as unknown as NodeJS.Process), 0);
  t.match(out, 'via-runProcess\r\n');
});

t.test('as real processes: every command, text and --json, errors, Ctrl-C', async (t) => {
  const { env, web } = await setup(t);
  let r = await spawnMkctl(['show', 'web'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^name {6}web\n/);
  r = await spawnMkctl(['show', 'web', '--json'], env);
  t.match(r.json(), { version: 1, instance: { name: 'web', status: 'active' } });
  r = await spawnMkctl(['dump', 'web', '--dts'], env);
  t.match(r.stdout, /^\/dts-v1\/;/);
  r = await spawnMkctl(['dump', 'web', '--json'], env);
  t.same(Buffer.from(r.json<{ dtb: string }>().dtb, 'base64'), await web.deviceTree());
  r = await spawnMkctl(['probe', 'web'], env);
  t.same([r.code, r.stdout], [0, 'web alive\n']);
  r = await spawnMkctl(['probe', 'idle', '--json'], env);
  t.same([r.code, r.json()], [4, { version: 1, name: 'idle', id: 2, liveness: 'stopped' }]);
  r = await spawnMkctl(['exec', 'web', 'uname', '-a'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^Linux web /);
  r = await spawnMkctl(['exec', '-i', 'web', '--', 'sh'], env, { input: 'echo piped\nexit 4\n' });
  t.same([r.code, r.stdout], [4, 'piped\n']);
  r = await spawnMkctl(['exec', '--json', 'web', '--', 'echo', 'hi'], env);
  t.match(r.json(), { version: 1, code: 0, stdout: 'hi\n' });
  r = await spawnMkctl(['exec', 'idle', '--', 'true'], env);
  t.equal(r.code, 1, 'a kernel error');
  r = await spawnMkctl(['exec', 'idle', '--json', '--', 'true'], env);
  t.match(r.json(), { version: 1, error: { code: 'ERR_MK_INSTANCE_NOT_ACTIVE', exitCode: 1 } });
  r = await spawnMkctl(['exec', 'web'], env);
  t.equal(r.code, 2, 'a usage error');
  r = await spawnMkctl(['console', 'web'], env, { input: 'echo spawned\n' });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, 'spawned\r\n/ # ');
  r = await spawnMkctl(['console', 'nope'], env);
  t.equal(r.code, 1);
  r = await spawnMkctl(['watch'], env, { killAfterMs: 1500 });
  t.equal(r.code, 130, 'Ctrl-C');
  t.match(r.stderr, 'watching the host');
  r = await spawnMkctl(['watch', '--json'], env, { killAfterMs: 1500 });
  t.equal(r.code, 130);
  r = await spawnMkctl(['watch', '--nope'], env);
  t.equal(r.code, 2);
  for (const c of ['show', 'dump', 'probe', 'watch', 'console', 'exec']) {
    r = await spawnMkctl([c, '--help'], env);
    t.match(r.stdout, new RegExp(`^usage: mkctl ${c}`), `${c} --help`);
  }
});

/** mkctl as a process that runs until interrupted: its output so far, a wait for a pattern, Ctrl-C. */
function background(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [MKCTL, ...args], { env: { PATH: process.env.PATH ?? '', HOME: '/tmp', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    waitFor: (what: RegExp, from: 'stdout' | 'stderr' = 'stdout') => until(() => what.test(from === 'stdout' ? stdout : stderr), 15_000),
    interrupt: () => {
      child.kill('SIGINT');
      return exited;
    },
  };
}

t.test('watch as a real process: changes made by another process, text and JSON lines, Ctrl-C', async (t) => {
  const { env, system, host, web } = await setup(t);
  const text = background(['watch'], env);
  const json = background(['watch', '--json'], env);
  await text.waitFor(/watching the host/, 'stderr');
  await json.waitFor(/watching the host/, 'stderr');
  await system.panic(web.id);
  await host.createInstance({ name: 'extra', cpus: 1, memory: '128M' });
  await text.waitFor(/added extra id \d+ ready\n/);
  await json.waitFor(/"type":"instance-added"/);
  await text.waitFor(/status web active->loaded crashed\n/);
  await json.waitFor(/"cause":"crashed"/);
  t.equal(await text.interrupt(), 130, 'Ctrl-C: 130');
  t.equal(await json.interrupt(), 130);
  t.match(text.stdout, /^\d\d:\d\d:\d\d\.\d{3} (status|added|pool|transaction) /);
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { version: number; type: string; time: string });
  t.ok(lines.every((l) => l.version === 1 && !Number.isNaN(Date.parse(l.time))), 'one versioned object per line');
  t.match(lines, [...lines.map(() => ({ type: String }))]);
  t.ok(lines.some((l) => l.type === 'status' && (l as unknown as { cause: string }).cause === 'crashed'));
});
