/**
 * flock-like shared/exclusive locks between processes, built on plain node:fs so the simulator
 * works without the native addon: each holder announces itself with a file created O_EXCL that
 * holds its pid, then checks for conflicting holders and backs off. A holder whose process is gone
 * (crashed without releasing) is stale and its file is removed by the next contender, which is
 * what makes this robust where a bare O_EXCL lock file would stay stuck forever.
 *
 *   <dir>/<key>.x            the exclusive holder
 *   <dir>/<key>.s.<pid>.<n>  one file per shared holder
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { systemError } from '../../errors';

let serial = 0;
const POLL_MS = 3;

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `file` when its holder process no longer exists; true when the holder is alive. */
function live(file: string): boolean {
  try {
    const text = fs.readFileSync(file, 'utf8');
    // An empty file is a holder between open and write; it is given a second to finish.
    if (text === '' ? Date.now() - fs.statSync(file).mtimeMs < 1000 : alive(Number(text))) return true;
  } catch {
    return false; // released meanwhile, or not a holder file
  }
  fs.rmSync(file, { force: true });
  return false;
}

function createExcl(file: string): boolean {
  try {
    const fd = fs.openSync(file, 'wx', 0o600);
    fs.writeSync(fd, String(process.pid));
    fs.closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

export interface FileLockOptions {
  exclusive: boolean;
  wait: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** path reported in errors */
  errorPath: string;
}

export class FileLocks {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  private base(key: string): string {
    return path.join(this.dir, createHash('sha1').update(key).digest('hex').slice(0, 20));
  }

  /** One attempt; returns the file that now represents the hold, or undefined on conflict. */
  private tryOnce(key: string, exclusive: boolean): string | undefined {
    const base = this.base(key);
    const xfile = `${base}.x`;
    const shared = (): string[] =>
      fs.readdirSync(this.dir).filter((f) => f.startsWith(`${path.basename(base)}.s.`)).map((f) => path.join(this.dir, f));
    if (exclusive) {
      if (!createExcl(xfile)) {
        if (live(xfile)) return undefined;
        return this.tryOnce(key, exclusive);
      }
      if (shared().some(live)) {
        fs.rmSync(xfile, { force: true });
        return undefined;
      }
      return xfile;
    }
    const mine = `${base}.s.${process.pid}.${++serial}`;
    createExcl(mine);
    if (fs.existsSync(xfile) && live(xfile)) {
      fs.rmSync(mine, { force: true });
      return undefined;
    }
    return mine;
  }

  async acquire(key: string, o: FileLockOptions): Promise<() => void> {
    const started = Date.now();
    for (;;) {
      if (o.signal?.aborted) throw o.signal.reason;
      const file = this.tryOnce(key, o.exclusive);
      if (file !== undefined) return () => fs.rmSync(file, { force: true });
      if (!o.wait) throw systemError('EWOULDBLOCK', 'flock', o.errorPath);
      if (o.timeoutMs !== undefined && Date.now() - started >= o.timeoutMs) throw systemError('ETIMEDOUT', 'flock', o.errorPath);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}
