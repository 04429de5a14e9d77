/**
 * Mapped bulk regions: the same physical pages in the coordinator and in a worker, through the optional
 * addon shm.c (built at `npm ci` by tools/build-native.mjs). Node can read and write a file but not map
 * one; mapped, a region costs a memcpy where pread/pwrite cost a system call and a copy through the page
 * cache, and the coordinator can map regions inside its WebAssembly memory, where the exchange's kernels
 * read the gradients and write the weights in place (optim/kernels.ts). torch.multiprocessing shares
 * tensors the same way (a file in /dev/shm, mapped by every process).
 *
 * Without the addon (no compiler at install, not Linux) or with TRAINPOOL_NO_MMAP=1, `sharedMemory()` is
 * null and the regions use read/write: same bytes, slower.
 */
import { createRequire } from 'node:module';

export interface SharedMemory {
  readonly pageSize: number;
  /** Allocates the file's first `bytes` now (ENOSPC here rather than SIGBUS at a first touch). */
  reserve(fd: number, bytes: number): void;
  /** An ArrayBuffer over the file's first `bytes`, shared with every process that maps the file. */
  map(fd: number, bytes: number): ArrayBuffer;
  /** The file's first `bytes` replace `bytes` bytes of `buffer` at `byteOffset` (whole pages). */
  mapInto(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, bytes: number, fd: number): void;
}

interface Addon {
  pageSize(): number;
  reserve(fd: number, bytes: number): void;
  map(fd: number, bytes: number): ArrayBuffer;
  mapInto(buffer: ArrayBuffer | Uint8Array<SharedArrayBuffer>, byteOffset: number, bytes: number, fd: number): void;
}

let loaded: SharedMemory | null | undefined;
/** Why the addon is not in use, for the run's start lines. */
let missing = '';

export function sharedMemory(): SharedMemory | null {
  if (loaded !== undefined) return loaded;
  if (process.env.TRAINPOOL_NO_MMAP === '1') {
    missing = 'TRAINPOOL_NO_MMAP=1';
    return (loaded = null);
  }
  try {
    const addon = createRequire(import.meta.url)('../../build/shm.node') as Addon;
    loaded = {
      pageSize: addon.pageSize(),
      reserve: addon.reserve,
      map: addon.map,
      // N-API before Node 22 takes no SharedArrayBuffer (the exchange arena's shared WebAssembly memory):
      // the addon takes a Uint8Array over all of one instead.
      mapInto: (buffer, byteOffset, bytes, fd) =>
        addon.mapInto(buffer instanceof SharedArrayBuffer ? new Uint8Array(buffer) : buffer, byteOffset, bytes, fd),
    };
  } catch (e) {
    missing = `build/shm.node not loadable: ${(e as Error).message.split('\n')[0]}`;
    loaded = null;
  }
  return loaded;
}

/** How the bulk regions move bytes in this process, in words. */
export function regionMode(): string {
  return sharedMemory() ? 'mapped shared memory' : `read/write (${missing})`;
}

export function roundUpToPage(bytes: number, page: number): number {
  return Math.ceil(bytes / page) * page;
}
