import { SimulatedSystem, type SimulatedSystemOptions } from '../../lib/system/simulated';
import { KEXEC_FILE_NO_INITRAMFS, KEXEC_MULTIKERNEL, kexecMkId } from '../../lib/uapi';
import { fakeElfVmlinux } from '../contract/fake-kernel';
import { baseline, dtbo, fragment, instanceCreate, memoryNode } from '../contract/suite';

export const M = '/sys/fs/multikernel';
export const MiB = 1024 * 1024;

/** A mounted simulator with a pool of APIC ids 2,4,6 and 1 GiB, and optionally instance "web" (id 1, CPU 2, 256 MiB). */
export async function setup(opts: SimulatedSystemOptions = {}, o: { instance?: boolean; load?: boolean; start?: boolean } = {}): Promise<SimulatedSystem> {
  const sim = new SimulatedSystem(opts);
  await sim.mountMultikernel();
  await sim.writeFile(`${M}/device_tree`, baseline([2, 4, 6], [memoryNode(0, 1024 * MiB)]));
  if (o.instance || o.load || o.start) {
    await sim.writeFile(`${M}/overlays/new`, dtbo([fragment('0', '/instances', [instanceCreate('web', { id: 1, cpus: [2], memoryBytes: 256 * MiB })])]));
  }
  if (o.load || o.start) {
    const fd = await sim.openImageBytes('vmlinux', fakeElfVmlinux());
    await sim.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: 'console=mktty0', flags: KEXEC_MULTIKERNEL | kexecMkId(1) | KEXEC_FILE_NO_INITRAMFS });
  }
  if (o.start) await sim.reboot(0x4d4b4c49, 1);
  return sim;
}

export async function lastTx(sim: SimulatedSystem): Promise<{ id: number; status: string }> {
  const ids = (await sim.readdir(`${M}/overlays`)).filter((n) => n.startsWith('tx_')).map((n) => Number(n.slice(3)));
  const id = Math.max(...ids);
  return { id, status: (await sim.readFile(`${M}/overlays/tx_${id}/status`)).toString().trim() };
}

export async function overlay(sim: SimulatedSystem, blob: Buffer): Promise<{ id: number; status: string }> {
  await sim.writeFile(`${M}/overlays/new`, blob);
  return lastTx(sim);
}

export async function status(sim: SimulatedSystem, name = 'web'): Promise<string> {
  return (await sim.readFile(`${M}/instances/${name}/status`)).toString().trim();
}
