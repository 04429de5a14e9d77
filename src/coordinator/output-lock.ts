/**
 * A run owns its output: a lock file in its checkpoint folder (`.trainpool.lock`) naming the process that
 * holds it, so a second run on the same output is refused at once with one line naming the first, instead
 * of both renaming their files over each other's.
 *
 * Node cannot flock, so the lock is a file made with link(2), which fails when the name exists: creation
 * is atomic. A lock whose process is gone (a SIGKILL, a power cut) is stale and taken over; the process is
 * identified by its pid *and* its start time in /proc (a pid the kernel has handed to someone else since is
 * not the holder). Two runs taking over the same stale lock at the same instant both write their own and
 * read it back; the one that finds the other's gives up; `assertHeld()` is checked before every checkpoint,
 * so a run that lost its lock stops there instead of mixing its files with the other's.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TrainpoolError } from '../util/errors.js';

export const LOCK_NAME = '.trainpool.lock';

export interface LockHolder {
  pid: number;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); null where /proc is absent. */
  startTicks: number | null;
  host: string;
  /** ISO time the lock was taken. */
  since: string;
}

/** Field 22 of /proc/<pid>/stat, after the command name (which may hold spaces and parentheses). */
export function processStartTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return null;
  }
}

/** Whether `holder`'s process still runs (on this host: another host's lock on shared storage counts as live). */
export function holderAlive(holder: LockHolder): boolean {
  if (holder.host !== os.hostname()) return true;
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const ticks = processStartTicks(holder.pid);
  return holder.startTicks === null || ticks === null || ticks === holder.startTicks;
}

export function describeHolder(h: LockHolder): string {
  return `pid ${h.pid}${h.host === os.hostname() ? '' : ` on ${h.host}`}, since ${h.since}`;
}

export class OutputLock {
  private released = false;

  private constructor(
    readonly file: string,
    private readonly mine: string,
  ) {}

  /**
   * Takes the lock of the folder `dir` (which must exist), or throws OUTPUT_IN_USE naming the live
   * holder; `what` names the output in that message.
   */
  static acquire(dir: string, what: string): OutputLock {
    const file = path.join(dir, LOCK_NAME);
    const me: LockHolder = { pid: process.pid, startTicks: processStartTicks(process.pid), host: os.hostname(), since: new Date().toISOString() };
    const mine = JSON.stringify(me);
    const tmp = path.join(dir, `${LOCK_NAME}.${process.pid}.${randomBytes(4).toString('hex')}`);
    writeFileSync(tmp, mine);
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          linkSync(tmp, file);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
          const holder = readHolder(file);
          if (holder && holderAlive(holder)) throw inUse(what, holder);
          // Stale (its process is gone) or unreadable (a crash while it was written): take it over.
          rmSync(file, { force: true });
          continue;
        }
        const lock = new OutputLock(file, mine);
        if (lock.held()) return lock;
        // Another run took over the same stale lock at the same moment and its file replaced ours.
        const other = readHolder(file);
        throw inUse(what, other ?? me);
      }
      throw new TrainpoolError('OUTPUT_IN_USE', `${what} is locked by ${file}, which kept coming back; is another run starting there?`);
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /** Whether the lock file is still this run's. */
  held(): boolean {
    if (this.released) return false;
    try {
      return readFileSync(this.file, 'utf8') === this.mine;
    } catch {
      return false;
    }
  }

  /**
   * Throws OUTPUT when the lock is no longer this run's (checked before each checkpoint): another run took
   * it over, or the folder was removed under the run.
   */
  assertHeld(what: string): void {
    if (this.held()) return;
    const other = readHolder(this.file);
    if (!other && !existsSync(path.dirname(this.file))) {
      throw new TrainpoolError('OUTPUT', `the checkpoint folder ${path.dirname(this.file)} was removed during the run; stopping without writing there`);
    }
    throw new TrainpoolError(
      'OUTPUT',
      `${what} is no longer this run's: ${other ? `${this.file} now names ${describeHolder(other)}` : `${this.file} was removed`}; stopping without writing there`,
    );
  }

  /** Removes the lock file if it is still this run's. Never throws. */
  release(): void {
    if (this.released) return;
    try {
      if (this.held()) rmSync(this.file, { force: true });
    } catch {
      // A folder removed under us: nothing to release.
    }
    this.released = true;
  }
}

function readHolder(file: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(file, 'utf8')) as LockHolder;
    return Number.isInteger(h.pid) && typeof h.host === 'string' ? h : null;
  } catch {
    return null;
  }
}

function inUse(what: string, holder: LockHolder): TrainpoolError {
  return new TrainpoolError('OUTPUT_IN_USE', `${what} is in use by another run (${describeHolder(holder)}); wait for it to finish or choose another --output`);
}
