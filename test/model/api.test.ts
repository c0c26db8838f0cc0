import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as model from '../../lib/model';

t.test('lib/model exports exactly the documented API', async (t) => {
  const values = Object.fromEntries(Object.keys(model).map((k) => [k, typeof (model as Record<string, unknown>)[k]]));
  t.same(values, {
    PAGE_SIZE: 'number',
    MAX_NUMA_NODE_ID: 'number',
    MAX_BASELINE_MEMORY_NODES: 'number',
    MAX_BASELINE_BYTES: 'number',
    MAX_PLATFORM_DEVICE_NAME: 'number',
    MAX_ACPI_HID: 'number',
    BASELINE_COMPATIBLE: 'string',
    buildBaseline: 'function',
    encodeBaseline: 'function',
    parseBaseline: 'function',
    ERR_MK_OLD_KERF_FORMAT: 'string',
    OldKerfFormatError: 'function',
    parsePool: 'function',
    parseInstance: 'function',
    OVERLAY_COMPATIBLE: 'string',
    MAX_OVERLAY_WRITE_BYTES: 'number',
    MAX_RESOURCES_DESCRIPTION: 'number',
    MAX_VIRTIO_DEVICES: 'number',
    MAX_VIRTIO_QUEUES: 'number',
    DEFAULT_VIRTIO_QUEUES: 'number',
    INSTANCE_OP_ORDER: 'object',
    POOL_OP_ORDER: 'object',
    buildOverlay: 'function',
    encodeOverlay: 'function',
    parseOverlay: 'function',
    overlayApplyOrder: 'function',
    checkInstanceName: 'function',
    targetPath: 'function',
  });
  t.equal(model.PAGE_SIZE, 4096);
  t.equal(model.MAX_OVERLAY_WRITE_BYTES, 4096, 'one kernfs write of overlays/new');
  t.equal(model.MAX_BASELINE_BYTES, 1 << 20, 'atomic_write_len of device_tree');
  t.equal(model.MAX_VIRTIO_DEVICES, 16);
  t.equal(model.MAX_VIRTIO_QUEUES, 8);
  t.equal(model.MAX_RESOURCES_DESCRIPTION, 255);
  t.equal(model.MAX_PLATFORM_DEVICE_NAME, 31);
  t.equal(model.MAX_ACPI_HID, 15);
  t.equal(model.MAX_NUMA_NODE_ID, 1023);
  t.equal(model.MAX_BASELINE_MEMORY_NODES, 64);
  t.equal(model.BASELINE_COMPATIBLE, 'multikernel-v1');
  t.equal(model.OVERLAY_COMPATIBLE, 'linux,multikernel-overlay');
  t.same(model.INSTANCE_OP_ORDER, ['instance-create', 'memory-remove', 'memory-add', 'cpu-remove', 'cpu-add', 'device-remove', 'device-add', 'instance-remove']);
  t.same(model.POOL_OP_ORDER, ['cpu-remove', 'device-remove', 'memory-remove', 'memory-add', 'cpu-add', 'device-add']);
  t.equal(model.checkInstanceName('where', 'web-1'), 'web-1');
  t.throws(() => model.checkInstanceName('where', 'web/1'), { code: 'ERR_MK_INVALID_SPEC', message: /^where: "web\/1" is not a valid instance name/ });
  t.equal(model.targetPath({ op: 'instance-remove', name: 'x' }), '/instances');
  t.equal(model.targetPath({ op: 'cpu-add', target: 'pool', id: 1 }), '/resources');
  t.equal(model.targetPath({ op: 'cpu-add', target: { instance: 'x' }, id: 1 }), '/instances/x');
});

t.test('dtc accepts the encoded blobs', async (t) => {
  const which = spawnSync('dtc', ['--version'], { encoding: 'utf8' });
  if (which.error !== undefined || which.status !== 0) {
    t.plan(0, `dtc is not installed (${which.error?.message ?? `exit ${which.status}`}): install the device-tree-compiler package to run this check`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'mk-model-dtc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const blobs: [string, Buffer][] = [
    [
      'baseline',
      model.encodeBaseline({
        cpus: [4, 5],
        memory: [{ size: 1n << 30n, numaNode: 0 }],
        devices: [
          { type: 'pci', name: 'nic0', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e },
          { type: 'platform', name: 'com1', acpiHid: 'PNP0501' },
        ],
        aliases: { eth0: '/resources/devices/nic0' },
      }),
    ],
    [
      'overlay',
      model.encodeOverlay(
        [
          { op: 'instance-create', name: 'web', id: 2, memoryBytes: 1n << 29n, cpus: [6, 7], virtio: [{ name: 'net0', deviceId: 1 }] },
          { op: 'cpu-add', target: 'pool', id: 8 },
          { op: 'memory-remove', target: 'pool', base: 1n << 32n, size: 1n << 28n },
          { op: 'device-add', target: { instance: 'web' }, pciId: '0000:00:05.0', driver: 'vfio-pci' },
        ],
        { resources: 'web + pool' },
      ),
    ],
  ];
  for (const [name, blob] of blobs) {
    const file = join(dir, `${name}.dtb`);
    writeFileSync(file, blob);
    const r = spawnSync('dtc', ['-I', 'dtb', '-O', 'dts', '-o', '-', file], { encoding: 'utf8' });
    t.equal(r.status, 0, `dtc decodes the ${name} (warnings about the kernel's own reg layouts are expected)`, { stderr: r.stderr });
    t.match(r.stdout, name === 'baseline' ? /cpus = <0x00 0x04 0x00 0x05>;/ : /target-path = "\/instances";/);
  }
});
