import t from 'tap';
import fc from 'fast-check';
import { decodeFdt, encodeFdt, findNode, getProperty, parseDts, printDts, readU32, readU64, readU64s } from '../../lib/fdt';
import { buildBaseline, encodeBaseline, type BaselineSpec } from '../../lib/model';

const GiB = 1n << 30n;

function valid(): BaselineSpec {
  return {
    cpus: [4, 5, 6, 7],
    memory: [{ size: 0x80000000n, numaNode: 0 }],
    devices: [
      { type: 'pci', name: 'nic0', pciId: '0000:00:04.0', vendorId: 0x8086, deviceId: 0x100e },
      { type: 'platform', name: 'plat0', deviceName: 'serial8250' },
    ],
    aliases: { eth0: '/resources/devices/nic0' },
  };
}

t.test('golden encodings of the baseline properties', async (t) => {
  const fdt = decodeFdt(encodeBaseline({ cpus: [4, 0x100000005], memory: [{ size: 2n * GiB, numaNode: 1 }, { size: 4096n }] }));
  const resources = findNode(fdt.root, '/resources')!;
  t.same(Buffer.from(getProperty(resources, 'cpus')!.value), Buffer.from('00000000000000040000000100000005', 'hex'), 'cpus: 8-byte big-endian cells');
  const mem0 = findNode(fdt.root, '/resources/memory@0')!;
  t.same(Buffer.from(getProperty(mem0, 'size')!.value), Buffer.from('0000000080000000', 'hex'), 'size: one u64');
  t.same(Buffer.from(getProperty(mem0, 'numa-node-id')!.value), Buffer.from('00000001', 'hex'), 'numa-node-id: one u32');
  const mem1 = findNode(fdt.root, '/resources/memory@1')!;
  t.equal(readU64(getProperty(mem1, 'size')!), 4096n);
  t.equal(getProperty(mem1, 'numa-node-id'), undefined, 'numa-node-id left out when not given');
  t.equal(getProperty(resources, 'memory-base'), undefined, 'never memory-base in a baseline');
  t.equal(getProperty(resources, 'memory-bytes'), undefined, 'never memory-bytes in a baseline');
  t.equal(findNode(fdt.root, '/instances'), undefined, 'never /instances');
  t.equal(findNode(fdt.root, '/resources/devices'), undefined, 'no devices node without devices');
  t.equal(findNode(fdt.root, '/aliases'), undefined, 'no aliases node without aliases');
  t.equal(printDts(fdt).includes('compatible = "multikernel-v1"'), true, 'default compatible');
});

t.test('devices, aliases and compatible are emitted as the kernel reads them', async (t) => {
  const spec = valid();
  spec.compatible = 'linux,multikernel-host';
  const fdt = decodeFdt(encodeBaseline(spec));
  const nic = findNode(fdt.root, '/resources/devices/nic0')!;
  t.equal(readU32(getProperty(nic, 'vendor-id')!), 0x8086);
  t.equal(readU32(getProperty(nic, 'device-id')!), 0x100e);
  t.match(printDts(fdt), /device-type = "pci";\s*pci-id = "0000:00:04.0";/);
  t.match(printDts(fdt), /plat0 \{\s*device-type = "platform";\s*device-name = "serial8250";/);
  t.match(printDts(fdt), /eth0 = "\/resources\/devices\/nic0";/);
  t.match(printDts(fdt), /compatible = "linux,multikernel-host";/);
  const acpi = decodeFdt(encodeBaseline({ ...valid(), devices: [{ type: 'platform', name: 'com1', acpiHid: 'PNP0501' }], aliases: {} }));
  t.match(printDts(acpi), /com1 \{\s*device-type = "platform";\s*acpi-hid = "PNP0501";/);
  t.equal(findNode(acpi.root, '/aliases'), undefined);
  const bare = decodeFdt(encodeBaseline({ ...valid(), devices: [{ type: 'platform', name: 'i8042' }], aliases: {} }));
  t.ok(findNode(bare.root, '/resources/devices/i8042'), 'a baseline platform device may rely on its node name');
});

t.test('the reference DTS example parses to exactly what buildBaseline produces', async (t) => {
  const text = `/dts-v1/;
/ {
    compatible = "multikernel-v1";          /* kerf writes "linux,multikernel-host"; not checked */
    resources {
        cpus = /bits/ 64 <4 5 6 7>;         /* physical CPU ids, u64 each */
        memory@0 {
            size = /bits/ 64 <0x80000000>;  /* bytes, page-aligned, non-zero */
            numa-node-id = <0>;             /* optional u32 */
        };
        devices {
            nic0 { device-type = "pci"; pci-id = "0000:00:04.0";
                   vendor-id = <0x8086>; device-id = <0x100e>; };
            plat0 { device-type = "platform"; device-name = "serial8250"; };
        };
    };
    aliases { eth0 = "/resources/devices/nic0"; };
};
`;
  const { fdt, plugin } = parseDts(text);
  t.equal(plugin, false);
  const built = buildBaseline(valid());
  t.equal(printDts(fdt), printDts(built));
  t.ok(encodeFdt(fdt).equals(encodeBaseline(valid())), 'byte-identical blobs');
});

const cases: [string, (s: BaselineSpec) => unknown, RegExp][] = [
  ['no CPU', (s) => (s.cpus = []), /baseline: cpus: must be a non-empty array/],
  ['cpus missing', (s) => ((s as Partial<BaselineSpec>).cpus = undefined), /baseline: cpus: must be a non-empty array/],
  ['boot CPU', (s) => (s.cpus = [3, 0]), /baseline: cpus\[1\]: CPU 0 is the boot CPU/],
  ['duplicate CPU', (s) => (s.cpus = [3, 4, 3]), /baseline: cpus\[2\]: CPU 3 is listed twice/],
  ['negative CPU', (s) => (s.cpus = [-1]), /baseline: cpus\[0\]: -1 is not a physical CPU id/],
  ['CPU id beyond 2^53', (s) => (s.cpus = [2 ** 53]), /cpus\[0\]: 9007199254740992 is not a physical CPU id/],
  ['fractional CPU', (s) => (s.cpus = [1.5]), /cpus\[0\]: 1.5 is not a physical CPU id/],
  ['no memory', (s) => (s.memory = []), /baseline: memory must list at least one/],
  ['too many memory nodes', (s) => (s.memory = Array.from({ length: 65 }, () => ({ size: 4096n }))), /65 entries; at most 64/],
  ['zero size', (s) => (s.memory = [{ size: 0n }]), /baseline: memory\[0\].size: 0n must be a non-zero multiple of 4096/],
  ['unaligned size', (s) => (s.memory = [{ size: 4097n }]), /memory\[0\].size: 4097n must be a non-zero multiple of 4096/],
  ['size as a number', (s) => (s.memory = [{ size: 4096 as unknown as bigint }]), /memory\[0\].size: 4096 must be/],
  ['size over u64', (s) => (s.memory = [{ size: 1n << 64n }]), /memory\[0\].size: 18446744073709551616n/],
  ['memory entry null', (s) => (s.memory = [null as unknown as { size: bigint }]), /memory\[0\].size: undefined must be/],
  ['NUMA node out of range', (s) => (s.memory = [{ size: 4096n, numaNode: 1024 }]), /memory\[0\].numaNode: 1024 is not a NUMA node id/],
  ['device name with a slash', (s) => (s.devices![0]!.name = 'nic/0'), /devices\[0\].name: "nic\/0" is not a valid device tree node name/],
  ['device name starting with a digit', (s) => (s.devices![0]!.name = '0nic'), /devices\[0\].name: "0nic" is not a valid/],
  ['device name too long', (s) => (s.devices![0]!.name = 'n'.repeat(32)), /devices\[0\].name: "n{32}" is not a valid/],
  ['duplicate device name', (s) => (s.devices![1]!.name = 'nic0'), /devices\[1\].name: "nic0" is used twice/],
  ['duplicate PCI function', (s) => s.devices!.push({ type: 'pci', name: 'nic1', pciId: '0000:00:04.0', vendorId: 1, deviceId: 2 }), /devices\[2\].pciId: "0000:00:04.0" is listed twice/],
  ['bad PCI address', (s) => ((s.devices![0] as { pciId: string }).pciId = '00:04.0'), /devices\[0\].pciId: "00:04.0" is not a PCI address/],
  ['PCI slot over 0x1f', (s) => ((s.devices![0] as { pciId: string }).pciId = '0000:00:20.0'), /is not a PCI address/],
  ['missing vendor id', (s) => delete (s.devices![0] as { vendorId?: number }).vendorId, /devices\[0\].vendorId: undefined is not a 16-bit PCI id/],
  ['negative vendor id', (s) => ((s.devices![0] as { vendorId: number }).vendorId = -1), /devices\[0\].vendorId: -1 is not a 16-bit/],
  ['device id over 16 bits', (s) => ((s.devices![0] as { deviceId: number }).deviceId = 0x10000), /devices\[0\].deviceId: 65536 is not a 16-bit/],
  ['unknown device type', (s) => ((s.devices![0] as { type: string }).type = 'usb'), /devices\[0\].type: "usb" must be 'pci' or 'platform'/],
  ['device not an object', (s) => (s.devices![0] = null as never), /devices\[0\]: must be a device object/],
  ['devices not an array', (s) => (s.devices = {} as never), /baseline: devices: must be an array/],
  ['platform device-name too long', (s) => ((s.devices![1] as { deviceName: string }).deviceName = 'x'.repeat(32)), /devices\[1\].deviceName: "x{32}" must be 1 to 31 printable/],
  ['acpi-hid too long', (s) => ((s.devices![1] as { acpiHid: string }).acpiHid = 'P'.repeat(16)), /devices\[1\].acpiHid: "P{16}" must be 1 to 15 printable/],
  ['empty compatible', (s) => (s.compatible = ''), /baseline: compatible: "" must be 1 to 255/],
  ['bad alias name', (s) => (s.aliases = { Eth0: '/resources/devices/nic0' }), /aliases.Eth0: "Eth0" is not a valid alias name/],
  ['alias to an unknown device', (s) => (s.aliases = { eth0: '/resources/devices/nic9' }), /aliases.eth0: "\/resources\/devices\/nic9" must be the path of a device of this baseline/],
  ['alias to a non-device path', (s) => (s.aliases = { eth0: '/resources' }), /aliases.eth0: "\/resources" must be the path/],
  ['alias value not a string', (s) => (s.aliases = { eth0: 5 as unknown as string }), /aliases.eth0: 5 must be the path/],
];

t.test('every validation rule rejects with a precise ERR_MK_INVALID_SPEC', async (t) => {
  t.doesNotThrow(() => encodeBaseline(valid()), 'the base spec is valid');
  for (const [name, mutate, message] of cases) {
    const spec = valid();
    mutate(spec);
    t.throws(() => buildBaseline(spec), { code: 'ERR_MK_INVALID_SPEC', message }, name);
  }
  t.throws(() => buildBaseline(null as unknown as BaselineSpec), { code: 'ERR_MK_INVALID_SPEC', message: /baseline: the spec must be an object/ });
});

t.test('a baseline over 1 MiB is refused', async (t) => {
  const devices = Array.from({ length: 12000 }, (_, i) => ({
    type: 'pci' as const,
    name: `n${i}`,
    pciId: `${(i >> 8).toString(16).padStart(4, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}:00.0`,
    vendorId: 1,
    deviceId: 2,
  }));
  t.throws(() => encodeBaseline({ cpus: [1], memory: [{ size: 4096n }], devices }), {
    code: 'ERR_MK_INVALID_SPEC',
    message: /device_tree takes at most 1048576 bytes in one write/,
  });
  t.ok(encodeBaseline({ cpus: [1], memory: [{ size: 4096n }], devices: devices.slice(0, 1000) }).length < 1048576);
});

t.test('random valid baselines survive build -> encode -> decode', async () => {
  const spec = fc.record({
    cpus: fc.uniqueArray(fc.integer({ min: 1, max: 2 ** 40 }), { minLength: 1, maxLength: 64 }),
    memory: fc.array(
      fc.record(
        { size: fc.bigInt({ min: 1n, max: 1n << 40n }).map((p) => p * 4096n), numaNode: fc.integer({ min: 0, max: 1023 }) },
        { requiredKeys: ['size'] },
      ),
      { minLength: 1, maxLength: 64 },
    ),
  });
  fc.assert(
    fc.property(spec, (s) => {
      const blob = encodeBaseline(s);
      const fdt = decodeFdt(blob);
      if (!encodeFdt(fdt).equals(blob)) return false;
      const resources = findNode(fdt.root, '/resources')!;
      const cpus = readU64s(getProperty(resources, 'cpus')!).map(Number);
      if (JSON.stringify(cpus) !== JSON.stringify(s.cpus)) return false;
      return s.memory.every((m, i) => {
        const n = findNode(fdt.root, `/resources/memory@${i.toString(16)}`)!;
        const numa = getProperty(n, 'numa-node-id');
        return readU64(getProperty(n, 'size')!) === m.size && (numa === undefined ? m.numaNode === undefined : readU32(numa) === m.numaNode);
      });
    }),
    { seed: 20261124, numRuns: 200 },
  );
});
