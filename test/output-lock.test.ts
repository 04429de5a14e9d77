/** coordinator/output-lock.ts: one run per output; a lock whose process is gone is taken over. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCK_NAME, OutputLock, processStartTicks } from '../src/coordinator/output-lock.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'trainpool-lock-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fresh = (name: string) => {
  const d = path.join(root, name);
  rmSync(d, { recursive: true, force: true });
  return mkdtempSync(`${d}-`);
};
const holder = (pid: number, startTicks: number | null) => JSON.stringify({ pid, startTicks, host: os.hostname(), since: '2026-12-02T00:00:00.000Z' });

describe('OutputLock', () => {
  it('is held by the run that took it and refused to another while that one lives', () => {
    const d = fresh('live');
    const lock = OutputLock.acquire(d, 'out');
    expect(lock.held()).toBe(true);
    expect(JSON.parse(readFileSync(path.join(d, LOCK_NAME), 'utf8'))).toMatchObject({ pid: process.pid, startTicks: processStartTicks(process.pid) });
    expect(() => OutputLock.acquire(d, 'out')).toThrow(new RegExp(`^out is in use by another run \\(pid ${process.pid}, since `));
    lock.release();
    expect(existsSync(path.join(d, LOCK_NAME))).toBe(false);
    OutputLock.acquire(d, 'out').release();
  });

  it('takes over the lock of a process that has exited', () => {
    const d = fresh('dead');
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    writeFileSync(path.join(d, LOCK_NAME), holder(gone, 1));
    const lock = OutputLock.acquire(d, 'out');
    expect(lock.held()).toBe(true);
    lock.release();
  });

  it('takes over a lock whose pid now belongs to another process (another start time)', () => {
    const d = fresh('reused');
    writeFileSync(path.join(d, LOCK_NAME), holder(process.pid, (processStartTicks(process.pid) ?? 0) + 1));
    const lock = OutputLock.acquire(d, 'out');
    expect(lock.held()).toBe(true);
    lock.release();
  });

  it('takes over an unreadable lock file (a crash while it was written)', () => {
    const d = fresh('garbled');
    writeFileSync(path.join(d, LOCK_NAME), '{"pid": 12');
    OutputLock.acquire(d, 'out').release();
  });

  it('knows when another run has taken its lock, and then neither releases nor keeps it', () => {
    const d = fresh('taken');
    const lock = OutputLock.acquire(d, 'out');
    writeFileSync(path.join(d, LOCK_NAME), holder(1, null));
    expect(lock.held()).toBe(false);
    expect(() => lock.assertHeld('--output p.png')).toThrow(`--output p.png is no longer this run's: ${path.join(d, LOCK_NAME)} now names pid 1, since 2026-12-02T00:00:00.000Z; stopping without writing there`);
    lock.release();
    expect(existsSync(path.join(d, LOCK_NAME))).toBe(true); // the other run's, left alone
  });
});
