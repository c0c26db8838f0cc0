/**
 * The declarative host spec (issue 12), subpath export `multikernel/spec`: load and validate a
 * spec file (YAML or JSON) into a HostSpec. The file format is the JSON Schema shipped as
 * `multikernel/spec.schema.json`; docs/spec.md describes it.
 */
export { parseSpec, loadSpecFile, formatIssue, SpecError, SPEC_SCHEMA_PATH, DEFAULT_CMDLINE, DEFAULT_HEALTH, DEFAULT_RESTART } from './load';
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
