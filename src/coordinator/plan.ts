/**
 * Which images go to which worker at which step, and with which random seeds: a pure function of
 * (seed, epoch, step, rank). Nothing here carries state from step to step, so a re-sent shard, a
 * replacement worker or a resumed run sees exactly the draws of the original.
 */
import { mixSeed, permutation, Purpose } from '../util/random.js';

export interface PlanOptions {
  seed: number;
  trainCount: number;
  /** Images per worker per step. */
  batchSize: number;
  workers: number;
}

export interface ShardPlan {
  epoch: number;
  step: number;
  rank: number;
  /** Indices into the training set. */
  indices: Uint32Array;
  augmentSeed: number;
  dropoutSeed: number;
}

/** Keras' steps_per_epoch = N // global batch: the incomplete last batch is dropped. */
export function stepsPerEpoch(o: Pick<PlanOptions, 'trainCount' | 'batchSize' | 'workers'>): number {
  return Math.floor(o.trainCount / (o.batchSize * o.workers));
}

export class TrainingPlan {
  private cachedEpoch = -1;
  private order: Uint32Array = new Uint32Array(0);

  constructor(readonly o: PlanOptions) {
    if (stepsPerEpoch(o) < 1) {
      throw new Error(
        `the training set (${o.trainCount} images) must hold at least one global batch of ${o.batchSize} × ${o.workers} workers = ${o.batchSize * o.workers} images`,
      );
    }
  }

  get steps(): number {
    return stepsPerEpoch(this.o);
  }

  /** The epoch's shuffled order of the training set (reshuffled every epoch, as Keras does). */
  epochOrder(epoch: number): Uint32Array {
    if (epoch !== this.cachedEpoch) {
      this.order = permutation(this.o.trainCount, mixSeed(this.o.seed, Purpose.shuffle, epoch));
      this.cachedEpoch = epoch;
    }
    return this.order;
  }

  shard(epoch: number, step: number, rank: number): ShardPlan {
    const { batchSize, workers, seed } = this.o;
    const start = (step * workers + rank) * batchSize;
    return {
      epoch,
      step,
      rank,
      indices: this.epochOrder(epoch).slice(start, start + batchSize),
      augmentSeed: mixSeed(seed, Purpose.augment, epoch, step, rank),
      dropoutSeed: this.dropoutSeed(epoch, step, rank),
    };
  }

  dropoutSeed(epoch: number, step: number, rank: number): number {
    return mixSeed(this.o.seed, Purpose.dropout, epoch, step, rank);
  }
}

/**
 * The validation set split into `workers` contiguous parts, each cut into chunks of at most `chunk`
 * images (one evaluate message each): returns, per worker, its chunks as [start, end) ranges.
 */
export function validationChunks(count: number, workers: number, chunk: number): [number, number][][] {
  const out: [number, number][][] = [];
  for (let r = 0; r < workers; r++) {
    const from = Math.floor((r * count) / workers);
    const to = Math.floor(((r + 1) * count) / workers);
    const mine: [number, number][] = [];
    for (let s = from; s < to; s += chunk) mine.push([s, Math.min(to, s + chunk)]);
    out.push(mine);
  }
  return out;
}

/** One batch of --precise-bn: training images and the augmentation seed of their shard. */
export interface StatisticsBatch {
  indices: Uint32Array;
  augmentSeed: number;
}

/** Throws unless `count` batches of `batchSize` distinct training images exist (checked before the first step). */
export function checkStatisticsBatches(o: Pick<PlanOptions, 'trainCount' | 'batchSize'>, count: number): void {
  if (count * o.batchSize > o.trainCount) {
    throw new Error(
      `--precise-bn ${count} needs ${count} batches × ${o.batchSize} images = ${count * o.batchSize} training images; the training set has ${o.trainCount}: pass at most ${Math.floor(o.trainCount / o.batchSize)}`,
    );
  }
}

/**
 * The batches --precise-bn recomputes the BN statistics from after epoch `epoch`: `count` batches of
 * `batchSize` images (one worker's batch, whose statistics a training step normalizes with), without
 * replacement from a shuffle of their own, augmented as training shards are. They depend on the seed and
 * the epoch only, not on the number of workers, so G workers average the same batches as one.
 */
export function statisticsBatches(o: Pick<PlanOptions, 'seed' | 'trainCount' | 'batchSize'>, epoch: number, count: number): StatisticsBatch[] {
  checkStatisticsBatches(o, count);
  const order = permutation(o.trainCount, mixSeed(o.seed, Purpose.batchStatistics, epoch));
  return Array.from({ length: count }, (_, b) => ({
    indices: order.slice(b * o.batchSize, (b + 1) * o.batchSize),
    augmentSeed: mixSeed(o.seed, Purpose.batchStatistics, epoch, b),
  }));
}
