/**
 * The coordinator's augmentation threads: makeShard (mean subtraction, Keras shift and flip) off the
 * main thread, so that preparing the next step's shards overlaps the workers' gradient computation.
 *
 * The training set is copied once into SharedArrayBuffers (unless it already lives in one) and given to
 * every thread as workerData; a request carries only its indices and seed, and each thread transfers the
 * shard it built back, so a 64-image CIFAR shard costs no copy, and no allocation either once its user hands
 * shards back (recycle): the buffer then travels to the thread with the request and back with the shard.
 *
 *   const pool = new AugmentPool({ threads: 2, images, labels, mean, height: 32, width: 32, depth: 3 });
 *   const { x, labels } = await pool.makeShard({ indices, seed, augment: true });
 *   await pool.close();
 *
 * The result is byte-identical to makeShard() called in-process with the same arguments.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { checkSource, type Shard, type ShardRequest, type ShardSource } from './shard.js';
import { TrainpoolError } from '../util/errors.js';

export interface AugmentPoolOptions extends ShardSource {
  /** Number of threads, all started up front and kept until close(). */
  threads: number;
}

export interface AugmentPoolStats {
  /** Shards built since the pool started. */
  completed: number;
  /** Requests waiting for a free thread. */
  queued: number;
  /** Threads Piscina holds now: `threads` once started, 0 after close(). */
  liveThreads: number;
}

type PoolState = 'open' | 'closing' | 'closed';

/** What a thread gets (augment-task.ts): a request, and (transferred with it) a spare buffer of its shard's size. */
export type ShardTask = ShardRequest & { into?: ArrayBuffer };

/** Spare buffers kept per shard size (recycle). */
const MAX_SPARE = 64;

// The .mjs bootstrap, not the .ts task: a worker thread may have no TypeScript loader (see the bootstrap).
const TASK_FILE = fileURLToPath(new URL('./augment-task.mjs', import.meta.url));

export class AugmentPool {
  readonly #pool: Piscina<ShardTask, Shard>;
  /**
   * Image buffers of shards their users are done with (recycle), by byte length: the next shard of that size
   * is written into one, transferred to its thread and back, instead of into a new 768 KiB allocation per
   * image batch. Those made the coordinator's V8 collect its old generation every 10–20 steps (external memory
   * that only a full collection frees), 3–10 ms each on this VM.
   */
  readonly #spare = new Map<number, ArrayBuffer[]>();
  readonly #threads: number;
  readonly #imageBytes: number;
  #state: PoolState = 'open';

  constructor(opts: AugmentPoolOptions) {
    const { threads, height, width, depth } = opts;
    if (!(Number.isInteger(threads) && threads >= 1)) {
      throw new TrainpoolError('USAGE', `Augmentation threads must be an integer >= 1. Received: threads=${threads}`);
    }
    checkSource(opts);
    const source: ShardSource = {
      images: shared(opts.images),
      labels: shared(opts.labels),
      mean: shared(opts.mean),
      height,
      width,
      depth,
    };
    this.#threads = threads;
    this.#imageBytes = 4 * height * width * depth;
    this.#pool = new Piscina<ShardTask, Shard>({
      filename: TASK_FILE,
      minThreads: threads,
      maxThreads: threads,
      // Threads load the task module once and keep it; never retire one for being idle.
      idleTimeout: Infinity,
      workerData: source,
    });
  }

  /** The number of threads the pool was made with. */
  get threads(): number {
    return this.#threads;
  }

  get stats(): AugmentPoolStats {
    return {
      completed: this.#pool.completed,
      queued: this.#pool.queueSize,
      liveThreads: this.#pool.threads.length,
    };
  }

  makeShard(request: ShardRequest): Promise<Shard> {
    if (this.#state !== 'open') {
      return Promise.reject(new TrainpoolError('USAGE', `AugmentPool.makeShard must be called before close(). Received a request in state ${this.#state}`));
    }
    // Only these three fields travel; a caller's extra properties would be cloned for nothing.
    const { indices, seed, augment } = request;
    const into = this.#spare.get(indices.length * this.#imageBytes)?.pop();
    if (!into) return this.#pool.run({ indices, seed, augment });
    return this.#pool.run({ indices, seed, augment, into }, { transferList: [into] });
  }

  /**
   * Takes back shards this pool made whose images nobody reads any more (their step is done): later shards
   * of the same size are written into their buffers. A shard recycled must not be read again.
   */
  recycle(shards: Shard[]): void {
    for (const { x } of shards) {
      const buffer = x.buffer;
      if (!(buffer instanceof ArrayBuffer) || x.byteOffset !== 0 || x.byteLength !== buffer.byteLength) continue;
      const spare = this.#spare.get(buffer.byteLength) ?? [];
      this.#spare.set(buffer.byteLength, spare);
      // Enough for every shard in flight (the steps prefetched, each rank's); beyond that, the collector's.
      if (spare.length < MAX_SPARE) spare.push(buffer);
    }
  }

  /** Stops every thread; requests still in flight are rejected. Calling it again is a no-op. */
  async close(): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'closing';
    try {
      await this.#pool.destroy();
    } finally {
      this.#state = 'closed';
    }
  }
}

/** The same values in shared memory: the view itself if it is there already, else a one-time copy. */
function shared(array: Uint8Array): Uint8Array;
function shared(array: Float32Array): Float32Array;
function shared(array: Uint8Array | Float32Array): Uint8Array | Float32Array {
  if (array.buffer instanceof SharedArrayBuffer) return array;
  // Plain Uint8Array even for a Node Buffer, whose constructor would not take a SharedArrayBuffer.
  const copy = array instanceof Float32Array ? new Float32Array(new SharedArrayBuffer(array.byteLength)) : new Uint8Array(new SharedArrayBuffer(array.byteLength));
  copy.set(array);
  return copy;
}
