/**
 * Room for what a run writes, checked before any worker starts: the checkpoint folder holds two
 * checkpoints and a third while it is written; the output folder the model (twice while a new one
 * replaces the old) and the plot. Too little for one checkpoint and one model is refused then and there;
 * less than the whole is a warning, since other files may come and go during a long run.
 */
import { statfsSync, statSync } from 'node:fs';
import path from 'node:path';
import { UsageError, type OutputPaths } from '../config/config.js';

/** Bytes free to this user in the file system holding `dir`; null where it cannot be told. */
export function freeBytes(dir: string): number | null {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

export function checkFreeSpace(outputs: OutputPaths, sizes: { checkpointBytes: number; modelBytes: number }, warn: (line: string) => void, free = freeBytes): void {
  const { checkpointBytes, modelBytes } = sizes;
  const folders = [
    { dir: outputs.checkpointDir, least: checkpointBytes, whole: 3 * checkpointBytes, what: 'checkpoints' },
    { dir: path.dirname(outputs.modelDir), least: modelBytes, whole: 2 * modelBytes + 1e6, what: 'the model and plot' },
  ];
  // Both on one file system: they share its room.
  const same = sameDevice(folders[0].dir, folders[1].dir);
  const need = same ? [{ ...folders[0], least: checkpointBytes + modelBytes, whole: folders[0].whole + folders[1].whole, what: 'checkpoints, the model and plot' }] : folders;
  for (const f of need) {
    const room = free(f.dir);
    if (room === null) continue;
    if (room < f.least) {
      throw new UsageError(`${f.dir} has ${MB(room)} free; ${f.what} need at least ${MB(f.least)} (a run there would fail at its first checkpoint)`);
    }
    if (room < f.whole) warn(`${f.dir} has ${MB(room)} free; ${f.what} need about ${MB(f.whole)}: the run may stop for want of room`);
  }
}

function sameDevice(a: string, b: string): boolean {
  try {
    return statSync(a).dev === statSync(b).dev;
  } catch {
    return false;
  }
}
