// The lock files used on a state directory when the native addon does not load (lockfile.ts,
// FileLocks): whom they take for dead, and the races of a takeover.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { FileLocks, STATE_KEY_NAME, keyName, ownerGone } from '../../lib/system/simulated/lockfile';

const KEY = 'user:/run/k';
const opts = { exclusive: true, wait: false, errorPath: '/run/k' };
const shared = { ...opts, exclusive: false };

const pidns = /\d+/.exec(fs.readlinkSync('/proc/self/ns/pid'))![0];
const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
const DEAD = 999_999_999; // above any pid_max

function startOf(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

/** An owner id as lockfile.ts writes it, with parts overridden. */
function owner(pid: number, o: { start?: string; pidns?: string; boot?: string } = {}): string {
  return `${pid}_${o.start ?? (pid === DEAD ? '1' : startOf(pid))}_${o.pidns ?? pidns}_${o.boot ?? boot}`;
}

/** A lock directory whose key directory holds `files` (name -> content). */
function setup(t: Test, files: Record<string, string> = {}): { dir: string; keyDir: string; locks: FileLocks } {
  const dir = t.testdir();
  const keyDir = path.join(dir, createHash('sha1').update(KEY).digest('hex').slice(0, 20));
  fs.mkdirSync(keyDir);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(keyDir, name), text);
  return { dir, keyDir, locks: new FileLocks(dir) };
}

/** A live process of ours (not this one), and a zombie: a child its shell never reaps. */
async function processes(t: Test): Promise<{ live: number; zombie: number; kill: () => void }> {
  // (the background sleep outlives the exec, so that the shell cannot have reaped it already)
  const sh = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => sh.kill('SIGKILL'));
  const zombie = Number(await new Promise<string>((resolve) => sh.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
  while (!/\) Z /.test(fs.readFileSync(`/proc/${zombie}/stat`, 'latin1'))) await new Promise((r) => setTimeout(r, 5));
  return { live: sh.pid!, zombie, kill: () => sh.kill('SIGKILL') };
}

t.test('whom the lock files take for dead', async (t) => {
  const { live, zombie } = await processes(t);
  const cases: [string, string, boolean][] = [
    ['this process', owner(process.pid), false],
    ['another live process', owner(live), false],
    ['a pid that does not exist', owner(DEAD), true],
    ['a zombie', owner(zombie), true],
    ['a newer process with the same pid', owner(live, { start: '1' }), true],
    ['a process of an earlier boot', owner(live, { boot: '00000000-0000-0000-0000-000000000000' }), true],
    ['a process of another pid namespace, which cannot be judged from here', owner(DEAD, { pidns: '1' }), false],
    ['something that is no owner', 'junk', true],
  ];
  for (const [what, id, gone] of cases) t.equal(ownerGone(id), gone, what);
});

t.test('an exclusive holder that is gone is taken over; a live one never', async (t) => {
  const { live, zombie } = await processes(t);
  for (const [what, holder, taken] of [
    ['released', 'released', true],
    ['dead', owner(DEAD), true],
    ['a zombie', owner(zombie), true],
    ['alive', owner(live), false],
    ['in another pid namespace', owner(DEAD, { pidns: '1' }), false],
  ] as const) {
    const { keyDir, locks } = setup(t, { 'g.1': holder });
    if (taken) {
      const release = await locks.acquire(KEY, opts);
      t.same(fs.readdirSync(keyDir), ['g.2'], `${what}: taken as generation 2, generation 1 removed`);
      release();
      t.equal(fs.readFileSync(path.join(keyDir, 'g.2'), 'utf8'), 'released');
    } else {
      await t.rejects(locks.acquire(KEY, opts), { code: 'EWOULDBLOCK', syscall: 'flock', path: '/run/k' }, `${what}: not taken`);
      await t.rejects(locks.acquire(KEY, { ...opts, wait: true, timeoutMs: 30 }), { code: 'ETIMEDOUT' }, `${what}: not even after waiting`);
      t.same(fs.readdirSync(keyDir), ['g.1'], `${what}: left alone`);
    }
  }
});

t.test('shared holders', async (t) => {
  const { live, kill } = await processes(t);
  const { keyDir, locks } = setup(t, { 'g.1': 'released', [`r.${owner(live)}.a`]: '', [`r.${owner(DEAD)}.b`]: '' });
  await t.rejects(locks.acquire(KEY, opts), { code: 'EWOULDBLOCK' }, 'a live shared holder keeps an exclusive one out');
  t.notOk(fs.existsSync(path.join(keyDir, `r.${owner(DEAD)}.b`)), 'a dead one is removed');
  await t.rejects(locks.acquire(KEY, { ...opts, wait: true, timeoutMs: 30 }), { code: 'ETIMEDOUT' }, 'a waiting exclusive one gives up at its timeout');
  const release = await locks.acquire(KEY, shared);
  t.ok(release, 'the mutex was let go: another shared holder gets in');
  release();
  const waiting = locks.acquire(KEY, { ...opts, wait: true, timeoutMs: 10_000 });
  setTimeout(kill, 50);
  await t.resolves(waiting.then((r) => r()), 'a waiting exclusive one gets in when the shared holder dies');
  t.same(fs.readdirSync(keyDir).filter((n) => n.startsWith('r.')), [], "the dead holder's file is removed");
});

t.test('debris is removed by the next holder', async (t) => {
  const { live } = await processes(t);
  const liveTemp = `t.${owner(live)}.c`;
  const { keyDir, locks } = setup(t, { 'g.3': 'released', 'g.1': 'released', [`t.${owner(DEAD)}.d`]: owner(DEAD), [liveTemp]: owner(live), stray: '' });
  (await locks.acquire(KEY, opts))();
  t.same(fs.readdirSync(keyDir).sort(), ['g.4', liveTemp], 'older generations, dead temp files and strays go; a live temp file stays');
});

t.test('a vanished highest generation reads as over; one that cannot be read is an error', async (t) => {
  const { keyDir, locks } = setup(t);
  fs.symlinkSync('nowhere', path.join(keyDir, 'g.1'));
  await t.resolves(locks.acquire(KEY, opts).then((r) => r()));
  t.same(fs.readdirSync(keyDir), ['g.2']);
  fs.mkdirSync(path.join(keyDir, 'g.3'));
  await t.rejects(locks.acquire(KEY, opts), { code: 'EISDIR' });
});

t.test('two contenders that read the same dead holder: one gets the lock', async (t) => {
  // b reads the dead holder's file; before it acts on what it read, a takes the lock over.
  const { dir } = setup(t);
  const victim = new FileLocks(dir);
  fs.writeFileSync(path.join(dir, createHash('sha1').update(KEY).digest('hex').slice(0, 20), 'g.1'), owner(DEAD));
  let a: FileLocks | undefined;
  let aHolds: Promise<() => void> | undefined;
  let hooked = false;
  const { FileLocks: Hooked } = t.mockRequire<typeof import('../../lib/system/simulated/lockfile')>('../../lib/system/simulated/lockfile', {
    'node:fs': {
      ...fs,
      readFileSync: (...args: Parameters<typeof fs.readFileSync>) => {
        const text = fs.readFileSync(...args);
        if (a && !hooked && String(args[0]).startsWith(dir)) {
          hooked = true;
          aHolds = a.acquire(KEY, opts);
        }
        return text;
      },
    },
  });
  a = new Hooked(dir);
  const b = new Hooked(dir);
  const bHolds = b.acquire(KEY, opts);
  t.ok(aHolds, 'a acted between b reading the holder and b acting');
  const releaseA = await aHolds!;
  await t.rejects(bHolds, { code: 'EWOULDBLOCK' }, 'b does not get it as well');
  await t.rejects(victim.acquire(KEY, opts), { code: 'EWOULDBLOCK' }, 'nor does anyone else while a holds it');
  releaseA();
  await t.resolves(victim.acquire(KEY, opts).then((r) => r()));
});

t.test('a contender that linked from an outdated listing withdraws', async (t) => {
  const { live } = await processes(t);
  const { keyDir, dir } = setup(t, { 'g.1': 'released', 'g.3': owner(live) });
  let listings = 0;
  const { FileLocks: Stale } = t.mockRequire<typeof import('../../lib/system/simulated/lockfile')>('../../lib/system/simulated/lockfile', {
    'node:fs': {
      ...fs,
      // the first listing is from before g.3 existed (and g.2 had been removed as old)
      readdirSync: (p: string) => (listings++ === 0 ? ['g.1'] : fs.readdirSync(p)),
    },
  });
  await t.rejects(new Stale(dir).acquire(KEY, opts), { code: 'EWOULDBLOCK' });
  t.same(fs.readdirSync(keyDir).sort(), ['g.1', 'g.3'], 'its g.2 is gone, the holder of g.3 untouched');
});

t.test('a failure to link other than EEXIST is an error, not contention', async (t) => {
  const { dir, keyDir } = setup(t);
  const { FileLocks: Failing } = t.mockRequire<typeof import('../../lib/system/simulated/lockfile')>('../../lib/system/simulated/lockfile', {
    'node:fs': {
      ...fs,
      linkSync: () => {
        throw Object.assign(new Error('EMLINK: too many links, link'), { code: 'EMLINK' });
      },
    },
  });
  await t.rejects(new Failing(dir).acquire(KEY, opts), { code: 'EMLINK' });
  t.same(fs.readdirSync(keyDir), [], 'its temp file is removed');
});

t.test('lock file names: SHA-1 of the key, the state lock written out the same', async (t) => {
  const sha = (key: string): string => createHash('sha1').update(key).digest('hex').slice(0, 20);
  t.equal(STATE_KEY_NAME, sha('state'));
  t.equal(keyName('state'), sha('state'));
  t.equal(keyName(KEY), sha(KEY));
});
