/**
 * The memory of a run's exchange, set up once before the workers start: the arena the kernels work in
 * (optim/kernels.ts), the region every worker reads the weights from and each rank's reply region.
 *
 * With the shared-memory addon (protocol/shm.ts), the weights' region is mapped over the arena's weights
 * and each reply region over its rank's gradient slot: SGD writes the weights the workers read, and the
 * kernels read the gradients the workers wrote, where they lie. A step then copies the weights once (into
 * the worker's backend) and the gradients once (out of it), instead of four region passes. Without it the
 * same objects read and write the regions (the reply straight into the slot) with the same results.
 *
 * Reply regions belong to the rank, not to its process: a replacement worker writes where its predecessor
 * did, after the supervisor has seen the predecessor exit.
 */
import { ExchangeArena } from './optim/kernels.js';
import { BulkFile, bulkDirectory, SharedState } from '../protocol/bulk.js';
import { regionMode, sharedMemory } from '../protocol/shm.js';

/** A reply's gradients, then its BN statistics at the next multiple of 8 (frame.ts): a few bytes past the state's size. */
const REPLY_SLACK = 64;

export interface RunExchange {
  arena: ExchangeArena;
  shared: SharedState;
  /** Rank r's reply region (WorkerHandleOptions.reply). */
  replies: BulkFile[];
  /** Whether the weights and every rank's gradients are mapped (false: read and written). */
  mapped: boolean;
  /** The same, in words, with the reason when not mapped (the run's log). */
  mode: string;
  close(): void;
}

/**
 * `map: false` keeps the regions read/write even where they could be mapped, and `threads` sets the
 * update's threads (default: exchangeThreads, one per core up to four): benchmarks compare them.
 */
export function createExchange(sizes: { totalSize: number; trainableSize: number }, workers: number, o: { map?: boolean; threads?: number } = {}): RunExchange {
  const { totalSize, trainableSize } = sizes;
  const dir = bulkDirectory(4 * totalSize * (workers + 2));
  const arena = ExchangeArena.forRun(totalSize, workers, o.threads);
  // Every region allocated now (in the temp folder where /dev/shm has no room): a /dev/shm that fills
  // during the run cannot fail a write that lands in them.
  const shared = new SharedState(BulkFile.createReserved(dir, 4 * totalSize));
  const replies = Array.from({ length: workers }, () => BulkFile.createReserved(dir, REPLY_SLACK + 4 * totalSize));
  const map = o.map ?? true;
  // Gradients come first in a reply (gradientsComputed), at offset 0 of its region.
  const slots: [string, number, BulkFile][] = [['weights', totalSize, shared.file], ...replies.map((f, r): [string, number, BulkFile] => [`${r}:grads`, trainableSize, f])];
  const mapped = map && slots.map(([key, length, file]) => arena.mapSlot(key, length, file) !== undefined).every(Boolean);
  return {
    arena,
    shared,
    replies,
    mapped,
    mode: `${mode(mapped, map, dir)}, update on ${arena.threads} thread${arena.threads > 1 ? 's' : ''}`,
    close: () => {
      for (const f of [shared.file, ...replies]) f.close();
      // The helper threads end by themselves once told (and never hold the process meanwhile).
      void arena.close();
    },
  };
}

function mode(mapped: boolean, asked: boolean, dir: string): string {
  if (mapped) return 'mapped shared memory';
  if (!asked) return 'read/write (asked)';
  // With the addon loaded, only the reservation (room in `dir`) or the arena's size can have failed.
  return sharedMemory() ? `read/write (regions in ${dir} could not all be reserved and mapped)` : regionMode();
}
