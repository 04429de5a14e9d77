/**
 * One shard of training or validation input, as a worker receives it: the chosen images, minus the
 * per-pixel mean of the training set, in float32, and (for training) each shifted and flipped as Keras'
 * ImageDataGenerator would. The tutorial subtracts the mean before ImageDataGenerator sees the images,
 * so the shift interpolates mean-subtracted values and the edge fill repeats them.
 *
 * Image k of the shard draws its transform from Rng(mixSeed(seed, k)), k being its position in the
 * shard, not its index in the data set: any subset of a shard (a re-sent half after a worker died) can be
 * regenerated with identical bytes from the seed and the positions alone.
 */
import { applyTransform, drawTransform, TUTORIAL_AUGMENT } from './augment.js';
import { TrainpoolError } from '../util/errors.js';
import { mixSeed, Rng } from '../util/random.js';

export interface ShardSource {
  /** count × height × width × depth bytes, channels last. */
  images: Uint8Array;
  /** count labels. */
  labels: Uint8Array;
  /** height × width × depth per-pixel mean of the training images. */
  mean: Float32Array;
  height: number;
  width: number;
  depth: number;
}

export interface ShardRequest {
  /** Which images, as indices into the source, in shard order. */
  indices: Uint32Array;
  /**
   * The shard's augmentation seed; the caller derives it, e.g. mixSeed(runSeed, Purpose.augment, epoch,
   * step, rank), so that no other random stream shares it. Ignored when augment is false.
   */
  seed: number;
  augment: boolean;
}

export interface Shard {
  /** indices.length × height × width × depth. */
  x: Float32Array;
  /** The labels of the chosen images, in shard order. */
  labels: Uint8Array;
}

export type MakeShardOptions = ShardSource &
  ShardRequest & {
    /** Where to write the images (every value is written): a shard's buffer used again, instead of a new one. */
    into?: Float32Array;
  };

export function makeShard(opts: MakeShardOptions): Shard {
  checkSource(opts);
  const { images, labels, mean, height, width, depth, indices, seed, augment, into } = opts;
  const size = height * width * depth;
  const count = labels.length;
  const n = indices.length;
  if (into && into.length !== n * size) throw new Error(`a shard of ${n} images is written into ${n * size} values. Received: ${into.length}: this is a bug`);
  const x = into ?? new Float32Array(n * size);
  const shardLabels = new Uint8Array(n);
  // Mean-subtracted image before the shift; applyTransform cannot work in place.
  const centred = augment ? new Float32Array(size) : x;

  for (let k = 0; k < n; k++) {
    const index = indices[k];
    if (index >= count) {
      throw new TrainpoolError('DATA_INVALID', `Shard index must be below the image count ${count}. Received: indices[${k}]=${index}`);
    }
    shardLabels[k] = labels[index];
    const from = index * size;
    const to = augment ? 0 : k * size;
    // A Float32Array store rounds the double difference of two float32 values: float32 subtraction.
    for (let p = 0; p < size; p++) centred[to + p] = images[from + p] - mean[p];
    if (augment) {
      const t = drawTransform(new Rng(mixSeed(seed, k)), height, width, TUTORIAL_AUGMENT);
      applyTransform(centred, 0, x, k * size, height, width, depth, t);
    }
  }
  return { x, labels: shardLabels };
}

/** Checks that the arrays match the declared shape; called once per shard, not per image. */
export function checkSource(s: ShardSource): void {
  const { height, width, depth } = s;
  if (!(Number.isInteger(height) && Number.isInteger(width) && Number.isInteger(depth) && height > 0 && width > 0 && depth > 0)) {
    throw new TrainpoolError('DATA_INVALID', `Image height, width and depth must be positive integers. Received: ${height}×${width}×${depth}`);
  }
  const size = height * width * depth;
  if (s.mean.length !== size) {
    throw new TrainpoolError('DATA_INVALID', `The mean image must hold height×width×depth = ${size} values. Received: ${s.mean.length}`);
  }
  if (s.images.length !== s.labels.length * size) {
    throw new TrainpoolError(
      'DATA_INVALID',
      `The images must hold labels×height×width×depth = ${s.labels.length}×${size} bytes. Received: ${s.images.length}`,
    );
  }
}
