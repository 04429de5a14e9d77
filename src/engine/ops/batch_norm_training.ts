/**
 * BatchNormalization in training as one op of the project's, with its gradient in three kernels.
 *
 * tfjs-layers 4.22 normalizes a training batch with tfjs-core ops (normalization.ts: moments, then
 * batchNorm, then two moving-average updates of sub, mul, sub): about 10 kernels forward, and about 40
 * backward once every Mean, Square, Sub, Cast and FusedBatchNorm is differentiated (the profile of a
 * MiniGoogLeNet step on an H200 counted Multiply ×521, Add ×243, Sum ×118, Sub ×118 in 2,274 dispatches).
 * Here the same mathematics is three kernels, each a few GPU dispatches on webgpu (webgpu/batch_norm.ts):
 *
 *   BatchNormTraining    x, γ, β → y = γ·(x − μ)/√(σ² + ε) + β, and stats [2, C] = (μ, σ²), the batch mean
 *                        and biased variance over every axis but the last (tfjs-core's moments)
 *   BatchNormParamGrads  dy, x, stats → dγ = Σ dy·x̂, dβ = Σ dy, with x̂ = (x − μ)/√(σ² + ε)
 *   BatchNormInputGrad   dy, x, stats, γ, dγ, dβ → dx = γ/√(σ² + ε)·(dy − dβ/M − x̂·dγ/M), M rows
 *   BatchNormMovingStats moving μ, moving σ², stats → each m − (m − s)·(1 − momentum), tfjs-layers' update
 *
 * The dx formula is the derivative of the composite tfjs differentiates term by term (μ and σ² depend on
 * x), collected (Ioffe & Szegedy 2015, "Batch Normalization", section 3). The op has no gradient for its
 * stats output: only the moving averages read it, and they are not differentiated in tfjs-layers either.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';

export const BATCH_NORM_TRAINING = 'TrainpoolBatchNormTraining';
export const BATCH_NORM_PARAM_GRADS = 'TrainpoolBatchNormParamGrads';
export const BATCH_NORM_INPUT_GRAD = 'TrainpoolBatchNormInputGrad';
export const BATCH_NORM_MOVING_STATS = 'TrainpoolBatchNormMovingStats';

export interface BatchNormTrainingAttrs {
  epsilon: number;
}

export interface BatchNormMovingStatsAttrs {
  momentum: number;
}

/** [y, stats]: the normalized batch and (batch mean, biased batch variance) as one [2, C] tensor. */
export function batchNormTraining(x: Tensor, scale: Tensor, offset: Tensor, epsilon: number): [Tensor, Tensor] {
  const attrs: BatchNormTrainingAttrs = { epsilon };
  return tf.engine().runKernel(BATCH_NORM_TRAINING, { x, scale, offset }, attrs as unknown as NamedAttrMap) as unknown as [Tensor, Tensor];
}

/** The moving mean and variance after this batch: m − (m − batch statistic)·(1 − momentum). */
export function batchNormMovingStats(movingMean: Tensor, movingVariance: Tensor, stats: Tensor, momentum: number): [Tensor, Tensor] {
  const attrs: BatchNormMovingStatsAttrs = { momentum };
  return tf.engine().runKernel(BATCH_NORM_MOVING_STATS, { movingMean, movingVariance, stats }, attrs as unknown as NamedAttrMap) as unknown as [Tensor, Tensor];
}

export const batchNormTrainingGradConfig: GradConfig = {
  kernelName: BATCH_NORM_TRAINING,
  inputsToSave: ['x', 'scale'],
  outputsToSave: [false, true],
  gradFunc: (dys, saved, attrs) => {
    const dy = (dys as Tensor[])[0];
    const [x, scale, stats] = saved;
    const engine = tf.engine();
    // dγ and dβ are small ([C]) and dx needs both; dx itself (activation-sized) is made only when the
    // tape asks for it, inside that input's own scope.
    const [dscale, doffset] = engine.runKernel(BATCH_NORM_PARAM_GRADS, { dy, x, stats }, attrs) as unknown as [Tensor, Tensor];
    return {
      x: () => engine.runKernel(BATCH_NORM_INPUT_GRAD, { dy, x, stats, scale, dscale, doffset }, attrs) as Tensor,
      // Reshape to the same shape is a new handle on the same data (no copy, no dispatch), which the tape
      // can own apart from dscale and doffset themselves.
      scale: () => tf.reshape(dscale, scale.shape),
      offset: () => tf.reshape(doffset, scale.shape),
    };
  },
};
