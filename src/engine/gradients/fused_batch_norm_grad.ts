/**
 * Gradient of FusedBatchNorm that lets the multiply broadcast instead of tiling.
 *
 * tfjs-core 4.22's gradient (src/gradients/FusedBatchNorm_grad.ts) computes the input gradient as
 * `dy · tile(1/√(var+ε), [N, H, W, 1]) · scale`: a full-size copy of a per-channel vector that the
 * multiply would have broadcast anyway. On wasm that Tile is the slowest kernel of a MiniGoogLeNet
 * training step (2.1 s of 12.6 s at batch 64, measured with tf.profile): tfjs-backend-wasm's Tile.cc
 * builds index vectors per element. Everything else is the stock gradient, term for term, so the
 * values are the same float32 products.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { FusedBatchNormAttrs, GradConfig, Tensor } from '@tensorflow/tfjs-core';

export const fusedBatchNormGradConfig: GradConfig = {
  kernelName: tf.FusedBatchNorm,
  inputsToSave: ['x', 'mean', 'variance', 'scale'],
  gradFunc: (dyOrList, saved, attrs) => {
    const dy = dyOrList as Tensor;
    const { varianceEpsilon } = attrs as unknown as FusedBatchNormAttrs;
    const [x, mean, variance, scale] = saved;
    const scaleValue = scale == null ? tf.scalar(1) : scale;
    // Per-channel statistics (rank 1) were broadcast over every other axis on the way forward.
    const reduce = (t: Tensor): Tensor => (mean.rank === 1 ? tf.sum(t, tf.broadcast_util.getReductionAxes(mean.shape, x.shape)) : t);

    const xMinusMean = tf.sub(x, mean);
    const dyTimesScale = tf.mul(dy, scaleValue);
    const oneOverSqrtVariance = tf.rsqrt(tf.add(variance, tf.scalar(varianceEpsilon)));
    const minusHalfRCube = tf.mul(tf.mul(tf.mul(oneOverSqrtVariance, oneOverSqrtVariance), oneOverSqrtVariance), tf.scalar(-0.5));

    return {
      x: () => tf.reshape(tf.mul(tf.mul(dy, oneOverSqrtVariance), scaleValue), x.shape),
      mean: () => tf.reshape(reduce(tf.mul(tf.mul(oneOverSqrtVariance, tf.scalar(-1)), dyTimesScale)), mean.shape),
      variance: () => tf.reshape(reduce(tf.mul(tf.mul(minusHalfRCube, xMinusMean), dyTimesScale)), mean.shape),
      scale: () => tf.reshape(reduce(tf.mul(dy, tf.mul(xMinusMean, oneOverSqrtVariance))), mean.shape),
      offset: () => tf.reshape(reduce(dy), mean.shape),
    };
  },
};
