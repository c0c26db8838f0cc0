// fixtures/exercise.cjs, the sanitizer lanes' tour of the addon's harmless entry points
// (scripts/sanitize.sh), run here too with the normal addon so that it keeps passing.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { HELPER_PATH, loadTestHelper } from './helper';

t.test('the exercise fixture passes with the normal addon', async (t) => {
  loadTestHelper(); // built when missing
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  delete env.NODE_V8_COVERAGE;
  const child = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'fixtures', 'exercise.cjs'), HELPER_PATH, '2'], {
    env,
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(child.status, 0, `exit status (stderr: ${child.stderr.slice(-2000)})`);
  const report = JSON.parse(child.stdout.trim().split('\n').pop() || 'null') as { failures: string[]; checks: Record<string, unknown> } | null;
  t.same(report?.failures, [], 'no failed check');
  t.equal(report?.checks.workers, 2, 'every round ran');
});
