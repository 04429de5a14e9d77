/**
 * tfjs-layers' BatchNormalization, trained through the project's op (../ops/batch_norm_training.ts) where the
 * current backend has its kernels.
 *
 * Why a patch of `BatchNormalization.prototype.call` rather than a layer class of our own: the exported
 * model must hold only standard tfjs-layers classes and weight names, so that stock tf.loadLayersModel
 * reads it. Replacing `call` on tfjs' own class changes how a training batch is computed and nothing that
 * is saved: the class name, config and weights (gamma, beta, moving_mean, moving_variance) stay tfjs'.
 * Registering kernels for the ops tfjs-layers already emits (Mean, Sub, Square, FusedBatchNorm) could not
 * fuse them: each is a separate kernel call and a separate node on the gradient tape.
 *
 * The patched call does what tfjs-layers 4.22's does (layers/normalization.ts, BatchNormalization.call)
 * in training when the layer normalizes the last axis with both γ and β: normalize with the batch mean and
 * biased variance, then move each moving statistic by (batch statistic − moving)·(1 − momentum). Every
 * other case — inference, another axis, no center or no scale, another dtype, a backend without the
 * kernels (cpu, wasm, tensorflow, or webgpu with --kernels stock) — runs tfjs' own call unchanged.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { BATCH_NORM_TRAINING, batchNormMovingStats, batchNormTraining } from '../ops/batch_norm_training.js';
import { batchNormalizationPrototype, type BatchNormalizationFields } from '../tfjs-internals.js';

let installed = false;

/** Whether this call can take the fused path (see the header for the cases that cannot). */
function fusable(layer: BatchNormalizationFields, x: Tensor): boolean {
  const axis = layer.axis >= 0 ? layer.axis : layer.axis + x.rank;
  return (
    axis === x.rank - 1 &&
    x.rank >= 2 &&
    x.dtype === 'float32' &&
    layer.center &&
    layer.scale &&
    tf.getKernel(BATCH_NORM_TRAINING, tf.getBackend()) !== undefined
  );
}

/** Installs the patched call; idempotent. */
export function installFusedBatchNormalization(): void {
  if (installed) return;
  const proto = batchNormalizationPrototype();
  const stock = proto.call;
  installed = true;
  proto.call = function (this: BatchNormalizationFields, inputs, kwargs) {
    const x = Array.isArray(inputs) ? (inputs.length === 1 ? inputs[0] : undefined) : inputs;
    if (kwargs?.training !== true || x === undefined || !fusable(this, x)) return stock.call(this, inputs, kwargs);
    return tf.tidy(() => {
      const [y, stats] = batchNormTraining(x, this.gamma.read(), this.beta.read(), this.epsilon);
      const [mean, variance] = batchNormMovingStats(this.movingMean.read(), this.movingVariance.read(), stats, this.momentum);
      this.movingMean.write(mean);
      this.movingVariance.write(variance);
      return y;
    });
  };
}

