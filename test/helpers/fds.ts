import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * This process's open descriptors (Linux) that name a file under `dir`: what a reader or writer of files
 * there leaked. Counting all descriptors instead made tests flaky: a stream an earlier test destroyed closes
 * its descriptor a moment later on the thread pool, and the count dropped below the one taken first.
 */
export function openFilesUnder(dir: string): string[] {
  const root = path.resolve(dir) + path.sep;
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(root)) out.push(target);
    } catch {
      // Closed between the listing and the readlink (the listing's own descriptor, for one).
    }
  }
  return out;
}
