/**
 * Reads the folder scripts/qemu/fetch-kernel.sh fills (vmlinuz, busybox, modules/order, kernel.env).
 */
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { MultikernelError } from '../errors';

export interface KernelCache {
  dir: string;
  kernel: string;
  busybox: string;
  /** module files in load order */
  modules: string[];
  /** KERNEL_PACKAGE, KERNEL_RELEASE, ... from kernel.env */
  info: Record<string, string>;
}

export async function readKernelCache(dir: string): Promise<KernelCache> {
  let env: string;
  let order: string;
  try {
    env = await readFile(path.join(dir, 'kernel.env'), 'utf8');
    order = await readFile(path.join(dir, 'modules', 'order'), 'utf8');
  } catch (e) {
    throw new MultikernelError('ERR_MK_QEMU', `${dir} holds no fetched kernel; run scripts/qemu/fetch-kernel.sh first`, { cause: e, details: { reason: 'no-kernel-cache', dir } });
  }
  const info: Record<string, string> = {};
  for (const line of env.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) info[line.slice(0, eq)] = line.slice(eq + 1);
  }
  const modules = order.split('\n').filter((m) => m !== '').map((m) => path.join(dir, 'modules', `${m}.ko`));
  return { dir, kernel: path.join(dir, 'vmlinuz'), busybox: path.join(dir, 'busybox'), modules, info };
}
