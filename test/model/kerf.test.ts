/**
 * What kerf writes (shared/fixtures/kerf, made by kerf's own generators) survives the model:
 * parse then build re-encodes every blob byte for byte (with libfdt's strings layout, which
 * kerf's pylibfdt writer uses); kerf's properties the kernel ignores or refuses are kept, and
 * kerf 0.1's formats are recognised with ERR_MK_OLD_KERF_FORMAT.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { encodeFdt, node, prop } from '../../lib/fdt';
import { buildBaseline, buildOverlay, encodeBaseline, encodeOverlay, OldKerfFormatError, parseBaseline, parseOverlay, type InstanceCreateOp } from '../../lib/model';

const DIR = join(__dirname, '..', '..', '..', 'shared', 'fixtures', 'kerf');

if (!existsSync(DIR)) {
  t.test('kerf fixtures', { skip: `the kerf fixtures are not at ${DIR} (CI lays shared/ beside the checkout as ../shared)` }, () => undefined);
} else {
  t.test('every kerf blob: parse, then encode, gives the same bytes', async (t) => {
    const files = readdirSync(DIR).filter((f) => /\.dtbo?$/.test(f));
    t.ok(files.length >= 9);
    for (const f of files) {
      const blob = readFileSync(join(DIR, f));
      if (f.endsWith('.dtb')) {
        const spec = parseBaseline(blob);
        t.same(encodeFdt(buildBaseline(spec), { strings: 'libfdt' }), blob, `${f}: byte for byte`);
        t.same(encodeBaseline(spec, { strings: 'libfdt' }), blob);
        continue;
      }
      const parsed = parseOverlay(blob);
      t.same(parsed.ignored, [], `${f}: nothing left out`);
      const options = { legacyDeviceNames: parsed.ops.some((o) => o.op === 'instance-create' && o.deviceNames !== undefined), strings: 'libfdt' as const };
      t.same(encodeFdt(buildOverlay(parsed.ops, options), { strings: 'libfdt' }), blob, `${f}: byte for byte`);
      t.same(encodeOverlay(parsed.ops, options), blob);
    }
  });

  t.test("what kerf meant, as the model reads it", async (t) => {
    const read = (f: string) => parseOverlay(readFileSync(join(DIR, f))).ops;
    t.same(parseBaseline(readFileSync(join(DIR, 'kerf-baseline.dtb'))), { cpus: [2, 4, 6, 8], memory: [{ size: 4n << 30n, numaNode: 0 }], compatible: 'linux,multikernel-host' });
    t.same(read('kerf-create.dtbo'), [{ op: 'instance-create', name: 'web', id: 1, cpus: [4, 6], memoryBytes: 512n << 20n, cpuAffinity: 'compact' }]);
    t.same(read('kerf-create-numa.dtbo'), [{ op: 'instance-create', name: 'webnuma', id: 3, cpus: [6], memoryBytes: 256n << 20n, numaNodes: [0], cpuAffinity: 'compact', memoryPolicy: 'local' }]);
    t.same(read('kerf-create-devices.dtbo'), [{ op: 'instance-create', name: 'webdev', id: 2, cpus: [4], memoryBytes: 256n << 20n, deviceNames: ['nic0'], cpuAffinity: 'compact' }]);
    t.same(read('kerf-update-cpu.dtbo'), [{ op: 'cpu-add', target: { instance: 'web' }, id: 8 }]);
    t.same(read('kerf-update-memory.dtbo'), [{ op: 'memory-add', target: { instance: 'web' }, base: 0x60000000n, size: 0x20000000n }]);
    t.same(read('kerf-update-memory-shrink.dtbo'), [{ op: 'memory-remove', target: { instance: 'webnuma' }, base: 0x48000000n, size: 0x8000000n }], 'a partial removal is expressible');
    t.same(read('kerf-update-devices.dtbo'), [{ op: 'device-add', target: { instance: 'webnuma' }, pciId: '0000:00:04.0' }]);
    t.same(read('kerf-delete.dtbo'), [{ op: 'instance-remove', name: 'web' }]);
  });
}

t.test('device-names: kept by parseOverlay, refused by encodeOverlay unless asked for', async (t) => {
  const op: InstanceCreateOp = { op: 'instance-create', name: 'webdev', cpus: [4], memoryBytes: 256n << 20n, deviceNames: ['nic0'] };
  t.throws(() => encodeOverlay([op]), { code: 'ERR_MK_INVALID_SPEC', message: /deviceNames: the kernel fails an instance-create that carries device-names with EINVAL \(dts.c mk_dt_parse_devices\)/ });
  const blob = encodeOverlay([op], { legacyDeviceNames: true });
  t.same(parseOverlay(blob).ops, [op]);
  t.throws(() => encodeOverlay([{ ...op, deviceNames: [] }], { legacyDeviceNames: true }), { message: /deviceNames: must be a non-empty array/ });
  t.throws(() => encodeOverlay([{ ...op, deviceNames: ['0bad'] }], { legacyDeviceNames: true }), { message: /deviceNames\[0\]/ });
  t.throws(() => encodeOverlay([{ ...op, deviceNames: undefined, cpuAffinity: '' }]), { message: /cpuAffinity/ });
  t.throws(() => encodeOverlay([{ ...op, deviceNames: undefined, memoryPolicy: 'x'.repeat(256) }]), { message: /memoryPolicy/ });
  const bare = encodeOverlay([{ op: 'instance-create', name: 'empty' }]);
  t.same(parseOverlay(bare).ops, [{ op: 'instance-create', name: 'empty' }], 'memory-bytes and cpus are optional');
});

t.test('properties and nodes the model does not carry are named in ignored', async (t) => {
  const blob = encodeFdt(
    node('', [prop.string('compatible', 'linux,multikernel-overlay')], [
      node('fragment@0', [prop.string('target-path', '/instances')], [
        node('__overlay__', [], [
          node('instance-create', [prop.string('instance-name', 'a'), prop.u32('extra', 1)], [
            node('resources', [prop.u64('memory-bytes', 4096), prop.u32('weird', 2)], [node('uring', [prop.u32('sq-entries', 8)])]),
            node('options', [prop.empty('enable-host-kcore')]),
          ]),
          node('instance-remove', [prop.string('instance-name', 'b'), prop.u32('extra', 1)]),
        ]),
      ]),
      node('fragment@1', [prop.string('target-path', '/instances/a')], [
        node('__overlay__', [], [node('memory-add', [], [node('memory@0', [prop.u64('reg', 0, 4096), prop.u32('mem-type', 2), prop.u32('odd', 1)])])]),
      ]),
    ]),
  );
  const parsed = parseOverlay(blob);
  t.same(parsed.ignored, [
    '/fragment@0/__overlay__/instance-create/extra',
    '/fragment@0/__overlay__/instance-create/resources/weird',
    '/fragment@0/__overlay__/instance-create/resources/uring',
    '/fragment@0/__overlay__/instance-create/options',
    '/fragment@0/__overlay__/instance-remove/extra',
    '/fragment@1/__overlay__/memory-add/memory@0/odd',
  ]);
  t.same(parsed.ops[2], { op: 'memory-add', target: { instance: 'a' }, base: 0n, size: 4096n, memType: 2 }, 'mem-type is read (overlay.c passes it on)');
  t.same(parseOverlay(encodeOverlay([parsed.ops[2]!])).ops, [parsed.ops[2]], 'and written back');
  t.throws(() => encodeOverlay([{ ...parsed.ops[2]!, memType: -1 } as never]), { message: /memType/ });
});

t.test("kerf 0.1's formats raise ERR_MK_OLD_KERF_FORMAT with what to do", async (t) => {
  // kerf 0.1 (tag v0.1.0): baseline with memory-base/memory-bytes on /resources
  const oldBaseline = encodeFdt(
    node('', [prop.string('compatible', 'linux,multikernel-host')], [node('resources', [prop.u64('memory-base', 0x100000000), prop.u64('memory-bytes', 1 << 30), prop.u64('cpus', 2, 4)])]),
  );
  const e = t.throws(() => parseBaseline(oldBaseline), { code: 'ERR_MK_OLD_KERF_FORMAT', name: 'OldKerfFormatError', message: /written by kerf 0\.1.*newer kerf \(0\.2 or later\) or with this package's encodeBaseline/ }) as unknown;
  t.ok(e instanceof OldKerfFormatError);
  t.same((e as OldKerfFormatError).details, { memoryBase: 0x100000000n, memoryBytes: 1n << 30n });
  // kerf 0.1: fragments without target-path, the op naming its instance with mk,instance
  const oldUpdate = encodeFdt(
    node('', [prop.string('compatible', 'linux,multikernel-overlay')], [
      node('fragment@0', [], [node('__overlay__', [], [node('cpu-add', [prop.string('mk,instance', 'web')], [node('cpu@8', [prop.u64('reg', 8)])])])]),
    ]),
  );
  t.throws(() => parseOverlay(oldUpdate), { code: 'ERR_MK_OLD_KERF_FORMAT', message: /\/fragment@0 has no target-path and names its instance with mk,instance: this overlay was written by kerf 0\.1/ });
  const oldCreate = encodeFdt(
    node('', [prop.string('compatible', 'linux,multikernel-overlay')], [
      node('fragment@0', [], [node('__overlay__', [], [node('instance-create', [prop.string('instance-name', 'web')], [node('resources', [prop.u64('memory-base', 0), prop.u64('memory-bytes', 1 << 29)])])])]),
    ]),
  );
  t.throws(() => parseOverlay(oldCreate), { code: 'ERR_MK_OLD_KERF_FORMAT', message: /\/fragment@0 has no target-path: this overlay was written by kerf 0\.1/, details: { fragment: 'fragment@0', ops: ['instance-create'] } });
  const bytesOnly = encodeFdt(node('', [], [node('resources', [prop.u64('memory-bytes', 1 << 30), prop.u64('cpus', 2)])]));
  t.throws(() => parseBaseline(bytesOnly), { code: 'ERR_MK_OLD_KERF_FORMAT', details: { memoryBase: undefined, memoryBytes: 1n << 30n } }, 'memory-bytes alone is kerf 0.1 too');
  const noPath = encodeFdt(node('', [], [node('fragment@0', [], [node('__overlay__', [], [node('other')])])]));
  t.throws(() => parseOverlay(noPath), { code: 'ERR_MK_INVALID_FDT' }, 'a fragment without target-path and without ops is just malformed');
  const noResources = encodeFdt(node('', [], [node('x')]));
  t.throws(() => parseBaseline(noResources), { code: 'ERR_MK_INVALID_FDT', message: /no \/resources node/ });
  const withDevices = encodeBaseline({ cpus: [2], memory: [{ size: 1n << 30n }], devices: [{ type: 'pci', name: 'nic0', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e }], aliases: { eth0: '/resources/devices/nic0' } });
  t.same(parseBaseline(withDevices), { cpus: [2], memory: [{ size: 1n << 30n }], devices: [{ type: 'pci', name: 'nic0', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e }], aliases: { eth0: '/resources/devices/nic0' }, compatible: 'multikernel-v1' });
});

t.test('what kerf writes beyond the kernel rules reads back without the fixtures: numa-node-id, cpu-affinity, memory-policy', async (t) => {
  const spec = { cpus: [2, 4], memory: [{ size: 1n << 30n, numaNode: 1 }, { size: 1n << 29n }] };
  t.same(parseBaseline(encodeBaseline(spec)), { ...spec, compatible: 'multikernel-v1' }, 'numa-node-id per memory@N, left out when absent');
  const op: InstanceCreateOp = { op: 'instance-create', name: 'webnuma', id: 3, cpus: [6], memoryBytes: 256n << 20n, numaNodes: [0], cpuAffinity: 'compact', memoryPolicy: 'local' };
  const parsed = parseOverlay(encodeOverlay([op], { strings: 'libfdt' }));
  t.same(parsed, { ops: [op], ignored: [] }, 'cpu-affinity and memory-policy are kept (no dts.c reads them)');
});
