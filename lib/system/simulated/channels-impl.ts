/**
 * The simulated kernel's communication channels behind the SimChannels seam: /dev/mktty
 * (simulated/mktty.ts), AF_VSOCK (simulated/vsock.ts) and the kerf-init agent listening on
 * port 1023 in every running instance (simulated/agent.ts).
 */
import type { SimChannelHost, SimChannels } from './channels';
import type { SimMktty } from './mktty';
import { DEFAULT_CONNECT_TIMEOUT_MS, SimVsock } from './vsock';

// The console and the agent are loaded when first needed: Host.open() makes a listening socket to
// see whether the transport exists, and a short mkctl command needs nothing more.
const agent = (): typeof import('./agent') => require('./agent') as typeof import('./agent');
const AGENT_PORT = (): number => (require('../../exec/protocol') as typeof import('../../exec/protocol')).AGENT_PORT;

export interface SimChannelOptions {
  /** the simulated process may bind vsock ports <= 1023 (default: running as root) */
  privileged?: boolean;
  /** how long connect() waits for an instance that does not answer (default 2000 ms, af_vsock's default) */
  connectTimeoutMs?: number;
}

/** The first pid a command gets after each boot (kerf-init is pid 1; the rest is boot noise). */
const FIRST_PID = 100;

export function createSimChannels(host: SimChannelHost, options: SimChannelOptions = {}): SimChannels {
  const pids = new Map<number, number>();
  const nextPid = (id: number): number => {
    const pid = pids.get(id) ?? FIRST_PID;
    pids.set(id, pid + 1);
    return pid;
  };
  let mkttyMade: SimMktty | undefined;
  const mktty = (): SimMktty => (mkttyMade ??= new (require('./mktty') as typeof import('./mktty')).SimMktty(host, nextPid));
  const vsock = new SimVsock(host, {
    privileged: options.privileged ?? process.getuid!() === 0, // Linux only (package.json "os")
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    // kerf-init is the one listener inside a running instance.
    instanceListener: (info, port) =>
      port === AGENT_PORT() ? (stream) => agent().serveExecSession(stream, { instance: info, faults: host.faults, nextPid: () => nextPid(info.id) }) : undefined,
  });
  return {
    openMktty: () => mktty().open(),
    vsockConnect: (connectOptions) => vsock.connect(connectOptions),
    vsockListen: (listenOptions) => vsock.listen(listenOptions),
    instanceStarted(id) {
      pids.delete(id);
      mktty().instanceStarted(id);
    },
    instanceStopped(id, how) {
      vsock.instanceStopped(id);
      mktty().instanceStopped(id, how);
    },
    instanceHung(id) {
      vsock.instanceHung(id);
      mktty().instanceHung(id);
    },
    async close() {
      await vsock.close();
      await mkttyMade?.close();
    },
  };
}
