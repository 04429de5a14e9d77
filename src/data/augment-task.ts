/**
 * What an augmentation thread runs: one makeShard per task. The data set arrives once, as workerData
 * over SharedArrayBuffers (see augment-pool.ts), so a task carries only the indices and the seed; the
 * result's buffers are created here and transferred back, not copied.
 *
 * Loaded through augment-task.mjs, which makes .ts loadable in a plain worker thread.
 */
import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import type { ShardTask } from './augment-pool.js';
import { checkSource, makeShard, type Shard, type ShardSource } from './shard.js';

// Piscina hands the pool's workerData option to the Worker unchanged.
const source = workerData as ShardSource;
checkSource(source);

export default function makeShardTask({ into, ...request }: ShardTask): Shard {
  const shard = makeShard({ ...source, ...request, into: into && new Float32Array(into) });
  // Piscina.move of a { transferable, value } pair: the value is posted with its buffers in the
  // transfer list, so the coordinator receives the very ArrayBuffers allocated above.
  return move({ [transferableSymbol]: [shard.x.buffer, shard.labels.buffer], [valueSymbol]: shard }) as unknown as Shard;
}
