/**
 * apply(): converges the live host to a HostSpec, one step at a time (docs/spec-apply.md).
 *
 * Each step is one library call (one overlay transaction, or one kexec/reboot sequence), which
 * takes the writers' locks itself. When a step fails, the host is read again and planned again
 * (the kernel is the truth, not the plan that was made before the failure), the instance whose
 * step failed is put last, and apply goes on; a step that fails a second time ends the attempts
 * on its instance (or on the pool). At the end the host is planned once more: `converged` says
 * whether anything is left.
 *
 * Crash safety follows from planning from the kernel alone: instances are found by name, a
 * create is one transaction (there is either an instance of that name or none), a loaded image
 * carries its tag, so apply run again after being killed at any point continues from what the
 * kernel shows, without duplicates.
 */
import type { Host } from '../host';
import { computePlan, type ComputedPlan, type PlannedStep } from './plan';
import type { ApplyOptions, ApplyResult, HostSpec, PlanStep } from './types';

/** How many times a step (its action on its subject) may fail before apply gives up on its subject. */
export const APPLY_ATTEMPTS = 2;

function ordered(planned: PlannedStep[], deferred: Set<string>): PlannedStep[] {
  return [...planned.filter((p) => !deferred.has(p.step.subject)), ...planned.filter((p) => deferred.has(p.step.subject))];
}

/**
 * Makes the live host match `spec`: computes the plan, runs its steps in order through the
 * library, calls `onStep` after each (with its error when it failed), and re-plans after a
 * failure. Throws ERR_MK_INVALID_SPEC before any change when the host cannot give what the spec
 * asks, and the signal's reason when aborted (between steps, or from the step it interrupted).
 */
export async function apply(host: Host, spec: HostSpec, options: ApplyOptions = {}): Promise<ApplyResult> {
  const { signal, onStep } = options;
  const planOptions = { prune: options.prune, signal };
  const start = await computePlan(host, spec, planOptions);
  const done: ApplyResult['done'] = [];
  const failures = new Map<string, number>();
  const deferred = new Set<string>();
  const givenUp = new Set<string>();
  // each round runs at least one step; a well-behaved plan needs one or two
  const rounds = 8 + 3 * start.planned.length;
  let current: ComputedPlan = start;
  for (let round = 0; round < rounds; round++) {
    const runnable = ordered(
      current.planned.filter((p) => !givenUp.has(p.step.subject)),
      deferred,
    );
    if (runnable.length === 0) break;
    for (const p of runnable) {
      signal?.throwIfAborted();
      const step: PlanStep = p.step;
      try {
        await p.run();
      } catch (err) {
        if (signal?.aborted) throw err;
        const error = err instanceof Error ? err : new Error(String(err));
        done.push({ step, error });
        onStep?.(step, error);
        const key = `${step.action} ${step.subject}`;
        const count = (failures.get(key) ?? 0) + 1;
        failures.set(key, count);
        if (count >= APPLY_ATTEMPTS) givenUp.add(step.subject);
        else if (step.subject !== 'pool') deferred.add(step.subject);
        break;
      }
      done.push({ step });
      onStep?.(step);
    }
    current = await computePlan(host, spec, planOptions);
  }
  return { plan: start.plan, done, converged: current.plan.converged };
}
