/** Runs every benchmark: `npm run bench`. */
import { run as fdt } from './fdt';
import { run as startup } from './startup';
import { run as watch } from './watch';

const benches: [string, () => void | Promise<void>][] = [
  ['fdt', fdt],
  ['watch', watch],
  ['startup', startup],
];
void (async () => {
  for (const [name, run] of benches) {
    console.log(`== ${name}`);
    await run();
  }
})();
