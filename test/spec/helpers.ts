// Shared by the spec tests: a host on the simulated kernel, spec objects built directly (as the
// loader would return them), and kernel files to load.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Host } from '../../lib/host';
import { placeholderImage, SimulatedSystem } from '../../lib/simulated';
import type { System } from '../../lib/system/system';
import type { HostSpec, InstanceSpecEntry, PoolSpec } from '../../lib/spec/types';

export async function simHost(options: { system?: System; stateDir?: string } = {}): Promise<{ host: Host; system: System }> {
  const system = options.system ?? new SimulatedSystem(options.stateDir === undefined ? {} : { stateDir: options.stateDir });
  const host = await Host.open({ system, lockPath: path.join(os.tmpdir(), `mk-spec-test-${process.pid}.lock`) });
  return { host, system };
}

/** A directory with kernel images: vmlinux, vmlinux2 (other bytes), initrd.img; removed at exit. */
export function kernels(dir: string): { kernel: string; kernel2: string; initrd: string } {
  const kernel = path.join(dir, 'vmlinux');
  const kernel2 = path.join(dir, 'vmlinux2');
  const initrd = path.join(dir, 'initrd.img');
  fs.writeFileSync(kernel, placeholderImage());
  fs.writeFileSync(kernel2, placeholderImage('x86_64', 8192));
  fs.writeFileSync(initrd, Buffer.alloc(512, 7));
  return { kernel, kernel2, initrd };
}

export function entry(name: string, fields: Partial<InstanceSpecEntry> = {}): InstanceSpecEntry {
  return {
    name,
    cpus: { count: 1 },
    memoryBytes: 256n << 20n,
    devices: [],
    cmdline: 'console=mktty0',
    autostart: true,
    restart: { policy: 'restart', backoff: { initialMs: 1000, maxMs: 60000 }, limit: { attempts: 5, windowMs: 300000 } },
    onDaemonStop: 'keep',
    at: { file: 'host.yaml', line: 3, column: 3 },
    ...fields,
  };
}

/** A spec; `null`: the spec does not manage the pool. */
export function spec(instances: InstanceSpecEntry[], pool: PoolSpec | null = { cpus: { count: 4 }, memoryBytes: 2n << 30n, devices: [] }): HostSpec {
  return { version: 1, ...(pool ? { pool } : {}), instances, source: 'host.yaml' };
}
