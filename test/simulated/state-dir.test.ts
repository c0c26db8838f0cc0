import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { SimulatedSystem, SimStateError } from '../../lib/system/simulated';
import { FileLocks, FlockLocks } from '../../lib/system/simulated/lockfile';
import { FORCE_FILE_LOCKS_ENV, StateDir } from '../../lib/system/simulated/state-dir';
import { baseline, memoryNode } from '../contract/suite';
import { M, MiB } from './helpers';

const loader = '@tapjs/typescript/import';
const root = path.join(__dirname, '..', '..');
const fixture = (name: string): string => path.join(__dirname, 'fixtures', name);

type Protocol = 'flock' | 'files';
const PROTOCOLS: Protocol[] = ['flock', 'files'];

function envFor(protocol: Protocol): NodeJS.ProcessEnv {
  return { ...process.env, [FORCE_FILE_LOCKS_ENV]: protocol === 'files' ? 'files' : '' };
}

/** A simulated host on a state directory that uses `protocol` (fixed when the directory is created). */
function open(stateDir: string, protocol: Protocol): SimulatedSystem {
  const before = process.env[FORCE_FILE_LOCKS_ENV];
  process.env[FORCE_FILE_LOCKS_ENV] = protocol === 'files' ? 'files' : '';
  try {
    return new SimulatedSystem({ stateDir });
  } finally {
    if (before === undefined) delete process.env[FORCE_FILE_LOCKS_ENV];
    else process.env[FORCE_FILE_LOCKS_ENV] = before;
  }
}

/** A fresh state directory (the simulator creates it, so its mode does not depend on the umask). */
function stateDirOf(t: Test): string {
  return path.join(t.testdir(), 'state');
}

function child(script: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const proc = spawn(process.execPath, [`--import=${loader}`, fixture(script), ...args], { stdio: ['ignore', 'pipe', 'inherit'], cwd: root, env });
  const lines: string[] = [];
  const done = new Promise<number>((resolve) => proc.on('exit', (code) => resolve(code ?? -1)));
  proc.stdout.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n').filter(Boolean)) lines.push(line);
  });
  const find = (word: string): string | undefined => lines.find((l) => l.split(' ')[0] === word);
  /** Resolves when the child has said a line starting with `word`; rejects when it exits first. */
  const said = async (word: string): Promise<void> => {
    while (!find(word)) {
      if (await Promise.race([done.then(() => true), new Promise((resolve) => setTimeout(resolve, 5, false))])) {
        if (find(word)) return;
        throw new Error(`${script} exited before saying ${word}`);
      }
    }
  };
  return { proc, find, said, done };
}

const mode = (p: string): number => fs.statSync(p).mode & 0o777;

t.test('two processes share one simulated host', async (t) => {
  const stateDir = stateDirOf(t);
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, baseline([2, 4], [memoryNode(0, 512 * MiB)]));
  const a = child('worker.ts', [stateDir, 'a', '10']);
  const b = child('worker.ts', [stateDir, 'b', '10']);
  t.same(await Promise.all([a.done, b.done]), [0, 0]);
  const names = (await sim.readdir(`${M}/instances`)).sort();
  t.equal(names.length, 20, 'no update was lost');
  const txs = (await sim.readdir(`${M}/overlays`)).filter((n) => n.startsWith('tx_')).map((n) => Number(n.slice(3))).sort((x, y) => x - y);
  t.same(txs, Array.from({ length: 20 }, (_, i) => i + 2), 'tx ids 2..21, each handed out once');
  const second = new SimulatedSystem({ stateDir });
  t.teardown(() => second.dispose());
  t.same((await second.readdir(`${M}/instances`)).length, 20, 'a later process sees the same host');
  t.ok(fs.existsSync(path.join(stateDir, 'state.json')));
});

for (const protocol of PROTOCOLS) {
  t.test(`lock() is shared between processes (${protocol})`, async (t) => {
    const stateDir = stateDirOf(t);
    const sim = open(stateDir, protocol);
    t.teardown(() => sim.dispose());
    const other = child('worker.ts', [stateDir, 'c', '0'], envFor(protocol));
    t.teardown(() => other.proc.kill());
    await other.said('locked');
    await t.rejects(sim.lock('/run/demo.lock', { wait: false }), { code: 'EWOULDBLOCK', syscall: 'flock', path: '/run/demo.lock' }, 'held by the other process');
    const t0 = Date.now();
    const held = await sim.lock('/run/demo.lock', { timeoutMs: 5000 });
    t.ok(Date.now() - t0 > 50, 'waited for the release');
    await held.release();
    await held.release();
    t.equal(await other.done, 0);
  });
}

async function semantics(t: Test, sim: SimulatedSystem): Promise<void> {
  const x = await sim.lock('/l');
  await t.rejects(sim.lock('/l', { wait: false }), { code: 'EWOULDBLOCK', syscall: 'flock', path: '/l' });
  await t.rejects(sim.lock('/l', { exclusive: false, wait: false }), { code: 'EWOULDBLOCK' }, 'shared waits for an exclusive holder');
  await t.rejects(sim.lock('/l', { timeoutMs: 20 }), { code: 'ETIMEDOUT', syscall: 'flock', path: '/l' });
  const ac = new AbortController();
  const pending = sim.lock('/l', { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('stop')), 30);
  await t.rejects(pending, { message: 'stop' }, 'an abort ends the wait');
  await t.rejects(sim.lock('/l', { signal: AbortSignal.abort(new Error('early')) }), { message: 'early' }, 'an aborted signal does not wait');
  const other = await sim.lock('/other', { wait: false });
  await other.release();
  const waiting = sim.lock('/l');
  setTimeout(() => void x.release(), 30);
  await (await waiting).release();
  const s1 = await sim.lock('/l', { exclusive: false });
  const s2 = await sim.lock('/l', { exclusive: false, wait: false });
  await t.rejects(sim.lock('/l', { wait: false }), { code: 'EWOULDBLOCK' }, 'exclusive waits for shared holders');
  await t.rejects(sim.lock('/l', { timeoutMs: 20 }), { code: 'ETIMEDOUT' }, 'and gives up at its timeout');
  const s3 = await sim.lock('/l', { exclusive: false, wait: false });
  const exclusive = sim.lock('/l', { timeoutMs: 5000 });
  setTimeout(() => void Promise.all([s1.release(), s2.release(), s3.release()]), 30);
  await (await exclusive).release();
  await (await sim.lock('/l', { wait: false })).release();
}

t.test('lock() semantics, in memory', async (t) => {
  const sim = new SimulatedSystem();
  t.teardown(() => sim.dispose());
  await semantics(t, sim);
});

for (const protocol of PROTOCOLS) {
  t.test(`lock() semantics on a state directory (${protocol})`, async (t) => {
    const stateDir = stateDirOf(t);
    const sim = open(stateDir, protocol);
    t.teardown(() => sim.dispose());
    await semantics(t, sim);
    t.equal(fs.readFileSync(path.join(stateDir, 'locks', 'protocol'), 'utf8'), `${protocol}\n`);
  });
}

for (const protocol of PROTOCOLS) {
  t.test(`a live holder is never stolen from, however slow (${protocol})`, async (t) => {
    const stateDir = stateDirOf(t);
    const sim = open(stateDir, protocol);
    t.teardown(() => sim.dispose());
    const holder = child('state-holder.ts', [stateDir, '1500'], envFor(protocol));
    t.teardown(() => holder.proc.kill());
    await holder.said('acquiring');
    // One contender waits meanwhile (it may get the lock before the holder does: that is fine);
    // once the holder holds it, others try every 50 ms, and none may get it before it lets go.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const contender = sim.lock('/run/held', { timeoutMs: 10_000 }).then((h) => h.release());
    await holder.said('holding');
    const probes: { at: number; got: boolean }[] = [];
    let exited = false;
    void holder.done.then(() => (exited = true));
    while (!exited) {
      const at = Date.now();
      const got = await sim.lock('/run/held', { wait: false }).then(
        async (h) => (await h.release(), true),
        (e: NodeJS.ErrnoException) => (e.code === 'EWOULDBLOCK' ? false : Promise.reject(e)),
      );
      probes.push({ at, got });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    t.equal(await holder.done, 0);
    await contender;
    const from = Number(holder.find('holding')!.split(' ')[1]);
    const to = Number(holder.find('releasing')!.split(' ')[1]);
    t.ok(to - from >= 1500, 'the holder held it for 1.5 s');
    const during = probes.filter((p) => p.at > from && p.at < to);
    t.ok(during.length >= 10, `${during.length} attempts while it held`);
    t.same(during.filter((p) => p.got), [], 'none of them got the lock');
    await (await sim.lock('/run/held', { wait: false })).release();
  });
}

t.test('an in-memory host leaves nothing on disk', async (t) => {
  const tmp = t.testdir({ tmp: {}, cwd: {} });
  const before = process.env.TMPDIR;
  process.env.TMPDIR = path.join(tmp, 'tmp');
  const cwd = process.cwd();
  process.chdir(path.join(tmp, 'cwd'));
  t.teardown(() => {
    process.chdir(cwd);
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
  });
  t.equal(os.tmpdir(), path.join(tmp, 'tmp'));
  const sims = [new SimulatedSystem(), new SimulatedSystem(), new SimulatedSystem()];
  for (const sim of sims) {
    await sim.mountMultikernel();
    await (await sim.lock('/run/x')).release();
    await (await sim.lock('/run/y', { exclusive: false })).release();
  }
  await sims[0]!.dispose(); // the others are never disposed
  t.same(fs.readdirSync(path.join(tmp, 'tmp')), [], 'nothing in the temp directory');
  t.same(fs.readdirSync(path.join(tmp, 'cwd')), [], 'nothing in the working directory');
});

t.test('state.json that cannot be used is a typed error naming the file', async (t) => {
  const stateDir = stateDirOf(t);
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const file = path.join(stateDir, 'state.json');
  const whole = fs.readFileSync(file, 'utf8');
  const cases: [string, string, RegExp][] = [
    [whole.slice(0, whole.length / 2), 'ERR_MK_SIM_STATE_CORRUPT', /is not valid JSON \(.*a truncated file\?\): remove it to start from an empty simulated host, or restore a backup$/],
    ['', 'ERR_MK_SIM_STATE_CORRUPT', /is not valid JSON/],
    ['null', 'ERR_MK_SIM_STATE_CORRUPT', /is not a state object: remove it/],
    ['[1]', 'ERR_MK_SIM_STATE_CORRUPT', /is not a state object/],
    [JSON.stringify({ ...JSON.parse(whole), version: 2 }), 'ERR_MK_SIM_STATE_VERSION', /has version 2, this multikernel reads version 1: use the multikernel release that wrote it, or remove it/],
    ['{}', 'ERR_MK_SIM_STATE_VERSION', /has version none/],
  ];
  for (const [text, code, message] of cases) {
    fs.writeFileSync(file, text);
    const e = await sim.readdir(M).catch((x: unknown) => x);
    t.type(e, SimStateError, `${code} for ${JSON.stringify(text.slice(0, 20))}`);
    t.match(e, { name: 'SimStateError', code, path: file, message });
    t.ok((e as Error).message.includes(file), 'the message names the file');
  }
  fs.writeFileSync(file, whole);
  t.same(await sim.readdir(M), ['device_tree', 'instances', 'overlays'], 'a restored file is read again');
  fs.rmSync(file);
  fs.mkdirSync(file);
  await t.rejects(sim.readdir(M), { code: 'EISDIR' }, 'a state file that cannot be read is a system error');
});

t.test('a state.json of the wrong shape is refused naming the field, before the simulator uses it', async (t) => {
  const stateDir = stateDirOf(t);
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, baseline([4, 6], [memoryNode(0, 512 * MiB)]));
  await sim.createExclusive('/run/x', Buffer.from('owner'));
  const file = path.join(stateDir, 'state.json');
  const whole = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  type State = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const cases: [string, (s: State) => void, RegExp][] = [
    ['a field missing', (s) => delete s.txs, /state\.txs is missing/],
    ['a string for a number', (s) => (s.txCounter = '3'), /state\.txCounter is "3", not a whole number from 0 to/],
    ['a fraction', (s) => (s.topology.memoryBytes = 1.5), /state\.topology\.memoryBytes is 1\.5, not a whole number/],
    ['out of range', (s) => (s.topology.numaNodes = 0), /state\.topology\.numaNodes is 0, not a whole number from 1 to 1024/],
    ['not true or false', (s) => (s.mounted = 1), /state\.mounted is 1, not true or false/],
    ['not a string', (s) => (s.dmesg = [1]), /state\.dmesg\[0\] is 1, not a string/],
    ['not a list', (s) => (s.instances = {}), /state\.instances is not a list/],
    ['not an object', (s) => (s.topology = []), /state\.topology is not an object/],
    ['not one of', (s) => (s.version = 1) && (s.pool.memory[0].node = -1), /state\.pool\.memory\[0\]\.node is -1/],
    ['an empty name', (s) => (s.instances = [{ id: 1, name: '', status: 'ready', cpus: [], memory: [], devices: [] }]), /state\.instances\[0\]\.name is "", not a file name/],
    ['a name with a slash', (s) => (s.instances = [{ id: 1, name: 'a/b', status: 'ready', cpus: [], memory: [], devices: [] }]), /state\.instances\[0\]\.name is "a\/b", not a file name/],
    ['a PCI address', (s) => (s.topology.pciDevices = ['0000:00:04']), /state\.topology\.pciDevices\[0\] is "0000:00:04", not a PCI address DDDD:BB:SS\.F/],
    ['a record that is not an object', (s) => (s.hostFiles = 3), /state\.hostFiles is not an object/],
    ['a record entry', (s) => (s.hostFiles['/run/x'].data = 5), /state\.hostFiles\["\/run\/x"\]\.data is 5, not a string/],
    ['null pool fields', (s) => (s.pool.parkChunk = 'x'), /state\.pool\.parkChunk is "x"/],
    ['a status', (s) => (s.txs = [{ id: 2, status: 'done', targetPath: '/', resources: '', dtbo: '' }]), /state\.txs\[0\]\.status is "done", not one of "pending", "applied", "failed", "removed"/],
  ];
  for (const [what, change, message] of cases) {
    const s = structuredClone(whole) as State;
    change(s);
    fs.writeFileSync(file, JSON.stringify(s));
    const e = await sim.readdir(M).catch((x: unknown) => x);
    t.match(e, { name: 'SimStateError', code: 'ERR_MK_SIM_STATE_CORRUPT', path: file, message: /is not one this simulator wrote: / }, what);
    t.match((e as Error).message, message, what);
  }
  const nullPool = structuredClone(whole) as State;
  nullPool.pool = null;
  fs.writeFileSync(file, JSON.stringify(nullPool));
  t.same(await sim.readdir(M), ['device_tree', 'instances', 'overlays'], 'pool null is a state without a pool');
  fs.writeFileSync(file, JSON.stringify(whole));
  t.same((await sim.readFile('/run/x')).toString(), 'owner', 'a restored file is read again, host file bytes included');
});

for (const protocol of PROTOCOLS) {
  t.test(`modes 0700 and 0600 (${protocol})`, async (t) => {
    const stateDir = path.join(t.testdir(), 'deep', 'state');
    const sim = open(stateDir, protocol);
    t.teardown(() => sim.dispose());
    await sim.mountMultikernel();
    await (await sim.lock('/run/x')).release();
    await (await sim.lock('/run/y', { exclusive: false })).release();
    t.equal(mode(stateDir), 0o700, 'the state directory');
    t.equal(mode(path.dirname(stateDir)), 0o700, 'a parent it created');
    const all = (fs.readdirSync(stateDir, { recursive: true }) as string[]).map((p) => path.join(stateDir, p));
    t.ok(all.length >= 4, 'state, locks, protocol and lock files');
    for (const p of all) t.equal(mode(p), fs.statSync(p).isDirectory() ? 0o700 : 0o600, path.relative(stateDir, p));
  });
}

t.test('an existing state directory others could write to is refused, not changed', async (t) => {
  const base = t.testdir();
  const make = (name: string, perm: number, uid?: number): string => {
    const dir = path.join(base, name);
    fs.mkdirSync(dir);
    fs.chmodSync(dir, perm);
    if (uid !== undefined) fs.chownSync(dir, uid, uid);
    return dir;
  };
  for (const [dir, message] of [
    [make('group', 0o775), /is writable by others \(mode 0775\), who could replace the state or block its lock: run chmod 700 .*group, or use a new directory/],
    [make('world', 0o1777), /is writable by others \(mode 0777\)/],
    ...(process.geteuid!() === 0 ? [[make('theirs', 0o700, 65534), /belongs to uid 65534, not to this process's user \(uid 0\).*: use a directory of your own/] as const] : []),
  ] as const) {
    t.throws(() => new SimulatedSystem({ stateDir: dir }), { name: 'SimStateError', code: 'ERR_MK_SIM_STATE_DIR', path: dir, message });
    t.same(fs.readdirSync(dir), [], 'nothing was written into it');
  }
  t.equal(mode(path.join(base, 'group')), 0o775, 'its mode is left alone');
  const readable = make('readable', 0o755);
  const sim = new SimulatedSystem({ stateDir: readable });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  t.equal(mode(path.join(readable, 'state.json')), 0o600, 'a directory others can only read is used; its files are 0600');
});

t.test('state.json is replaced with an O_EXCL temp file of random name, fsync before and after the rename', async (t) => {
  const calls: string[] = [];
  const fds = new Map<number, string>();
  const spy = {
    ...fs,
    openSync: (p: fs.PathLike, flags?: fs.OpenMode, m?: fs.Mode) => {
      const fd = fs.openSync(p, flags!, m);
      fds.set(fd, String(p));
      calls.push(`open ${p} ${String(flags)} ${m === undefined ? '' : (m as number).toString(8)}`);
      return fd;
    },
    fsyncSync: (fd: number) => {
      calls.push(`fsync ${fds.get(fd)}`);
      fs.fsyncSync(fd);
    },
    renameSync: (a: fs.PathLike, b: fs.PathLike) => {
      calls.push(`rename ${a} ${b}`);
      fs.renameSync(a, b);
    },
  };
  const { SimulatedSystem: Spied } = t.mockRequire<typeof import('../../lib/system/simulated')>('../../lib/system/simulated', { 'node:fs': spy });
  const stateDir = stateDirOf(t);
  const sim = new Spied({ stateDir });
  t.teardown(() => sim.dispose());
  const temps: string[] = [];
  for (let i = 0; i < 2; i++) {
    calls.length = 0;
    await (i === 0 ? sim.mountMultikernel() : sim.umountMultikernel());
    const rename = calls.findIndex((c) => c.startsWith('rename '));
    t.ok(rename > 0, 'state.json is renamed into place');
    const [, temp, target] = calls[rename]!.split(' ');
    t.equal(target, path.join(stateDir, 'state.json'));
    t.match(path.basename(temp!), /^\.state\.json\.[0-9a-f]{24}\.tmp$/, 'a random temp name');
    t.ok(calls.slice(0, rename).includes(`open ${temp} wx 600`), 'created with O_EXCL, mode 0600');
    t.ok(calls.slice(0, rename).includes(`fsync ${temp}`), 'its data is synced before the rename');
    t.ok(calls.slice(rename).includes(`fsync ${stateDir}`), 'the directory is synced after the rename');
    temps.push(temp!);
  }
  t.not(temps[0], temps[1], 'each save has its own temp name');
});

t.test('temp files left by a writer that died are removed by the next save', async (t) => {
  const stateDir = stateDirOf(t);
  const sim = new SimulatedSystem({ stateDir });
  t.teardown(() => sim.dispose());
  await sim.mountMultikernel();
  const left = path.join(stateDir, '.state.json.0123456789abcdef01234567.tmp');
  fs.writeFileSync(left, '{"trunc');
  await sim.readdir(M);
  t.ok(fs.existsSync(left), 'a read leaves it');
  await sim.umountMultikernel();
  t.notOk(fs.existsSync(left), 'a save removes it');
  t.same(fs.readdirSync(stateDir).sort(), ['locks', 'state.json']);
});

t.test('the lock protocol is fixed per directory', async (t) => {
  const noAddon = t.mockRequire<typeof import('../../lib/system/simulated/state-dir')>('../../lib/system/simulated/state-dir', {
    '../../lib/binding': {
      loadBinding: () => {
        throw new Error('No native build was found');
      },
    },
  });
  const base = t.testdir();
  const protocolOf = (dir: string): string => fs.readFileSync(path.join(dir, 'locks', 'protocol'), 'utf8');

  const withAddon = path.join(base, 'flock');
  t.type(new StateDir(withAddon).locks, FlockLocks, 'a process with the addon creates a flock directory');
  t.equal(protocolOf(withAddon), 'flock\n');
  t.throws(() => new noAddon.StateDir(withAddon), {
    name: 'SimStateError',
    code: 'ERR_MK_SIM_STATE_DIR',
    path: path.join(withAddon, 'locks', 'protocol'),
    message: /is locked with flock\(2\) by the processes that use it, and this one cannot load the native addon: run it from the same multikernel installation, or give it a state directory of its own/,
  }, 'a process without it is refused there rather than left to lock alone');

  const without = path.join(base, 'files');
  t.equal(new noAddon.StateDir(without).locks.constructor.name, 'FileLocks');
  t.equal(protocolOf(without), 'files\n', 'a process without the addon creates a files directory');
  t.type(new StateDir(without).locks, FileLocks, 'a process with the addon follows it');

  const odd = path.join(base, 'odd');
  fs.mkdirSync(path.join(odd, 'locks'), { recursive: true, mode: 0o700 });
  fs.chmodSync(odd, 0o700);
  fs.writeFileSync(path.join(odd, 'locks', 'protocol'), 'carrier pigeon\n');
  t.throws(() => new StateDir(odd), { code: 'ERR_MK_SIM_STATE_DIR', message: /names an unknown lock protocol "carrier pigeon": remove the state directory/ });

  const racing = t.mockRequire<typeof import('../../lib/system/simulated/state-dir')>('../../lib/system/simulated/state-dir', {
    'node:fs': { ...fs, existsSync: () => false },
  });
  t.equal(new racing.StateDir(without).locks.constructor.name, 'FileLocks', 'losing the race to record the protocol follows the winner');
  t.equal(protocolOf(without), 'files\n');
  t.same(fs.readdirSync(path.join(without, 'locks')).filter((n) => n.startsWith('.protocol')), [], 'no temp file left');

  const failing = t.mockRequire<typeof import('../../lib/system/simulated/state-dir')>('../../lib/system/simulated/state-dir', {
    'node:fs': {
      ...fs,
      linkSync: () => {
        throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' });
      },
    },
  });
  t.throws(() => new failing.StateDir(path.join(base, 'eperm')), { code: 'EPERM' }, 'other failures to record it are errors');
});
