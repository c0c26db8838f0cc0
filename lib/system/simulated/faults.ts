/**
 * Fault injection for the simulated kernel: make any step fail with a chosen errno, stall, or stop
 * half way. Each simulated operation calls `hit(op, context)` at the point where the real kernel
 * could fail; a matching rule then throws, waits, or tells the caller to stop half way.
 *
 * Operation names are the simulator's step names, e.g. 'write', 'read', 'rmdir', 'kexec_file_load',
 * 'reboot', 'mount', 'overlay.apply', 'mktty.write', 'vsock.connect', 'agent.exec'
 * (docs/kernel-interface.md lists them all).
 */
import { systemError } from '../../errors';

export type FaultAction =
  /** fail the step with this errno name, e.g. 'EBUSY' */
  | { errno: string }
  /** delay the step by this many milliseconds, then carry on */
  | { stallMs: number }
  /** the step does part of its work and then stops (meaning depends on the step) */
  | { halfway: true };

export interface FaultRule {
  op: string;
  /** only when the step concerns this path (exact string, or a pattern) */
  path?: string | RegExp;
  /** only when the step concerns this instance id */
  id?: number;
  /** how many times the rule fires before it is spent (default: always) */
  times?: number;
  action: FaultAction;
}

export interface FaultContext {
  path?: string;
  id?: number;
  /** the syscall name used for an injected error (default: op) */
  syscall?: string;
}

export class FaultInjector {
  readonly #rules: { rule: FaultRule; left: number }[] = [];

  add(rule: FaultRule): void {
    if ('errno' in rule.action) systemError(rule.action.errno, 'fault'); // rejects unknown names now, not at hit time
    this.#rules.push({ rule, left: rule.times ?? Infinity });
  }

  clear(): void {
    this.#rules.length = 0;
  }

  get size(): number {
    return this.#rules.length;
  }

  /**
   * Called by the simulator at a failure point. Throws the injected error, waits out a stall,
   * and returns 'halfway' when the step must stop part way; otherwise returns undefined.
   */
  async hit(op: string, context: FaultContext = {}): Promise<'halfway' | undefined> {
    for (let i = 0; i < this.#rules.length; i++) {
      const entry = this.#rules[i]!;
      if (!matches(entry.rule, op, context)) continue;
      entry.left -= 1;
      if (entry.left <= 0) this.#rules.splice(i, 1);
      const action = entry.rule.action;
      if ('errno' in action) throw systemError(action.errno, context.syscall ?? op, context.path);
      if ('stallMs' in action) {
        await new Promise((resolve) => setTimeout(resolve, action.stallMs));
        return undefined;
      }
      return 'halfway';
    }
    return undefined;
  }
}

function matches(rule: FaultRule, op: string, context: FaultContext): boolean {
  if (rule.op !== op) return false;
  if (rule.id !== undefined && rule.id !== context.id) return false;
  if (rule.path !== undefined) {
    if (context.path === undefined) return false;
    if (typeof rule.path === 'string' ? rule.path !== context.path : !rule.path.test(context.path)) return false;
  }
  return true;
}
