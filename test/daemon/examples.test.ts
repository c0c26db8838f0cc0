// The examples: the systemd unit passes `systemd-analyze verify` with no complaint (verify exits 0
// even for unknown keys and bad values, so any line it prints fails the test), and says what the
// daemon needs; the commented spec loads.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadSpecFile } from '../../lib/spec';

const root = path.join(__dirname, '..', '..');
const unitPath = path.join(root, 'examples', 'multikernel.service');
const unit = fs.readFileSync(unitPath, 'utf8');
const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });

t.test('examples/multikernel.service passes systemd-analyze verify', { skip: analyze.status === 0 ? false : 'systemd-analyze is not installed' }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const copy = path.join(dir, 'multikernel.service');
  fs.writeFileSync(copy, unit);
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', copy], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stderr, '', 'no complaint');
  // verify does complain about what is wrong: a misspelt key
  fs.writeFileSync(copy, unit.replace('WatchdogSec=', 'WatchdogSecs='));
  t.match(spawnSync('systemd-analyze', ['verify', '--man=no', copy], { encoding: 'utf8' }).stderr, /Unknown key 'WatchdogSecs'/);
});

t.test('the unit says what the daemon needs', async (t) => {
  const service = unit.slice(unit.indexOf('[Service]'), unit.indexOf('[Install]'));
  const keys = new Map(
    service
      .split('\n')
      .filter((l) => /^[A-Za-z]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
  );
  t.equal(keys.get('Type'), 'notify');
  t.equal(keys.get('NotifyAccess'), 'main');
  t.equal(keys.get('ExecStart'), '/usr/bin/env mkctl daemon -c /etc/multikernel/host.yaml');
  t.equal(keys.get('ExecReload'), '/bin/kill -HUP $MAINPID');
  t.equal(keys.get('WatchdogSec'), '30s');
  t.equal(keys.get('Restart'), 'on-failure');
  t.same(keys.get('CapabilityBoundingSet')!.split(' ').sort(), ['CAP_SYSLOG', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT']);
  for (const cap of ['CAP_SYS_BOOT', 'CAP_SYS_ADMIN', 'CAP_SYSLOG', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_RESOURCE']) t.match(unit, new RegExp(`^# .*${cap}`, 'm'), `${cap} is explained`);
  t.equal(keys.get('ProtectSystem'), 'strict');
  t.equal(keys.get('ReadWritePaths'), '-/sys/fs/multikernel /run');
  for (const k of ['ProtectHome', 'PrivateTmp', 'NoNewPrivileges']) t.equal(keys.get(k), 'yes', k);
  t.notOk(keys.has('MemoryDenyWriteExecute'), "V8's JIT needs W+X memory");
  t.notOk(keys.has('ProtectKernelLogs'), 'the watcher reads /dev/kmsg');
});

t.test('examples/host.yaml loads and names every field', async (t) => {
  const spec = await loadSpecFile(path.join(root, 'examples', 'host.yaml'));
  t.same(spec.pool, { cpus: { physical: [2, 3, 4, 5, 6, 7] }, memoryBytes: 6n << 30n, devices: ['0000:03:00.0'] });
  const [web, db] = spec.instances;
  t.match(web, {
    name: 'web',
    id: 3,
    cpus: { count: 2 },
    memoryBytes: 2n << 30n,
    numaNode: 0,
    devices: ['0000:03:00.0'],
    kernel: '/var/lib/multikernel/vmlinuz-web',
    initrd: '/var/lib/multikernel/initrd-web.img',
    cmdline: 'console=mktty0 quiet',
    autostart: true,
    restart: { policy: 'restart', backoff: { initialMs: 1000, maxMs: 300_000 }, limit: { attempts: 5, windowMs: 600_000 } },
    health: { intervalMs: 10_000, timeoutMs: 1000, failures: 3 },
    onDaemonStop: 'stop',
  });
  t.match(db, { name: 'db', restart: { policy: 'preserve' }, onDaemonStop: 'keep' });
  t.equal(db!.health, undefined);
});
