// The daemon's Prometheus metrics in this process: what a scrape shows after the daemon restarted
// a crashed instance, gave up on one, probed and applied; the addresses --metrics takes; the
// HTTP endpoint (GET /metrics only) over TCP (IPv4, IPv6) and a unix socket.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadMetrics } from '../../lib/daemon';
import { DaemonMetrics, parseMetricsAddress, serveMetrics } from '../../lib/daemon/metrics';
import { Host } from '../../lib/host';
import { SimulatedSystem } from '../../lib/system/simulated';
import { FakeClock, harness, spec, until } from './fixture';

const instance = (name: string, body = '') => `  ${name}:\n    cpus: 1\n    memory: 256M\n    kernel: vmlinux\n${body}`;

function get(options: http.RequestOptions): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .request(options, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      })
      .on('error', reject)
      .end();
  });
}

t.test('addresses: loopback host:port, [::1]:port, unix:/path; others refused unless public', async (t) => {
  t.same(parseMetricsAddress('127.0.0.1:9464'), { kind: 'tcp', host: '127.0.0.1', port: 9464 });
  t.same(parseMetricsAddress('127.1.2.3:0'), { kind: 'tcp', host: '127.1.2.3', port: 0 });
  t.same(parseMetricsAddress('[::1]:9464'), { kind: 'tcp', host: '::1', port: 9464 });
  t.same(parseMetricsAddress('localhost:80'), { kind: 'tcp', host: 'localhost', port: 80 });
  t.same(parseMetricsAddress('unix:/run/mk.sock'), { kind: 'unix', path: '/run/mk.sock' });
  t.throws(() => parseMetricsAddress('unix:run/mk.sock'), /absolute path/);
  for (const bad of ['9464', '127.0.0.1', '127.0.0.1:99999', ':9464', '[::1]9464', 'a:b:1']) t.throws(() => parseMetricsAddress(bad), /takes HOST:PORT/, bad);
  t.throws(() => parseMetricsAddress('0.0.0.0:9464'), /not a loopback address: .*--metrics-public/);
  t.throws(() => parseMetricsAddress('[::]:9464'), /not a loopback address/);
  t.same(parseMetricsAddress('0.0.0.0:9464', true), { kind: 'tcp', host: '0.0.0.0', port: 9464 });
  t.equal((await loadMetrics()).DaemonMetrics, DaemonMetrics);
});

t.test('a scrape after restarts, a give-up, probes, a failed transaction and applied steps', async (t) => {
  const sim = new SimulatedSystem();
  await sim.mountMultikernel();
  const metricsHost = await Host.open({ system: sim });
  const metrics = new DaemonMetrics(metricsHost);
  const clock = new FakeClock();
  const restart = '    restart:\n      policy: restart\n      backoff: { initial: 1s, max: 1s }\n      limit: { attempts: 1, window: 1m }\n';
  sim.faults.add({ op: 'kexec_file_load', times: 1, action: { errno: 'EIO' } }); // fails once, works when apply tries again
  const h = await harness(t, spec(instance('web', restart + '    health: { interval: 30ms, timeout: 10ms, failures: 2 }\n') + '  idle:\n    cpus: 1\n    memory: 128M\n'), { sim, clock, metrics });
  const server = await serveMetrics(metrics, parseMetricsAddress('127.0.0.1:0'));
  t.teardown(() => server.close());
  t.match(server.address, /^127\.0\.0\.1:\d+$/);
  const port = Number(server.address.split(':')[1]);
  const scrape = async () => {
    const r = await get({ host: '127.0.0.1', port, path: '/metrics' });
    t.equal(r.status, 200);
    t.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    return r.body;
  };
  await new Promise((r) => setTimeout(r, 120)); // a few probes
  const id = await h.id('web');
  await sim.panic(id);
  await h.logged(/web restarting in 1 s/);
  clock.advance(1000);
  await until(async () => (await h.status('web')) === 'active');
  await until(() => h.logs.filter((l) => l === '<7>web: loaded -> active').length === 1);
  await sim.panic(id);
  await h.logged(/^<3>web: gave up after 1 restarts within 60 s/);
  const { dtbo, fragment, instanceCreate } = await import('../contract/suite');
  await sim.writeFile('/sys/fs/multikernel/overlays/new', dtbo([fragment('0', '/instances', [instanceCreate('dup', { id, cpus: [6], memoryBytes: 128 * 1024 * 1024 })])], 'dup')).catch(() => undefined);
  await h.logged(/^<4>transaction \d+ failed/);

  const text = await scrape();
  t.match(text, '# TYPE multikernel_instance_status gauge');
  t.match(text, 'multikernel_instance_status{instance="web",status="loaded"} 1');
  t.match(text, 'multikernel_instance_status{instance="web",status="active"} 0');
  t.match(text, 'multikernel_instance_status{instance="idle",status="ready"} 1');
  t.match(text, 'multikernel_instance_restarts_total{instance="web",reason="crashed"} 1');
  t.match(text, 'multikernel_instance_restart_limit_total{instance="web"} 1');
  t.match(text, /multikernel_probe_latency_seconds_count [1-9]\d*/);
  t.match(text, 'multikernel_transaction_failures_total 1');
  t.match(text, 'multikernel_apply_steps_total{action="pool-init",result="ok"} 1');
  t.match(text, 'multikernel_apply_steps_total{action="create",result="ok"} 2');
  t.match(text, 'multikernel_apply_steps_total{action="load",result="failed"} 1');
  t.match(text, 'multikernel_apply_steps_total{action="load",result="ok"} 1');
  t.match(text, 'multikernel_pool_cpus{state="free"} 2');
  t.match(text, 'multikernel_pool_cpus{state="used"} 2');
  t.match(text, 'multikernel_pool_memory_bytes{state="used"} 402653184');
  t.notMatch(text, 'process_cpu', 'no default process metrics');

  t.equal(await h.stop(), 0); // no watcher reads the host from here on: the fault below hits the scrape
  t.equal((await get({ host: '127.0.0.1', port, path: '/' })).status, 404);
  const post = await get({ host: '127.0.0.1', port, path: '/metrics', method: 'POST' });
  t.equal(post.status, 405);
  t.equal(post.headers.allow, 'GET');
  sim.faults.add({ op: 'readdir', path: '/sys/fs/multikernel/instances', times: 1, action: { errno: 'EIO' } });
  const failed = await get({ host: '127.0.0.1', port, path: '/metrics' });
  t.equal(failed.status, 500);
  t.match(failed.body, /EIO/);
});

t.test('served on IPv6 loopback and on a unix socket (a stale one from an earlier run replaced)', async (t) => {
  const sim = new SimulatedSystem();
  await sim.mountMultikernel();
  const metrics = new DaemonMetrics(await Host.open({ system: sim }));
  const v6 = await serveMetrics(metrics, parseMetricsAddress('[::1]:0'));
  t.match(v6.address, /^\[::1\]:\d+$/);
  const port = Number(v6.address.split(':').at(-1));
  t.equal((await get({ host: '::1', port, path: '/metrics' })).status, 200);
  await v6.close();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-metrics-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'metrics.sock');
  // a socket file left behind by a killed daemon
  const made = spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', socketPath]);
  t.equal(made.status, 0);
  t.ok(fs.lstatSync(socketPath).isSocket());
  const unix = await serveMetrics(metrics, parseMetricsAddress(`unix:${socketPath}`));
  t.equal(unix.address, `unix:${socketPath}`);
  const r = await get({ socketPath, path: '/metrics' });
  t.equal(r.status, 200);
  t.match(r.body, '# HELP multikernel_pool_cpus');
  await unix.close();
  // a file that is no socket is not removed: listen fails
  fs.writeFileSync(socketPath, 'mine');
  await t.rejects(serveMetrics(metrics, { kind: 'unix', path: socketPath }), { code: 'EADDRINUSE' });
  t.equal(fs.readFileSync(socketPath, 'utf8'), 'mine');
  await sim.dispose();
});
