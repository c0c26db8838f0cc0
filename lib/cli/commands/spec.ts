/**
 * mkctl plan and mkctl apply: the declarative host spec (lib/spec). `plan` shows what would
 * change to make the host match a spec file, `apply` makes the changes one step at a time and
 * says how each went. The library decides (lib/spec/plan.ts, lib/spec/apply.ts); this file loads
 * the spec, prints, and picks the exit code.
 */
import { parseArgs } from 'node:util';
import type { Drift, Plan, PlanStep, SpecIssue } from '../../spec/types';
import { type CliIo, type Command, EXIT, UsageError } from '../command';
import { HOST_OPTIONS, HOST_OPTIONS_HELP, type HostValues, jsonDocument, positionalArgs, type Styles, styles, withHost } from '../common';

const JSON_SHAPES = `STEP: {"action": "pool-init" | "pool-grow" | "pool-shrink" | "create" | "update" | "load" |
"reload" | "start" | "stop" | "unload" | "delete", "subject": "pool" | NAME, "reason": TEXT}
DRIFT: {"subject", "expected", "actual", "message"}: what apply does not change by itself, or a
change made behind the spec's back
A spec that cannot be used (exit 2): {"version": 1, "error": {"code": "ERR_MK_INVALID_SPEC",
"message", "exitCode": 2, "issues": [{"pointer", "at": {"file", "line", "column"}, "message"}]}}`;

const PLAN_HELP = `usage: mkctl plan -f SPEC [--prune] [options]

Shows what mkctl apply would change to make this host match the spec file SPEC (YAML or JSON),
read from the kernel now, one line per step in the order apply runs them:
  + pool-init, pool-grow, create     > load, start     ~ update, reload
  < stop, unload                     - pool-shrink, delete
then the drift: differences apply does not change by itself, or changes made behind the spec's
back (an instance running although its autostart is false, an image not loaded by apply,
instances the spec does not name, transactions left failed). Nothing is changed.

options:
  -f, --file SPEC      the spec file
  --prune              plan the deletion of instances the spec does not name

${HOST_OPTIONS_HELP}
Exit status: 0 (whether or not there are steps), 1 a kernel error, 2 a spec that cannot be used
(each problem on its own line of stderr: FILE:LINE:COLUMN: message).

--json: {"version": 1, "steps": [STEP], "drift": [DRIFT], "unmanaged": [NAME], "converged": bool}
${JSON_SHAPES}
`;

const APPLY_HELP = `usage: mkctl apply -f SPEC [--prune] [--dry-run] [options]

Makes this host match the spec file SPEC: plans as mkctl plan does, then runs each step through
the library (each is one overlay transaction or one kexec/reboot sequence) and prints it with its
result as it goes. After a failed step the host is read and planned again, and the rest goes on;
a step that fails twice is given up. At the end the host is planned once more. Killed at any
point, apply run again continues from what the kernel shows.

options:
  -f, --file SPEC      the spec file
  --prune              stop, unload and delete instances the spec does not name (last)
  --dry-run            only show the plan (as mkctl plan)

${HOST_OPTIONS_HELP}
Exit status: 0 the host matches the spec (a step that failed once and then worked included),
1 steps are left (a step failed twice, or a kernel error), 2 a spec that cannot be used (each
problem on its own line of stderr: FILE:LINE:COLUMN: message).

--json: {"version": 1, "steps": [STEP + "error"?: {"code", "message"}], "remaining": [STEP],
"drift": [DRIFT], "unmanaged": [NAME], "converged": bool}; "steps" are those run, in order,
"remaining" what a plan made at the end still lists. With --dry-run: as mkctl plan --json.
${JSON_SHAPES}
`;

const SIGIL: Record<PlanStep['action'], string> = {
  'pool-init': '+',
  'pool-grow': '+',
  create: '+',
  load: '>',
  start: '>',
  update: '~',
  reload: '~',
  stop: '<',
  unload: '<',
  'pool-shrink': '-',
  delete: '-',
};

const PRUNED = 'not in the spec (--prune)';

/** `+ create web: 2 CPUs, 512 MiB`, `> start web`, `- delete old (--prune)` */
export function stepLine(step: PlanStep): string {
  const head = `${SIGIL[step.action]} ${step.action} ${step.subject}`;
  if (step.reason === PRUNED) return `${head} (--prune)`;
  if (step.action === 'start') return head;
  return `${head}: ${step.reason}`;
}

function driftText(drift: Drift[], s: Styles): string {
  if (drift.length === 0) return '';
  return `${s.bold('drift')} (apply does not change these by itself):\n${drift.map((d) => `  ${s.yellow(d.subject)}: ${d.message}\n`).join('')}`;
}

function planText(plan: Plan, file: string, s: Styles): string {
  const steps = plan.steps.map((step) => `${stepLine(step)}\n`).join('');
  const tail = plan.converged ? `nothing to do: the host matches ${file}\n` : `${plan.steps.length} step${plan.steps.length === 1 ? '' : 's'}: mkctl apply -f ${file} makes them\n`;
  return `${steps}${driftText(plan.drift, s)}${tail}`;
}

const planJson = (plan: Plan): Record<string, unknown> => ({ steps: plan.steps, drift: plan.drift, unmanaged: plan.unmanaged, converged: plan.converged });

interface Values extends HostValues {
  file?: string;
  prune?: boolean;
  'dry-run'?: boolean;
}

function parse(args: string[], apply: boolean): Values {
  const { values, positionals } = parseArgs({
    args,
    options: { ...HOST_OPTIONS, file: { type: 'string', short: 'f' }, prune: { type: 'boolean' }, ...(apply ? { 'dry-run': { type: 'boolean' } } : {}) },
    allowPositionals: true,
    strict: true,
  });
  positionalArgs(positionals, []);
  if (values.file === undefined) throw new UsageError('missing -f SPEC: the spec file');
  return values as Values;
}

/** Spec problems, from the loader or from the checks against the host: one line each (exit 2). */
function specIssues(err: unknown): SpecIssue[] | undefined {
  const e = err as { code?: unknown; details?: { issues?: unknown } };
  return e.code === 'ERR_MK_INVALID_SPEC' && Array.isArray(e.details?.issues) ? (e.details.issues as SpecIssue[]) : undefined;
}

async function run(args: string[], io: CliIo, mode: 'plan' | 'apply'): Promise<number> {
  const values = parse(args, mode === 'apply');
  const file = values.file!;
  const prune = values.prune === true;
  const s = styles(io);
  try {
    const { loadSpecFile } = await import('../../spec/load');
    const spec = await loadSpecFile(file);
    return await withHost(values, io, async ({ host }) => {
      const { plan, apply } = await import('../../spec/engine');
      if (mode === 'plan' || values['dry-run'] === true) {
        const p = await plan(host, spec, { prune, signal: io.signal });
        io.stdout.write(values.json === true ? jsonDocument(planJson(p)) : planText(p, file, s));
        return EXIT.ok;
      }
      const result = await apply(host, spec, {
        prune,
        signal: io.signal,
        onStep: (step, error) => {
          if (values.json === true) return;
          io.stdout.write(`${stepLine(step)}  ${error ? s.red(`failed: ${error.message}`) : s.green('done')}\n`);
        },
      });
      // the drift and what is left, as the host is now
      const after = await plan(host, spec, { prune, signal: io.signal });
      if (values.json === true) {
        const steps = result.done.map(({ step, error }) => ({
          ...step,
          // the library's ERR_MK_* code, or the errno name of a system call
          ...(error ? { error: { code: (error as { code?: unknown }).code, message: error.message } } : {}),
        }));
        io.stdout.write(jsonDocument({ steps, remaining: after.steps, drift: after.drift, unmanaged: after.unmanaged, converged: after.converged }));
      } else {
        const left = after.steps.map((step) => `  ${stepLine(step)}\n`).join('');
        const tail = after.converged
          ? `${s.green('converged')}: the host matches ${file}\n`
          : `${s.red('not converged')}: ${after.steps.length} step${after.steps.length === 1 ? '' : 's'} left:\n${left}`;
        io.stdout.write(`${driftText(after.drift, s)}${tail}`);
      }
      return after.converged ? EXIT.ok : EXIT.failure;
    });
  } catch (err) {
    const issues = specIssues(err);
    if (issues === undefined) throw err;
    if (values.json === true) {
      io.stdout.write(jsonDocument({ error: { code: 'ERR_MK_INVALID_SPEC', message: (err as Error).message, exitCode: EXIT.usage, issues } }));
    } else {
      io.stderr.write(issues.map((i) => `${i.at.file}:${i.at.line}:${i.at.column}: ${i.message}\n`).join(''));
    }
    return EXIT.usage;
  }
}

export const planCommand: Command = {
  path: ['plan'],
  summary: 'what apply would change to make the host match a spec file',
  help: PLAN_HELP,
  run: (args, io) => run(args, io, 'plan'),
};

export const applyCommand: Command = {
  path: ['apply'],
  summary: 'make the host match a spec file, step by step',
  help: APPLY_HELP,
  run: (args, io) => run(args, io, 'apply'),
};
