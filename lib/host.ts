/**
 * A multikernel host: the entry point of the lifecycle API. `Host.open()` checks that the kernel
 * is a multikernel kernel, mounts its filesystem when needed, and detects what the kernel offers;
 * the host then hands out its Pool and its Instances. Everything is read from the kernel when
 * asked, so instances made by kerf or by hand appear and can be driven like our own.
 */
import { MultikernelError, isSystemError } from './errors';
import { Instance, notFound, type InstanceHost } from './instance';
import { DEFAULT_LOCK_PATH, MK_CONSOLE_DEVICE, MK_DEVICE_TREE, MK_INSTANCES, MK_OVERLAYS, PROC_KIMAGE, instanceDir, txDir, txIds } from './kernfs';
import { decodeFdt } from './fdt/codec';
import { getChild, getProperty } from './fdt/tree';
import { checkInstanceName, type OverlayOp, type VirtioDevice } from './model/overlay';
import { parseInstance, parsePool } from './model/trees';
import { Pool, type PoolHost } from './pool';
import { pciIds } from './readback';
import { candidateOf, selectCpus, checkCpuRequest, type CpuCandidate, type CpuRequest } from './select';
import { probeMultikernelSupport } from './support';
import type { System, VsockServer } from './system/system';
import { listenChannel } from './channels';
import type { HostWatcher, WatchOptions } from './watch';
import { RequestLog } from './requests';
import { readTopology, type HostTopology } from './topology';
import type { TxResult } from './transaction';
import { VMADDR_PORT_ANY, isValidMkId } from './uapi';
import { formatBytes, parseBytes } from './units';

export interface HostFeatures {
  /** `/dev/mktty`: consoles of instances */
  console: boolean;
  /** `/proc/kimage`: the loaded images */
  kimage: boolean;
  /** the multikernel vsock transport (a listening socket on it can be made) */
  vsock: boolean;
  /**
   * whether a live instance answers a connect to an unused vsock port with a reset (newest
   * mk_transport.c), which makes the agent-free liveness probe possible; undefined until
   * `detectVsockReset()` found an instance to ask
   */
  vsockReset?: boolean;
  /** whether transactions carry `tx_N/reason` (an open kernel change); undefined while no transaction exists */
  txReason?: boolean;
  /** how the pool tree shows memory: `memory@` nodes (newest) or `memory-base`/`memory-bytes` (older) */
  poolFormat: 'memory-nodes' | 'base-bytes';
  /** the pool tree carries `llc-way-mask` (LLC way isolation, an open kernel change) */
  llcWayMask: boolean;
  /** what this kernel lacks, one line each */
  missing: string[];
}

export type HostFeature = 'console' | 'kimage' | 'vsock';

export interface HostOpenOptions {
  /** the kernel door (default: the real kernel, LinuxSystem) */
  system?: System;
  /** mount /sys/fs/multikernel when it is not mounted (default true) */
  mount?: boolean;
  /** features the caller needs: open() fails with ERR_MK_NO_SUPPORT naming those missing */
  require?: HostFeature[];
  /** our flock around every change (default /run/multikernel.lock) */
  lockPath?: string;
  /** serialise with kerf through its lock file too (default true) */
  kerfLock?: boolean;
  /**
   * How long a change waits for the writers' locks, ms (default 30000), then fails with
   * ERR_MK_LOCKED or ETIMEDOUT. The locks are not queued in order: with many writers changing
   * the host back to back, one of them can wait longer than the others.
   */
  lockTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface InstanceSpec {
  /** a node name: letters, digits and ,._+- (the kernel's instance directory) */
  name: string;
  /** the kernel id 1..2047 (also the instance's vsock CID); default: the lowest free one */
  id?: number;
  /** CPUs from the pool's free ones */
  cpus: CpuRequest;
  /** bytes, or "512M", "2G"; page aligned */
  memory: bigint | number | string;
  /** the NUMA node the memory comes from (and CPUs are preferred from) */
  numaNode?: number;
  /** PCI addresses of free pool devices */
  devices?: string[];
  /** virtio devices, e.g. `{ name: 'net0', deviceId: 1 }` for virtio-net */
  virtio?: VirtioDevice[];
}

function invalid(message: string): never {
  throw new MultikernelError('ERR_MK_INVALID_SPEC', message);
}

/** how many times createInstance chooses CPUs afresh when another writer took those it chose */
const CREATE_ATTEMPTS = 4;

async function exists(system: System, path: string): Promise<boolean> {
  return system.stat(path).then(
    () => true,
    () => false,
  );
}

export class Host {
  /** the kernel door this host speaks through */
  readonly system: System;
  /** what the kernel offers, detected by open() */
  readonly features: HostFeatures;
  /** the pool of this host */
  readonly pool: Pool;
  readonly #context: InstanceHost & PoolHost;
  readonly #opened: HostTopology;
  readonly #txOptions: { lockPath: string; lockTimeoutMs?: number; kerfLock?: false };
  readonly #requests = new RequestLog();

  private constructor(system: System, features: HostFeatures, topology: HostTopology, options: HostOpenOptions) {
    this.system = system;
    this.features = features;
    this.#opened = topology;
    this.#txOptions = {
      lockPath: options.lockPath ?? DEFAULT_LOCK_PATH,
      ...(options.lockTimeoutMs !== undefined ? { lockTimeoutMs: options.lockTimeoutMs } : {}),
      ...(options.kerfLock === false ? { kerfLock: false as const } : {}),
    };
    this.#context = {
      system,
      arch: topology.arch,
      topology: () => readTopology(system),
      knownCpus: () => this.#knownCpus(),
      instanceResources: () => this.#instanceResources(),
      freePoolCpus: () => this.#freePoolCpus(),
      writeBaseline: (blob, signal) => this.#writeBaseline(blob, signal),
      applyOverlay: (ops, description, signal) => this.#apply(ops, description, signal),
      applyPlannedOverlay: (plan, description, signal) => this.#applyPlanned(plan, description, signal),
      requested: (id, to) => this.#requests.note(id, to),
    };
    this.pool = new Pool(this.#context);
  }

  /**
   * Opens the host: refuses a kernel without multikernel support (ERR_MK_NO_SUPPORT, with what
   * was probed), mounts the multikernel filesystem when missing and allowed, and detects features.
   */
  static async open(options: HostOpenOptions = {}): Promise<Host> {
    options.signal?.throwIfAborted();
    const { lockTimeoutMs } = options;
    if (lockTimeoutMs !== undefined && (!Number.isSafeInteger(lockTimeoutMs) || lockTimeoutMs < 0)) {
      throw new RangeError(`lockTimeoutMs must be a whole number of milliseconds >= 0, got ${String(lockTimeoutMs)}`);
    }
    const system = options.system ?? new (await import('./system/linux')).LinuxSystem();
    const report = await probeMultikernelSupport(system);
    if (!report.supported) {
      throw new MultikernelError('ERR_MK_NO_SUPPORT', `this kernel has no multikernel support; probed: ${report.findings.join('; ')}. Boot a kernel built with CONFIG_MULTIKERNEL.`, {
        details: { probes: report },
      });
    }
    if (!report.mounted) {
      if (options.mount === false) {
        throw new MultikernelError('ERR_MK_NO_SUPPORT', '/sys/fs/multikernel is not mounted and mount: false was given: run `mount -t multikernel none /sys/fs/multikernel`', {
          details: { probes: report },
        });
      }
      await system.mountMultikernel().catch((err: unknown) => {
        // another process mounted it meanwhile
        if (!isSystemError(err, 'EBUSY')) throw err;
      });
    }
    const features = await Host.#detect(system);
    const wanted = options.require ?? [];
    const lacking = wanted.filter((f) => !features[f]);
    if (lacking.length > 0) {
      throw new MultikernelError('ERR_MK_NO_SUPPORT', `this multikernel kernel lacks what was required: ${features.missing.join('; ')}`, { details: { lacking, features } });
    }
    return new Host(system, features, await readTopology(system), options);
  }

  static async #detect(system: System): Promise<HostFeatures> {
    const missing: string[] = [];
    const console = await system.stat(MK_CONSOLE_DEVICE).then(
      (st) => st.type === 'char-device',
      () => false,
    );
    if (!console) missing.push(`no ${MK_CONSOLE_DEVICE}: consoles need CONFIG_MKTTY`);
    const kimage = await exists(system, PROC_KIMAGE);
    if (!kimage) missing.push(`no ${PROC_KIMAGE}: an older multikernel kernel (loaded images are not listed)`);
    const vsock = await system.vsockListen({ port: VMADDR_PORT_ANY, multikernel: true }).then(
      async (server) => {
        await server.close();
        return true;
      },
      () => false,
    );
    if (!vsock) missing.push('no multikernel vsock transport: channels and exec need CONFIG_MULTIKERNEL_VSOCKETS (module mk_transport)');
    const dtb = await system.readFile(MK_DEVICE_TREE);
    const pool = parsePool(dtb);
    const resources = getChild(decodeFdt(dtb).root, 'resources');
    const llcWayMask = resources !== undefined && getProperty(resources, 'llc-way-mask') !== undefined;
    const txs = txIds(await system.readdir(MK_OVERLAYS));
    const newest = txs.at(-1);
    const txReason = newest === undefined ? undefined : (await system.readdir(txDir(newest)).catch(() => [] as string[])).includes('reason');
    return { console, kimage, vsock, ...(txReason === undefined ? {} : { txReason }), poolFormat: pool.format, llcWayMask, missing };
  }

  /**
   * Listens for connections from instances on `port` (the host is CID 0 on the multikernel vsock
   * transport): an async iterable of Duplex streams; close() stops it.
   */
  listen(port: number, options: { backlog?: number } = {}): Promise<VsockServer> {
    return listenChannel(this.system, port, options);
  }

  /**
   * Watches the host: instances added and removed, status changes with their cause (`requested`
   * through this Host, `crashed` for active -> loaded otherwise, `external`), pool changes and
   * transactions, as `event` events and an async iterator. Stops on close() or the signal.
   */
  watch(options: WatchOptions = {}): HostWatcher {
    // loaded here: a process that never watches (a short mkctl command) does not pay for it
    const { HostWatcher: Watcher } = require('./watch') as typeof import('./watch');
    return new Watcher(this.system, this.#requests, options);
  }

  /** The host's CPUs, cores and NUMA nodes, read now (a CPU in the pool departs from the host's lists). */
  topology(): Promise<HostTopology> {
    return readTopology(this.system);
  }

  /** Every instance, in the kernel's order; made by this library, by kerf or by hand. */
  async instances(): Promise<Instance[]> {
    const out: Instance[] = [];
    for (const name of await this.system.readdir(MK_INSTANCES)) {
      const instance = await this.#byName(name).catch((err: unknown) => {
        // deleted between the listing and the read
        if (err instanceof MultikernelError && err.code === 'ERR_MK_INSTANCE_NOT_FOUND') return undefined;
        throw err;
      });
      if (instance) out.push(instance);
    }
    return out;
  }

  /** The instance of that name, or of that id (ERR_MK_INSTANCE_NOT_FOUND otherwise). */
  async instance(nameOrId: string | number): Promise<Instance> {
    if (typeof nameOrId === 'string') return this.#byName(nameOrId);
    const found = (await this.instances()).find((i) => i.id === nameOrId);
    if (!found) throw notFound(String(nameOrId), `no instance has id ${nameOrId}`);
    return found;
  }

  async #byName(name: string): Promise<Instance> {
    try {
      const id = Number((await this.system.readFile(`${instanceDir(name)}/id`)).toString('latin1').trim());
      return new Instance(this.#context, name, id);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw notFound(name);
      throw err;
    }
  }

  /**
   * Creates an instance from free pool resources in one transaction (status `ready`). The kernel
   * only warns when it cannot reserve CPUs or devices inside a create; this reads back what was
   * granted and, when something is missing, removes the instance again and says what.
   */
  async createInstance(spec: InstanceSpec, options: { signal?: AbortSignal } = {}): Promise<Instance> {
    const name = checkInstanceName('name', spec.name);
    let memoryBytes: bigint;
    try {
      memoryBytes = parseBytes(spec.memory, 'memory');
    } catch (err) {
      return invalid((err as Error).message);
    }
    if (memoryBytes % 4096n !== 0n) invalid(`memory must be a whole number of 4 KiB pages, got ${memoryBytes}`);
    checkCpuRequest('cpus', spec.cpus);
    if (spec.numaNode !== undefined && (!Number.isSafeInteger(spec.numaNode) || spec.numaNode < 0 || spec.numaNode > 63)) invalid(`numaNode must be 0..63, got ${spec.numaNode}`);
    if (spec.id !== undefined && !isValidMkId(spec.id)) invalid(`id must be 1..2047, got ${String(spec.id)}`);
    const devices = (spec.devices ?? []).map((d) => d.toLowerCase());
    options.signal?.throwIfAborted();
    if (spec.id !== undefined && (await this.instances()).some((i) => i.id === spec.id)) {
      throw new MultikernelError('ERR_MK_INSTANCE_EXISTS', `id ${spec.id} is taken by another instance`, { details: { id: spec.id } });
    }

    if (await exists(this.system, instanceDir(name))) {
      throw new MultikernelError('ERR_MK_INSTANCE_EXISTS', `an instance named "${name}" exists already`, { details: { name } });
    }
    // The CPUs are chosen from a reading taken before the writers' lock, so a writer that takes
    // them first makes the kernel create the instance without them: CPUs this call chose (not
    // named by the caller) are chosen again from a new reading, a few times.
    const chosen = typeof spec.cpus === 'number' || 'count' in spec.cpus || 'cores' in spec.cpus;
    let attempt = 1;
    let lost = await this.#createOnce(name, spec, memoryBytes, devices, options.signal);
    while (lost !== undefined && chosen && lost.missingDevices.length === 0 && attempt < CREATE_ATTEMPTS) {
      attempt += 1;
      lost = await this.#createOnce(name, spec, memoryBytes, devices, options.signal);
    }
    if (lost === undefined) return this.#byName(name);
    throw new MultikernelError(
      'ERR_MK_RESOURCES',
      `the kernel created "${name}" without all it was asked for (CPUs missing: [${lost.missingCpus.join(', ')}], devices missing: [${lost.missingDevices.join(', ')}], ` +
        `memory ${formatBytes(lost.memoryBytes)} of ${formatBytes(memoryBytes)}): another writer took them meanwhile; the instance was removed again` +
        (chosen && lost.missingDevices.length === 0 ? ` (${attempt} attempts, each with CPUs chosen afresh)` : ''),
      { details: { ...lost, attempts: attempt } },
    );
  }

  /**
   * One attempt of createInstance from a fresh reading of the pool: undefined when the kernel
   * granted everything, else what it did not (the instance is removed again).
   */
  async #createOnce(
    name: string,
    spec: InstanceSpec,
    memoryBytes: bigint,
    devices: string[],
    signal: AbortSignal | undefined,
  ): Promise<{ missingCpus: number[]; missingDevices: string[]; memoryBytes: bigint } | undefined> {
    // chosen under the writers' locks, from what the kernel shows then
    let cpus: number[] = [];
    await this.#applyPlanned(
      async () => {
        const pool = await this.pool.snapshot();
        if (!pool.exists) throw new MultikernelError('ERR_MK_NO_POOL', 'there is no pool to take resources from: host.pool.init() first');
        if (memoryBytes > pool.freeMemoryBytes) {
          throw new MultikernelError('ERR_MK_RESOURCES', `instance "${name}" wants ${formatBytes(memoryBytes)}; the pool has ${formatBytes(pool.freeMemoryBytes)} free`, {
            details: { wanted: memoryBytes, free: pool.freeMemoryBytes },
          });
        }
        // one reading of the topology serves both the free CPUs and the logical-number lookup
        const known = await this.#knownCpus();
        const free = await this.#freePoolCpus(known);
        const preferred = spec.numaNode === undefined ? free : [...free.filter((c) => c.node === spec.numaNode), ...free.filter((c) => c.node !== spec.numaNode)];
        cpus = selectCpus('cpus', spec.cpus, preferred, known);
        const freeDevices = pciIds(pool.devices);
        const absent = devices.filter((d) => !freeDevices.includes(d));
        if (absent.length > 0) {
          throw new MultikernelError('ERR_MK_RESOURCES', `device ${absent.join(', ')} is not free in the pool (free: ${freeDevices.join(', ') || 'none'}): grow the pool with it first`, {
            details: { absent },
          });
        }
        const ops: OverlayOp[] = [
          {
            op: 'instance-create',
            name,
            ...(spec.id !== undefined ? { id: spec.id } : {}),
            memoryBytes,
            cpus,
            ...(spec.numaNode !== undefined ? { numaNodes: [spec.numaNode] } : {}),
            ...(spec.virtio ? { virtio: spec.virtio } : {}),
          },
          ...devices.map((pciId) => ({ op: 'device-add' as const, target: { instance: name }, pciId })),
        ];
        return ops;
      },
      `create ${name}`,
      signal,
    );
    const instance = await this.#byName(name);
    const tree = parseInstance(await this.system.readFile(`${instanceDir(name)}/device_tree`));
    const heldDevices = pciIds(tree.devices);
    const missingCpus = cpus.filter((c) => !tree.cpus.includes(c));
    const missingDevices = devices.filter((d) => !heldDevices.includes(d));
    if (missingCpus.length > 0 || missingDevices.length > 0 || tree.memoryBytes < memoryBytes) {
      await instance.delete().catch(() => undefined);
      return { missingCpus, missingDevices, memoryBytes: tree.memoryBytes };
    }
    return undefined;
  }

  /**
   * Asks a running instance whether the vsock transport answers a connect to an unused port with
   * a reset (fills `features.vsockReset`). Undefined when no instance runs, or when none answered
   * within `timeoutMs` (default 500): an older kernel, or a hung instance.
   */
  async detectVsockReset(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<boolean | undefined> {
    options.signal?.throwIfAborted();
    for (const instance of await this.instances()) {
      if ((await instance.status().catch(() => undefined)) !== 'active') continue;
      const limit = AbortSignal.any([AbortSignal.timeout(options.timeoutMs ?? 500), ...(options.signal ? [options.signal] : [])]);
      try {
        // port 0xfffffffe: never bound by the agents this library knows
        const stream = await this.system.vsockConnect({ cid: instance.id, port: 0xfffffffe, signal: limit });
        stream.destroy();
      } catch (err) {
        options.signal?.throwIfAborted();
        if (isSystemError(err, 'ECONNRESET', 'ECONNREFUSED')) {
          this.features.vsockReset = true;
          return true;
        }
      }
    }
    return undefined;
  }

  async #applyPlanned(plan: () => Promise<OverlayOp[]>, description: string, signal?: AbortSignal): Promise<TxResult | undefined> {
    const { applyPlannedOverlay } = await import('./transaction');
    return applyPlannedOverlay(this.system, plan, { ...this.#txOptions, description, signal });
  }

  async #apply(ops: OverlayOp[], description: string, signal?: AbortSignal): Promise<TxResult> {
    const { applyOverlay } = await import('./transaction');
    return applyOverlay(this.system, ops, { ...this.#txOptions, description, signal });
  }

  async #writeBaseline(blob: Uint8Array, signal?: AbortSignal): Promise<void> {
    // set inside the callback: a plain annotation would be narrowed to 'not tried' here
    let state = 'not tried' as 'not tried' | 'failed' | 'written';
    const { withWriterLocks } = await import('./transaction');
    try {
      await withWriterLocks(
        this.system,
        { ...this.#txOptions, signal },
        async () => {
          state = 'failed';
          await this.system.writeFile(MK_DEVICE_TREE, blob);
          state = 'written';
        },
        () => 'the baseline was written',
      );
    } catch (err) {
      // A failed write leaves what the kernel grew before the failure (baseline.c): give it back,
      // after the locks are released (the teardown takes them). Not when the locks were not had
      // (the pool, if any, is another writer's), nor when the write worked and only the release failed.
      if (state === 'failed') await this.pool.teardown().catch(() => undefined);
      throw err;
    }
  }

  /** CPUs whose logical number or node the host showed, now or when it was opened (a pooled CPU departs from sysfs). */
  async #knownCpus(): Promise<CpuCandidate[]> {
    const now = await readTopology(this.system).catch(() => this.#opened);
    const seen = new Map<number, CpuCandidate>();
    for (const c of [...this.#opened.cpus, ...now.cpus]) if (c.physicalId >= 0) seen.set(c.physicalId, candidateOf(c));
    return [...seen.values()];
  }

  async #freePoolCpus(known?: CpuCandidate[]): Promise<CpuCandidate[]> {
    const tree = parsePool(await this.system.readFile(MK_DEVICE_TREE));
    known ??= await this.#knownCpus();
    // without a pool the kernel shows no cpus-available: none are free
    return tree.cpusAvailable.map((id) => known.find((k) => k.physicalId === id) ?? { physicalId: id });
  }

  async #instanceResources(): Promise<{ name: string; cpus: number[]; memoryBytes: bigint }[]> {
    const out: { name: string; cpus: number[]; memoryBytes: bigint }[] = [];
    for (const instance of await this.instances()) {
      const tree = await this.system.readFile(`${instanceDir(instance.name)}/device_tree`).then(parseInstance, () => undefined);
      if (tree) out.push({ name: instance.name, cpus: tree.cpus, memoryBytes: tree.memoryBytes });
    }
    return out;
  }
}

