/**
 * The end of a worker script that tests start as a process of its own (compiled by
 * compile-workers.ts): exit 0 when `main` resolves, print the error's stack and exit 1 when it
 * rejects. Exiting explicitly ends the process even when a handle (a watcher, a timer of the
 * library) is still open, so a test waiting for the exit never waits on the worker's clean-up.
 */
export function runWorker(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
