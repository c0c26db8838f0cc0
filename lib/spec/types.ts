/**
 * The declarative host spec (issue 12): what an operator writes once, in YAML or JSON, and what
 * `plan`, `apply` and the daemon converge the live host to. These are the types after loading
 * (lib/spec/load.ts): sizes are bigints, durations milliseconds, CPU lists arrays, defaults filled
 * in. The file format itself is described by the JSON Schema shipped with the package
 * (spec.schema.json), which the loader validates against before it builds these.
 */
import type { InstanceStatus } from '../instance';

/** Where in the source file a value was written (1-based), for messages. */
export interface SourcePosition {
  /** the file name given to the loader, or "<spec>" */
  file: string;
  line: number;
  column: number;
}

/** CPUs as a count of free pool CPUs (`cpus: 2`) or exact physical ids (`cpus: "4-5,8"`). */
export type SpecCpus = { count: number } | { physical: number[] };

export interface PoolSpec {
  /** what the pool takes from the host: a count of host CPUs or physical ids */
  cpus: SpecCpus;
  /** bytes (`memory: 2G` in the file) */
  memoryBytes: bigint;
  /** PCI addresses "DDDD:BB:SS.F" lent to the pool */
  devices: string[];
}

/**
 * What happens when an instance the daemon supervises stops without being asked (its kernel
 * panicked or halted itself: `active -> loaded`), or hangs (active, not answering its probes):
 * - `restart`: start it again (a hung one is force-halted first), waiting `backoff` between
 *   attempts (doubling from `initialMs` up to `maxMs`); after `limit.attempts` restarts within
 *   `limit.windowMs` it is left stopped and reported, as systemd's StartLimitBurst does;
 * - `preserve`: leave it as it is (loaded, for a post-mortem of its memory and console);
 * - `stop`: halt it (by force when hung) and leave it loaded.
 */
export interface RestartPolicy {
  policy: 'restart' | 'preserve' | 'stop';
  backoff: { initialMs: number; maxMs: number };
  limit: { attempts: number; windowMs: number };
}

/** The liveness check of a running instance: a vsock probe every `intervalMs`; `failures` unanswered in a row make it hung. */
export interface HealthSpec {
  intervalMs: number;
  timeoutMs: number;
  failures: number;
}

export interface InstanceSpecEntry {
  /** the key under `instances:`; the kernel's instance directory name */
  name: string;
  /** the kernel id 1..2047 (and vsock CID); default: whatever is free when it is created */
  id?: number;
  cpus: SpecCpus;
  memoryBytes: bigint;
  /** NUMA node of its memory (and preferred for CPUs) */
  numaNode?: number;
  /** PCI addresses of free pool devices */
  devices: string[];
  /** the kernel image to load; absent: the instance is created but nothing is loaded */
  kernel?: string;
  initrd?: string;
  /** kernel command line (default "console=mktty0", as Instance.load) */
  cmdline: string;
  /** start it (when it has a kernel): default true */
  autostart: boolean;
  restart: RestartPolicy;
  /** liveness probes while it runs; absent: crash detection only (the kernel's halt), no hang detection */
  health?: HealthSpec;
  /** what the daemon does with it when the daemon is stopped (SIGTERM): `keep` running (default) or `stop` */
  onDaemonStop: 'keep' | 'stop';
  /** where its key was written */
  at: SourcePosition;
}

export interface HostSpec {
  version: 1;
  /** absent: the spec does not manage the pool (it must exist for instances to be created) */
  pool?: PoolSpec;
  instances: InstanceSpecEntry[];
  /** the file it was loaded from, for messages */
  source: string;
}

/** One problem in a spec file: the field (a JSON pointer into the document), where it is, what is wrong. */
export interface SpecIssue {
  /** JSON pointer of the field, e.g. "/instances/web/memory" */
  pointer: string;
  at: SourcePosition;
  message: string;
}

/**
 * A step of a plan, in the order apply runs them. `subject` is "pool" or an instance name;
 * `reason` says in words why the step is needed (what differs).
 */
export type PlanStep =
  | { action: 'pool-init'; subject: 'pool'; reason: string }
  | { action: 'pool-grow' | 'pool-shrink'; subject: 'pool'; reason: string }
  | { action: 'create'; subject: string; reason: string }
  | { action: 'update'; subject: string; reason: string }
  | { action: 'load' | 'reload'; subject: string; reason: string }
  | { action: 'start' | 'stop' | 'unload'; subject: string; reason: string }
  | { action: 'delete'; subject: string; reason: string };

/** A difference between the spec and the live host that apply will not change by itself, or a change made behind the spec's back. */
export interface Drift {
  subject: string;
  /** what was expected (from the spec, or from what the last apply recorded) */
  expected: string;
  /** what the host shows */
  actual: string;
  message: string;
}

export interface Plan {
  steps: PlanStep[];
  drift: Drift[];
  /** instances on the host the spec does not name (left alone unless prune) */
  unmanaged: string[];
  /** true when apply would change nothing */
  converged: boolean;
}

/** The status a spec entry asks for on the live host. */
export type WantedStatus = Extract<InstanceStatus, 'ready' | 'loaded' | 'active'>;

export interface ApplyOptions {
  /** delete instances the spec does not name (default false: they are left alone and listed as unmanaged) */
  prune?: boolean;
  signal?: AbortSignal;
  /** called after each step, with the error when it failed */
  onStep?: (step: PlanStep, error?: Error) => void;
}

export interface ApplyResult {
  /** the plan apply started from */
  plan: Plan;
  /** the steps run, in order, each with its error when it failed */
  done: { step: PlanStep; error?: Error }[];
  /** true when a plan made after the last step has no steps left */
  converged: boolean;
}

/**
 * The library's entry points (lib/spec/index.ts, subpath export `multikernel/spec`):
 *   parseSpec(text: string, file?: string): HostSpec              throws SpecError
 *   loadSpecFile(path: string): Promise<HostSpec>                  throws SpecError (or the fs error)
 *   plan(host: Host, spec: HostSpec, options?: { prune?: boolean; signal?: AbortSignal }): Promise<Plan>
 *   apply(host: Host, spec: HostSpec, options?: ApplyOptions): Promise<ApplyResult>
 * SpecError is a MultikernelError with code ERR_MK_INVALID_SPEC and `issues: SpecIssue[]`.
 */
