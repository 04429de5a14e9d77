/**
 * What a replica computes: gradients of one shard (training mode) and the loss/accuracy of an
 * evaluation shard (inference mode). Applying gradients is deliberately not here: the coordinator
 * averages and applies them (src/coordinator/optim/sgd.ts), which is what makes data parallelism possible.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { Shard } from '../data/shard.js';
import { readFlat, statsPart, trainablePart, type WeightLayout } from './flat.js';
import { variableOf, type BatchNormalizationFields } from '../engine/tfjs-internals.js';
import { withoutInputGradient } from '../engine/patches/input_convolution.js';
import { pack } from '../engine/ops/pack.js';
import { correctPerExample, crossEntropy, crossEntropyPerExample, oneHot } from './loss.js';
import { setDropoutSeed } from './minigooglenet.js';

export type { Shard };

export interface ShardGradients {
  /** Gradient of the shard's mean loss with respect to every trainable weight, in layout order. */
  grads: Float32Array;
  /** BN moving statistics after this step's update, in layout order (empty without BN). */
  stats: Float32Array;
  /** Mean loss over the shard. */
  loss: number;
  /** Fraction of the shard classified correctly. */
  acc: number;
}

export interface EvaluationSums {
  /** Sum (not mean) of per-example losses, so shards of any size combine exactly. */
  lossSum: number;
  correct: number;
  count: number;
}

function inputShape(model: tfl.LayersModel): [number, number, number] {
  const [, h, w, d] = model.inputs[0].shape as number[];
  return [h, w, d];
}

function classesOf(model: tfl.LayersModel): number {
  const shape = model.outputs[0].shape as number[];
  return shape[shape.length - 1];
}

function shardTensors(model: tfl.LayersModel, shard: Shard): { xs: tf.Tensor4D; ys: tf.Tensor2D } {
  const [h, w, d] = inputShape(model);
  const count = shard.labels.length;
  if (shard.x.length !== count * h * w * d) {
    throw new Error(`shard images must have ${count}×${h}×${w}×${d} values for ${count} labels. Received: ${shard.x.length}`);
  }
  return { xs: tf.tensor4d(shard.x, [count, h, w, d]), ys: oneHot(shard.labels, classesOf(model)) };
}

/**
 * Forward in training mode (dropout on with `dropoutSeed`, BN on batch statistics, which also moves the
 * BN moving averages as Keras does), then backward. One device read brings back every gradient and the
 * statistics, packed in layout order (engine/ops/pack.ts), so a step waits on the device once.
 */
export async function computeGradients(
  model: tfl.LayersModel,
  layout: WeightLayout,
  shard: Shard,
  dropoutSeed: number,
): Promise<ShardGradients> {
  setDropoutSeed(model, dropoutSeed);
  const vars = model.trainableWeights.map(variableOf);
  const out = tf.tidy(() => {
    const { xs, ys } = shardTensors(model, shard);
    let correct: tf.Tensor1D | undefined;
    const { value, grads } = tf.variableGrads(() => {
      // The images need no gradient; the first convolution can skip it (engine/patches/input_convolution.ts).
      const probs = withoutInputGradient(xs, () => model.apply(xs, { training: true })) as tf.Tensor2D;
      correct = tf.keep(correctPerExample(ys, probs));
      return crossEntropy(ys, probs);
    }, vars);
    const acc = tf.mean(correct!);
    correct!.dispose();
    // The statistics are read after the forward pass, which moved them.
    const flat = pack([...vars.map((v) => grads[v.name]), ...model.nonTrainableWeights.map((w) => w.read())]);
    return { loss: value, acc, flat };
  });
  try {
    const [values, loss, acc] = await Promise.all([out.flat.data(), out.loss.data(), out.acc.data()]);
    if (values.length !== layout.totalSize) {
      throw new Error(`computed ${values.length} gradient and statistics values where the layout has ${layout.totalSize}: this is a bug`);
    }
    const all = values as Float32Array;
    return { grads: trainablePart(layout, all), stats: statsPart(layout, all), loss: loss[0], acc: acc[0] };
  } finally {
    tf.dispose([out.flat, out.loss, out.acc]);
  }
}

/**
 * The batch statistics of one shard, as `--precise-bn` averages them (fvcore's PreciseBN): the forward pass
 * in training mode (every BN normalizing with its own batch's statistics, as a training step does), and of
 * each BatchNormalization layer the mean and biased variance of its input over the batch, in the layout's
 * statistics order (per layer: mean, then variance). No gradient is computed.
 *
 * How they are read: a training forward moves each moving statistic m to m − (m − s)·(1 − momentum), with
 * s the batch's. From m = 0 with momentum 0 that is 0 − (0 − s)·1 = s exactly in float32, on every backend
 * and through either BN call (the project's fused one or tfjs-layers' own), so the statistics the training
 * step feeds its moving averages are what comes back, bit for bit. The moving statistics and momenta are
 * the model's again afterwards.
 */
export async function batchStatistics(model: tfl.LayersModel, layout: WeightLayout, shard: Shard): Promise<Float32Array> {
  const statsSize = layout.totalSize - layout.trainableSize;
  const layers = model.layers.filter((l) => l.getClassName() === 'BatchNormalization') as unknown as BatchNormalizationFields[];
  if (layers.length === 0) return new Float32Array(0);
  const saved = layers.map((l) => ({ momentum: l.momentum, mean: tf.keep(l.movingMean.read().clone()), variance: tf.keep(l.movingVariance.read().clone()) }));
  try {
    tf.tidy(() => {
      for (const l of layers) {
        l.momentum = 0;
        l.movingMean.write(tf.zerosLike(l.movingMean.read()));
        l.movingVariance.write(tf.zerosLike(l.movingVariance.read()));
      }
      const { xs } = shardTensors(model, shard);
      model.apply(xs, { training: true });
    });
    return await readFlat(model.nonTrainableWeights.map((w) => w.read()), statsSize);
  } finally {
    layers.forEach((l, i) => {
      l.momentum = saved[i].momentum;
      l.movingMean.write(saved[i].mean);
      l.movingVariance.write(saved[i].variance);
    });
    tf.dispose(saved.flatMap((s) => [s.mean, s.variance]));
  }
}

/**
 * Images per forward pass in inference: bounds a worker's activation memory whatever chunk the coordinator
 * sends (config.ts DEFAULTS.evalChunk). It stays here, not in config.ts, because the model sits below the
 * configuration (config.ts reads the model names); and it changes val_loss in its last bits (the float32
 * sums are per sub-batch).
 */
export const EVALUATION_BATCH = 256;

/** Inference-mode loss and accuracy sums over a shard, in sub-batches of at most `batchSize`. */
export async function evaluateShard(model: tfl.LayersModel, shard: Shard, batchSize = EVALUATION_BATCH): Promise<EvaluationSums> {
  const [h, w, d] = inputShape(model);
  const per = h * w * d;
  let lossSum = 0;
  let correct = 0;
  const count = shard.labels.length;
  for (let start = 0; start < count; start += batchSize) {
    const end = Math.min(count, start + batchSize);
    const part: Shard = { x: shard.x.subarray(start * per, end * per), labels: shard.labels.subarray(start, end) };
    const sums = tf.tidy(() => {
      const { xs, ys } = shardTensors(model, part);
      const probs = model.apply(xs, { training: false }) as tf.Tensor2D;
      return tf.stack([tf.sum(crossEntropyPerExample(ys, probs)), tf.sum(correctPerExample(ys, probs))]);
    });
    const [l, c] = await sums.data();
    sums.dispose();
    lossSum += l;
    correct += c;
  }
  return { lossSum, correct, count };
}
