// CPU selection (lib/select.ts) and byte sizes (lib/units.ts): the pure parts of the lifecycle layer.
import t from 'tap';
import { checkCpuRequest, selectCpus, type CpuCandidate } from '../../lib/select';
import { formatBytes, parseBytes } from '../../lib/units';

// two packages' worth: cores "0:0".."0:3", SMT pairs, nodes 0 and 1
const all: CpuCandidate[] = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => ({ physicalId: n * 2, logical: n, node: n < 4 ? 0 : 1, core: `0:${n >> 1}` }));
const candidates = all.filter((c) => c.logical !== 0).reverse();

t.test('counts, nodes, whole cores and explicit ids', async (t) => {
  t.same(selectCpus('cpus', 2, candidates, all), [14, 12], 'a count takes the candidates in their order');
  t.same(selectCpus('cpus', { count: 2, node: 0 }, candidates, all), [6, 4]);
  t.same(selectCpus('cpus', { cores: 2 }, candidates, all), [14, 12, 10, 8], 'two whole cores: both siblings of each');
  t.same(selectCpus('cpus', { cores: 1, node: 0 }, candidates, all), [6, 4], 'core 0:0 is not whole (CPU 0 is not a candidate)');
  t.same(selectCpus('cpus', { physical: [4, 2] }, candidates, all), [4, 2]);
  t.same(selectCpus('cpus', { logical: [3, 1] }, candidates, all), [6, 2], 'logical numbers map to physical ids');
  t.same(selectCpus('cpus', 1, [{ physicalId: 9, core: undefined }]), [9], 'all defaults to the candidates');
  t.same(selectCpus('cpus', { cores: 1 }, [{ physicalId: 9 }, { physicalId: 11, core: '0:5' }]), [11], 'CPUs of unknown core never make a core');
});

t.test('shortages are ERR_MK_RESOURCES with what is available', async (t) => {
  t.throws(() => selectCpus('cpus', 8, candidates, all), { code: 'ERR_MK_RESOURCES', message: /8 CPUs wanted, 7 available/ });
  t.throws(() => selectCpus('cpus', { count: 4, node: 0 }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /on node 0, 3 available/ });
  t.throws(() => selectCpus('cpus', { cores: 2, node: 0 }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /2 whole cores wanted on node 0, 1 available/ });
  t.throws(() => selectCpus('cpus', { cores: 5 }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /5 whole cores wanted, 3 available/ });
  t.throws(() => selectCpus('cpus', { physical: [0] }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /CPU 0 \(physical\) is not available/ });
  t.throws(() => selectCpus('cpus', { physical: [0, 99] }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /CPU 0, 99 \(physical\) are not available/ });
  t.throws(() => selectCpus('cpus', { logical: [0] }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /CPU 0 boots the host/ }, 'CPU 0 is the boot CPU');
  t.throws(() => selectCpus('cpus', { logical: [42] }, candidates, all), { code: 'ERR_MK_RESOURCES', message: /no CPU 42 \(logical\)$/ });
});

t.test('malformed requests are ERR_MK_INVALID_SPEC before anything is read', async (t) => {
  for (const bad of [0, -1, 1.5, null, 'two', {}, { count: 1, cores: 1 }, { count: 0 }, { cores: 'x' }, { physical: [] }, { physical: [1, 1] }, { physical: [-1] }, { logical: 'x' }, { count: 1, node: -1 }, { physical: [1], node: 0 }]) {
    t.throws(() => checkCpuRequest('cpus', bad), { code: 'ERR_MK_INVALID_SPEC' }, JSON.stringify(bad));
  }
  t.equal(checkCpuRequest('cpus', 3), 3);
});

t.test('parseBytes and formatBytes', async (t) => {
  t.equal(parseBytes(4096n), 4096n);
  t.equal(parseBytes(4096), 4096n);
  t.equal(parseBytes('512M'), 512n << 20n);
  t.equal(parseBytes(' 2g '), 2n << 30n);
  t.equal(parseBytes('1TiB'), 1n << 40n);
  t.equal(parseBytes('64KB'), 64n << 10n);
  t.equal(parseBytes('123'), 123n);
  for (const bad of ['', '1.5G', '-1', '2X', 0, 0n, 1.5, '0M']) t.throws(() => parseBytes(bad as string, 'memory'), RangeError, String(bad));
  t.equal(formatBytes(512n << 20n), '512 MiB');
  t.equal(formatBytes(3n << 40n), '3 TiB');
  t.equal(formatBytes(1536n << 20n), '1536 MiB');
  t.equal(formatBytes(2048n), '2 KiB');
  t.equal(formatBytes(100n), '100 bytes');
});
