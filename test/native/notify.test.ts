// sd_notify into AF_UNIX datagram sockets (path and abstract) bound by a small python3
// receiver: Node itself has no unix datagram sockets.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadBinding } from '../../lib/binding';

const binding = loadBinding();
const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = sys.argv[1]
s.bind('\\0' + addr[1:] if addr.startswith('@') else addr)
print('ready', flush=True)
s.settimeout(20)
data = s.recv(65536)
sys.stdout.write(data.decode())
`;

const python = spawnSync('python3', ['-c', 'import socket'], { encoding: 'utf8' }).status === 0;
const saved = process.env['NOTIFY_SOCKET'];
t.teardown(() => {
  if (saved === undefined) delete process.env['NOTIFY_SOCKET'];
  else process.env['NOTIFY_SOCKET'] = saved;
});

async function receive(address: string, state: string): Promise<string> {
  const child = spawn('python3', ['-c', RECEIVER, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  const ready = new Promise<void>((resolve) =>
    child.stdout.on('data', (s: string) => {
      out += s;
      if (out.startsWith('ready\n')) resolve();
    }),
  );
  await ready;
  process.env['NOTIFY_SOCKET'] = address;
  const sent = binding.sdNotify(state);
  await once(child, 'exit');
  if (!sent) throw new Error('sdNotify said false');
  return out.slice('ready\n'.length);
}

if (!python) {
  t.test('sd_notify to a socket', { skip: 'python3 is not available to receive unix datagrams' }, async () => {});
} else {
  t.test('to a path socket', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mk-notify-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    t.equal(await receive(path.join(dir, 'notify'), 'READY=1\nSTATUS=up'), 'READY=1\nSTATUS=up');
  });

  t.test('to an abstract socket', async (t) => {
    t.equal(await receive(`@mk-notify-test-${process.pid}`, 'STOPPING=1'), 'STOPPING=1');
  });
}

t.test('without a supervisor, or with a bad address', async (t) => {
  delete process.env['NOTIFY_SOCKET'];
  t.equal(binding.sdNotify('READY=1'), false, 'unset');
  process.env['NOTIFY_SOCKET'] = '';
  t.equal(binding.sdNotify('READY=1'), false, 'empty');
  process.env['NOTIFY_SOCKET'] = 'relative/path';
  t.throws(() => binding.sdNotify('READY=1'), { code: 'EAFNOSUPPORT', path: 'relative/path' });
  process.env['NOTIFY_SOCKET'] = '/nonexistent/mk-notify';
  t.throws(() => binding.sdNotify('READY=1'), {
    code: 'ENOENT',
    syscall: 'sendto',
    path: '/nonexistent/mk-notify',
    message: "ENOENT: no such file or directory, sendto '/nonexistent/mk-notify'",
  });
  process.env['NOTIFY_SOCKET'] = `@mk-nobody-listens-${process.pid}`;
  t.throws(() => binding.sdNotify('READY=1'), { code: 'ECONNREFUSED', path: `@mk-nobody-listens-${process.pid}` });
  process.env['NOTIFY_SOCKET'] = `/${'x'.repeat(108)}`;
  t.throws(() => binding.sdNotify('READY=1'), { code: 'ENAMETOOLONG' }, 'longer than sun_path');
  process.env['NOTIFY_SOCKET'] = `/${'x'.repeat(300)}`;
  t.throws(() => binding.sdNotify('READY=1'), { code: 'ENAMETOOLONG' }, 'much longer');
});
