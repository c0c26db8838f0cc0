/**
 * The declarative host spec (issue 12), subpath export `multikernel/spec`: load and validate a
 * spec file (YAML or JSON) into a HostSpec (docs/spec.md; the file format is the JSON Schema
 * shipped as `multikernel/spec.schema.json`), `plan` the difference from the live host and
 * `apply` it step by step (docs/spec-apply.md).
 */
export { parseSpec, loadSpecFile, formatIssue, SpecError, SPEC_SCHEMA_PATH, DEFAULT_CMDLINE, DEFAULT_HEALTH, DEFAULT_RESTART } from './load';
export { plan, apply, SPEC_TAG_PARAM, APPLY_ATTEMPTS, type PlanOptions } from './engine';
export type {
  HostSpec,
  PoolSpec,
  InstanceSpecEntry,
  SpecCpus,
  RestartPolicy,
  HealthSpec,
  SpecIssue,
  SourcePosition,
  PlanStep,
  Plan,
  Drift,
  WantedStatus,
  ApplyOptions,
  ApplyResult,
} from './types';
