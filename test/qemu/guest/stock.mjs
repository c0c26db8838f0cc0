// Runs inside a stock Debian kernel (no multikernel support) under QEMU: real system calls
// through the native binding and the LinuxSystem adapter. One RESULT line per check.
import { readFileSync } from 'node:fs';
import { assert, check, emit, finish, lib, rejects, run, sleep, spawnUntil, ROOT } from './lib.mjs';

const KERNEL = process.env.MKQEMU_KERNEL_IMAGE ?? '/boot/vmlinuz';
const HELPER = '/usr/local/bin/mkhelper';

const { loadBinding } = lib('binding');
const { LinuxSystem } = lib('system/linux/index');
const { explainNoSupport, probeMultikernelSupport } = lib('support');
const uapi = lib('uapi');

const sys = new LinuxSystem();
const kexecLoaded = () => readFileSync('/sys/kernel/kexec_loaded', 'utf8').trim();

await check('addon-loads', async () => {
  const b = loadBinding();
  assert(b.constants.KEXEC_MULTIKERNEL === uapi.KEXEC_MULTIKERNEL, 'KEXEC_MULTIKERNEL constant matches lib/uapi');
  return { release: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim() };
});

await check('support-probe-stock', async () => {
  const report = await probeMultikernelSupport(sys);
  assert(report.supported === false, `stock kernel reported as supported: ${JSON.stringify(report)}`);
  assert(report.filesystemRegistered === false && report.mountPoint === false && report.kimage === false, JSON.stringify(report));
  return { findings: report.findings };
});

// -- kexec_file_load: a real plain load and unload of the guest's own kernel (static helper) ----
await check('kexec-plain-load-unload', async () => {
  assert(kexecLoaded() === '0', 'nothing loaded at start');
  const load = await run(HELPER, ['kexec-load', KERNEL, 'console=ttyS0 quiet']);
  assert(load.code === 0 && load.stdout.includes('OK'), `load: ${JSON.stringify(load)}`);
  const during = kexecLoaded();
  const unload = await run(HELPER, ['kexec-unload']);
  assert(unload.code === 0, `unload: ${JSON.stringify(unload)}`);
  const after = kexecLoaded();
  assert(during === '1' && after === '0', `kexec_loaded ${during} after load, ${after} after unload`);
  return { loadedAfterLoad: during, loadedAfterUnload: after };
});

// Debian's arm64 kernel is built without CONFIG_KEXEC_FILE: the syscall itself is ENOSYS there.
await check('kexec-file-not-built-enosys', async () => {
  const plain = await run(HELPER, ['kexec-load', KERNEL, 'console=ttyAMA0']);
  assert(plain.stdout.startsWith('ERRNO ENOSYS'), `plain kexec_file_load: ${JSON.stringify(plain)}`);
  const fd = await sys.openImage(KERNEL);
  let err;
  try {
    const flags = uapi.KEXEC_MULTIKERNEL | uapi.kexecMkId(1) | uapi.KEXEC_FILE_NO_INITRAMFS;
    err = await rejects(explainNoSupport(sys, 'kexec_file_load with KEXEC_MULTIKERNEL', () => sys.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: 'x', flags })), 'multikernel load');
  } finally {
    await sys.closeImage(fd);
  }
  // a kernel without kexec_file_load cannot host instances: one ERR_MK_NO_SUPPORT, ENOSYS as the cause
  assert(err.code === 'ERR_MK_NO_SUPPORT' && err.cause?.code === 'ENOSYS' && err.cause?.syscall === 'kexec_file_load', `multikernel load: ${err.code} ${err.message}`);
  return { plain: plain.stdout.trim(), library: err.code, message: err.message };
});

// -- multikernel requests on a stock kernel: EINVAL/ENOENT surface as ERR_MK_NO_SUPPORT -------
function expectNoSupport(err, errno, operation) {
  assert(err?.code === 'ERR_MK_NO_SUPPORT', `code ${err?.code}: ${err?.message}`);
  assert(err.cause?.code === errno, `cause ${err.cause?.code}, expected ${errno}`);
  assert(err.message.includes(operation), `message names the operation: ${err.message}`);
  assert(err.message.includes('/sys/fs/multikernel is missing') && err.message.includes('/proc/filesystems'), `message says what was probed: ${err.message}`);
  return { message: err.message, errno: err.cause.code };
}

await check('kexec-multikernel-load-no-support', async () => {
  const fd = await sys.openImage(KERNEL);
  try {
    const flags = uapi.KEXEC_MULTIKERNEL | uapi.kexecMkId(1) | uapi.KEXEC_FILE_NO_INITRAMFS;
    const op = 'kexec_file_load with KEXEC_MULTIKERNEL';
    const err = await rejects(explainNoSupport(sys, op, () => sys.kexecFileLoad({ kernelFd: fd, initrdFd: -1, cmdline: 'console=mktty0', flags })), 'multikernel load');
    assert(kexecLoaded() === '0', 'nothing got loaded');
    return { flags: `0x${flags.toString(16)}`, ...expectNoSupport(err, 'EINVAL', op) };
  } finally {
    await sys.closeImage(fd);
  }
});

await check('kexec-multikernel-unload-no-support', async () => {
  const op = 'kexec_file_load unload with KEXEC_MULTIKERNEL';
  const flags = uapi.KEXEC_FILE_UNLOAD | uapi.KEXEC_MULTIKERNEL | uapi.kexecMkId(1);
  const err = await rejects(explainNoSupport(sys, op, () => sys.kexecFileLoad({ kernelFd: -1, initrdFd: -1, cmdline: '', flags })), 'multikernel unload');
  return expectNoSupport(err, 'EINVAL', op);
});

for (const [name, cmd] of [
  ['start', uapi.LINUX_REBOOT_CMD_MULTIKERNEL],
  ['halt', uapi.LINUX_REBOOT_CMD_MULTIKERNEL_HALT],
  ['halt-force', uapi.LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE],
]) {
  await check(`reboot-${name}-no-support`, async () => {
    const op = `reboot(0x${cmd.toString(16)})`;
    const err = await rejects(explainNoSupport(sys, op, () => sys.reboot(cmd, 1)), op);
    return expectNoSupport(err, 'EINVAL', op);
  });
}

await check('kernfs-missing-no-support', async () => {
  const op = 'readdir /sys/fs/multikernel';
  const err = await rejects(explainNoSupport(sys, op, () => sys.readdir(uapi.MULTIKERNEL_MOUNT_POINT)), op);
  return expectNoSupport(err, 'ENOENT', op);
});

await check('mount-multikernel-no-support', async () => {
  // the mount point itself is created by the multikernel code, so a stock kernel says ENOENT
  const op = 'mount -t multikernel';
  const err = await rejects(explainNoSupport(sys, op, () => sys.mountMultikernel()), op);
  return expectNoSupport(err, 'ENOENT', op);
});

await check('mount-unknown-fstype-enodev', async () => {
  // with a mount point that exists, the kernel's answer for the unknown type is ENODEV
  await run('/bin/mkdir', ['-p', '/tmp/mk-mnt']);
  const busybox = await run('/bin/mount', ['-t', 'multikernel', 'none', '/tmp/mk-mnt']);
  assert(busybox.code !== 0 && /No such device/.test(busybox.stderr), `busybox mount: ${JSON.stringify(busybox)}`);
  // and through the addon: put a tmpfs over /sys/fs so that /sys/fs/multikernel can exist (guest only)
  const mnt = await run('/bin/sh', ['-c', 'mount -t tmpfs tmpfs /sys/fs && mkdir /sys/fs/multikernel']);
  assert(mnt.code === 0, `tmpfs over /sys/fs: ${JSON.stringify(mnt)}`);
  let raw;
  try {
    loadBinding().mountMultikernel();
  } catch (e) {
    raw = e;
  } finally {
    await run('/bin/umount', ['/sys/fs']);
  }
  assert(raw?.code === 'ENODEV' && raw.syscall === 'mount', `addon mount: ${raw?.code} ${raw?.message}`);
  return { busybox: busybox.stderr.trim(), addon: raw.message };
});

// -- EPERM without CAP_SYS_BOOT (capsh drops it from the bounding set; guest only) ------------
await check('eperm-without-cap-sys-boot', async () => {
  const script = `${ROOT}/test/qemu/guest/eperm.mjs`;
  const r = await run('/usr/sbin/capsh', ['--drop=cap_sys_boot', '--shell=/bin/sh', '--', '-c', `${HELPER} kexec-load ${KERNEL} x; node ${script}`]);
  const lines = r.stdout.split('\n');
  assert(lines.some((l) => l.startsWith('ERRNO EPERM')), `plain kexec_file_load without CAP_SYS_BOOT: ${r.stdout}${r.stderr}`);
  const res = JSON.parse(lines.find((l) => l.startsWith('EPERM-RESULT '))?.slice('EPERM-RESULT '.length) ?? 'null');
  assert(res !== null, `no EPERM-RESULT line: ${r.stdout}${r.stderr}`);
  for (const [what, code] of Object.entries(res)) assert(code === 'EPERM', `${what} gave ${code}`);
  return { codes: res };
});

// -- CPU topology and hotplug through the adapter -----------------------------------------------
const countProcessors = async () => (await sys.readFile('/proc/cpuinfo')).toString().split('\n').filter((l) => /^processor\s*:/.test(l)).length;
const onlineList = async () => (await sys.readFile('/sys/devices/system/cpu/online')).toString().trim();

await check('cpu-topology', async () => {
  const expected = Number(process.env.MKQEMU_CPUS ?? '4');
  const processors = await countProcessors();
  const online = await onlineList();
  const cpus = (await sys.readdir('/sys/devices/system/cpu')).filter((n) => /^cpu\d+$/.test(n)).sort();
  assert(processors === expected, `/proc/cpuinfo lists ${processors} processors`);
  assert(online === `0-${expected - 1}`, `online ${online}`);
  assert(cpus.length === expected, `sysfs cpus ${cpus}`);
  const st = await sys.stat(`/sys/devices/system/cpu/cpu${expected - 1}/online`);
  assert(st.type === 'file', `online file type ${st.type}`);
  return { processors, online, cpus };
});

await check('host-open-no-support', async () => {
  const { Host } = lib('host');
  const err = await Host.open({ system: sys }).then(() => undefined, (e) => e);
  assert(err?.code === 'ERR_MK_NO_SUPPORT', `Host.open: ${err?.code ?? 'resolved'}`);
  assert(!(await sys.readFile('/proc/mounts')).toString().includes('multikernel'), 'nothing was mounted');
  return { message: err.message.slice(0, 120) };
});

await check('topology-read', async () => {
  const { readTopology } = lib('topology');
  const expected = Number(process.env.MKQEMU_CPUS ?? '4');
  const topo = await readTopology(sys);
  const arch = process.arch === 'arm64' ? 'arm64' : 'x86_64';
  assert(topo.arch === arch, `arch ${topo.arch}`);
  assert(topo.cpus.length === expected, `${topo.cpus.length} CPUs`);
  assert(topo.cpus.filter((c) => c.boot).map((c) => c.cpu).join() === '0', 'CPU 0 is the boot CPU');
  const ids = topo.cpus.map((c) => c.physicalId);
  assert(new Set(ids).size === ids.length && ids.every((id) => id >= 0), `physical ids ${ids}`);
  assert(topo.nodes.length >= 1 && topo.nodes.every((n) => n.memoryBytes > 0n), 'nodes with memory');
  return { arch: topo.arch, physicalIds: ids, nodes: topo.nodes.length, smt: topo.smt, notes: topo.notes };
});

await check('cpu-offline-online', async () => {
  const last = Number(process.env.MKQEMU_CPUS ?? '4') - 1;
  const file = `/sys/devices/system/cpu/cpu${last}/online`;
  const t0 = Date.now();
  const n = await sys.writeFile(file, Buffer.from('0'));
  assert(n === 1, `writeFile count ${n}`);
  const offState = (await sys.readFile(file)).toString().trim();
  const offList = await onlineList();
  const offCount = await countProcessors();
  const offMs = Date.now() - t0;
  await sys.writeFile(file, Buffer.from('1'));
  const onState = (await sys.readFile(file)).toString().trim();
  const onList = await onlineList();
  const onCount = await countProcessors();
  assert(offState === '0' && offList === (last === 1 ? '0' : `0-${last - 1}`) && offCount === last, `offline: ${offState} ${offList} ${offCount}`);
  assert(onState === '1' && onList === `0-${last}` && onCount === last + 1, `online again: ${onState} ${onList} ${onCount}`);
  return { offList, onList, offMs, roundTripMs: Date.now() - t0 };
});

// -- flock across processes ----------------------------------------------------------------------
await check('flock-across-processes', async () => {
  const path = '/tmp/mk-flock-test.lock';
  const held = await sys.lock(path, { exclusive: true });
  const child = `
    const { LinuxSystem } = require(${JSON.stringify(`${ROOT}/dist/system/linux/index.js`)});
    const sys = new LinuxSystem();
    (async () => {
      try { await sys.lock(${JSON.stringify(path)}, { exclusive: true, wait: false }); console.log('NB taken'); }
      catch (e) { console.log('NB ' + e.code); }
      try { await sys.lock(${JSON.stringify(path)}, { exclusive: true, timeoutMs: 200 }); console.log('TIMEOUT taken'); }
      catch (e) { console.log('TIMEOUT ' + e.code); }
      console.log('WAITING');
      const t0 = Date.now();
      const h = await sys.lock(${JSON.stringify(path)}, { exclusive: true, timeoutMs: 20000 });
      console.log('TAKEN ' + (Date.now() - t0));
      await h.release();
    })();`;
  const p = spawnUntil(process.execPath, ['-e', child], /WAITING/);
  await p.ready;
  await sleep(300);
  await held.release();
  const code = await p.exited;
  const out = p.output();
  assert(code === 0, `child exit ${code}: ${out}`);
  assert(/NB EWOULDBLOCK|NB EAGAIN/.test(out), `non-blocking attempt: ${out}`);
  assert(/TIMEOUT ETIMEDOUT/.test(out), `timed wait: ${out}`);
  const waited = Number(/TAKEN (\d+)/.exec(out)?.[1]);
  assert(waited >= 200, `the child got the lock only after the release (${waited} ms)`);
  // shared locks coexist
  const a = await sys.lock(path, { exclusive: false });
  const b = await sys.lock(path, { exclusive: false, wait: false });
  await a.release();
  await b.release();
  return { child: out.trim().split('\n'), waitedMs: waited };
});

// -- sd_notify to a datagram receiver (static helper; busybox has no unix-dgram listener) -------
await check('sd-notify', async () => {
  const results = {};
  for (const addr of ['/run/mk-notify.sock', '@mk-notify-abstract']) {
    const recv = spawnUntil('/usr/local/bin/mkhelper', ['notify-recv', addr, '1'], /READY/);
    await recv.ready;
    process.env.NOTIFY_SOCKET = addr;
    const sent = await sys.notify('READY=1\nSTATUS=qemu lane');
    const code = await recv.exited;
    const got = recv.output();
    assert(sent === true && code === 0 && got.includes('DGRAM READY=1 STATUS=qemu lane'), `${addr}: sent ${sent}, receiver ${code}: ${got}`);
    results[addr] = got.trim().split('\n').pop();
  }
  delete process.env.NOTIFY_SOCKET;
  const unset = await sys.notify('READY=1');
  assert(unset === false, 'notify without NOTIFY_SOCKET resolves false');
  return { results };
});

emit('stock-script-complete', true);
finish();
