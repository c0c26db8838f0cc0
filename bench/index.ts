/** Runs every benchmark: `npm run bench`. */
import { run as fdt } from './fdt';

const benches: [string, () => void][] = [['fdt', fdt]];
for (const [name, run] of benches) {
  console.log(`== ${name}`);
  run();
}
