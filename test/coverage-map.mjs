// tap's coverage check applies to the library only: every test run is measured
// against the lib/ files it loads. Tests, scripts and benchmarks are not counted.
export default function coverageMap(testFile) {
  if (testFile.startsWith('test/qemu/')) return null;
  return ['lib/**/*.ts'];
}
