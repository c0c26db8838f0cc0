// Shared by the lifecycle tests.
import { SimulatedSystem } from '../../lib/simulated';
import type { System } from '../../lib/system/system';

/**
 * A System that delegates to `system` except for `overrides`: another writer, a kernel that
 * answers oddly. (A SimulatedSystem keeps private state, so Object.create would not do.)
 */
export function wrap(system: SimulatedSystem, overrides: Partial<System>): System {
  const out: Record<string, unknown> = { kind: system.kind };
  for (const k of Object.getOwnPropertyNames(SimulatedSystem.prototype)) {
    const v = (system as unknown as Record<string, unknown>)[k];
    if (k !== 'constructor' && typeof v === 'function') out[k] = v.bind(system);
  }
  return Object.assign(out, overrides) as unknown as System;
}
