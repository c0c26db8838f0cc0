/**
 * plan and apply of the declarative host spec, for lib/spec/index.ts to re-export (the loader
 * lives in lib/spec/load.ts).
 */
export { plan, imageTag, taggedCmdline, splitTag, SPEC_TAG_PARAM, APPLY_STOP_GRACE_MS, type PlanOptions } from './plan';
export { apply, APPLY_ATTEMPTS } from './apply';
