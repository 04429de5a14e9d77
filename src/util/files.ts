/**
 * Filesystem failures as one line that names the path and the cause (never a stack trace), and writes
 * that leave either the whole new file or nothing: no `.tmp` behind when they fail.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { TrainpoolError } from './errors.js';

const CAUSES: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOENT: 'the folder no longer exists',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'it is a folder',
  EIO: 'an I/O error',
  EMFILE: 'too many open files',
};

/** "no space left on the device (ENOSPC)" for a Node system error; its message otherwise. */
export function fsCause(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code && CAUSES[code]) return `${CAUSES[code]} (${code})`;
  return code ?? (e as Error)?.message ?? String(e);
}

/** TrainpoolError OUTPUT: "could not write <what> <file>: <cause>"; TrainpoolErrors pass through. */
export function writeFailed(what: string, file: string, e: unknown): Error {
  if (e instanceof TrainpoolError) return e;
  return new TrainpoolError('OUTPUT', `could not write ${what} ${file}: ${fsCause(e)}`);
}

/** Removes `file` (or folder) if it exists; never throws: used on paths that are already failing. */
export function removeQuietly(file: string): void {
  try {
    rmSync(file, { recursive: true, force: true });
  } catch {
    // Nothing more to do on a path that cannot be removed either.
  }
}

/** The temporary name a write of `file` goes to before its rename. */
export function temporaryName(file: string): string {
  return `${file}.${process.pid}.tmp`;
}

/**
 * Writes `parts` to a temporary file beside `file`, fsyncs it and renames it over `file`, so a reader sees
 * the old file or the whole new one; on failure the temporary file is removed and the error names `what`.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string | readonly Uint8Array[], what = 'the file', o: { fsync?: boolean } = {}): void {
  const tmp = temporaryName(file);
  try {
    writeWhole(tmp, data, o.fsync ?? false);
    renameSync(tmp, file);
  } catch (e) {
    removeQuietly(tmp);
    throw writeFailed(what, file, e);
  }
}

/** Writes `data` to `file` (created or truncated), all of it, optionally fsync'd. */
export function writeWhole(file: string, data: Uint8Array | string | readonly Uint8Array[], fsync: boolean): void {
  const parts = typeof data === 'string' ? [Buffer.from(data)] : data instanceof Uint8Array ? [data] : data;
  const fd = openSync(file, 'w');
  try {
    for (const part of parts) {
      let at = 0;
      while (at < part.length) at += writeSync(fd, part, at, part.length - at);
    }
    if (fsync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
