// The addon in 100 worker threads (10 waves of 10): each gets its own addon instance, uses
// the fd machinery and exits with a handle still watching. No crash, and the addon closes the
// handles the worker left open: no fd leaked. (Terminating workers in the middle of native work
// is teardown.test.ts.)
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { loadBinding } from '../../lib/binding';
import { handlePair, HELPER_PATH, loadTestHelper } from './helper';

const binding = loadBinding();
loadTestHelper();
// 100 worker start-ups take long on a loaded 2-core machine (about 3 s a wave of 10 here)
t.setTimeout(600_000);
const script = path.join(__dirname, 'fixtures', 'worker.cjs');

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

t.test('10 waves of 10 workers', async (t) => {
  const before = openFds();
  let ok = 0;
  for (let wave = 0; wave < 10; wave++) {
    const results = await Promise.all(
      Array.from({ length: 10 }, async () => {
        // the worker script is plain CommonJS: no need for tap's loaders in every worker
        const worker = new Worker(script, { execArgv: [], workerData: { helperPath: HELPER_PATH } });
        type Report = { status: number; events: number; text: string; fds: number[]; frozen: boolean };
        let message: Report | undefined;
        worker.once('message', (m: Report) => {
          message = m;
          worker.postMessage('exit'); // the worker exits once its report arrived
        });
        const [code] = (await once(worker, 'exit')) as [number];
        return { ...(message ?? { missing: 'the worker exited without its report' }), code };
      }),
    );
    for (const r of results) {
      if (r.code === 0 && 'status' in r && r.status === 0 && r.text === 'hello' && r.frozen) ok++;
      else t.fail(`worker result ${JSON.stringify(r)}`);
    }
  }
  t.equal(ok, 100, 'every worker loaded the addon and read through its own loop');
  t.equal(openFds(), before, 'no fd leaked');
});

t.test('the main thread still works', async (t) => {
  const [a, b] = handlePair(binding);
  t.equal(a.write(Buffer.from('x'), 0, 1), 1);
  t.equal(b.read(Buffer.alloc(1), 0, 1), 1);
  a.close();
  b.close();
});
