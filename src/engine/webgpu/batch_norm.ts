/**
 * The webgpu kernels of the project's BatchNormalization ops (../ops/batch_norm_training.ts says what each
 * computes): 3 dispatches forward plus 2 for the moving averages, 4 backward, where tfjs' composite took
 * about 50 (measured per layer: bench/ENGINE.md).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import {
  BATCH_NORM_INPUT_GRAD,
  BATCH_NORM_MOVING_STATS,
  BATCH_NORM_PARAM_GRADS,
  BATCH_NORM_TRAINING,
  type BatchNormMovingStatsAttrs,
  type BatchNormTrainingAttrs,
} from '../ops/batch_norm_training.js';
import { chunkGradSumsProgram, chunkMomentsProgram, inputGradProgram, mergeMomentsProgram, movingAverageProgram, normalizeProgram } from './batch_norm_programs.js';
import { planChunks, planUniforms, sumChunksProgram, type ChunkPlan } from './chunked_reduce.js';
import { runProgram } from './program.js';

const i32 = (v: number) => ({ type: 'int32' as const, data: [v] });
const f32 = (v: number) => ({ type: 'float32' as const, data: [v] });

/** x as [rows, channels], channels last; rejects what the programs do not handle. */
function planFor(kernel: string, x: TensorInfo): ChunkPlan {
  const channels = x.shape[x.shape.length - 1];
  const size = tf.util.sizeFromShape(x.shape);
  if (x.dtype !== 'float32' || x.shape.length < 2 || size === 0) {
    throw new Error(`${kernel} needs a non-empty float32 x of rank 2 or more, channels last. Received: ${x.dtype} [${x.shape.join(', ')}]`);
  }
  return planChunks(size / channels, channels);
}

const batchNormTraining: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, scale, offset } = inputs as { x: TensorInfo; scale: TensorInfo; offset: TensorInfo };
  const { epsilon } = attrs as unknown as BatchNormTrainingAttrs;
  const b = backend as WebGPUBackend;
  const plan = planFor(BATCH_NORM_TRAINING, x);
  const partials = runProgram(b, chunkMomentsProgram(plan), [x], planUniforms(plan));
  const stats = runProgram(b, mergeMomentsProgram(plan), [partials], planUniforms(plan));
  b.disposeData(partials.dataId); // freed once the queued work that reads it is submitted
  const y = runProgram(b, normalizeProgram(x.shape, plan.channels), [x, stats, scale, offset], [
    i32(plan.rows * plan.channels),
    i32(plan.channels),
    f32(epsilon),
  ]);
  return [y, stats];
};

const paramGrads: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, x, stats } = inputs as { dy: TensorInfo; x: TensorInfo; stats: TensorInfo };
  const { epsilon } = attrs as unknown as BatchNormTrainingAttrs;
  const b = backend as WebGPUBackend;
  const plan = planFor(BATCH_NORM_PARAM_GRADS, x);
  const partials = runProgram(b, chunkGradSumsProgram(plan), [dy, x, stats], planUniforms(plan));
  const sum = (row: number, normalized: number) =>
    runProgram(b, sumChunksProgram(plan), [partials, stats], [...planUniforms(plan), i32(row), i32(normalized), f32(epsilon)]);
  const dscale = sum(1, 1);
  const doffset = sum(0, 0);
  b.disposeData(partials.dataId);
  return [dscale, doffset];
};

const inputGrad: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, x, stats, scale, dscale, doffset } = inputs as Record<string, TensorInfo>;
  const { epsilon } = attrs as unknown as BatchNormTrainingAttrs;
  const plan = planFor(BATCH_NORM_INPUT_GRAD, x);
  return runProgram(backend as WebGPUBackend, inputGradProgram(x.shape, plan.channels), [dy, x, stats, scale, dscale, doffset], [
    i32(plan.rows * plan.channels),
    i32(plan.channels),
    i32(plan.rows),
    f32(epsilon),
  ]);
};

const movingStats: KernelFunc = ({ inputs, backend, attrs }) => {
  const { movingMean, movingVariance, stats } = inputs as Record<string, TensorInfo>;
  const { momentum } = attrs as unknown as BatchNormMovingStatsAttrs;
  const b = backend as WebGPUBackend;
  const channels = movingMean.shape[0];
  // tfjs-layers computes the decay in double precision and multiplies by it as a float32 scalar.
  const decay = Math.fround(1 - momentum);
  const update = (moving: TensorInfo, row: number) =>
    runProgram(b, movingAverageProgram(channels), [moving, stats], [i32(channels), i32(row), f32(decay)]);
  return [update(movingMean, 0), update(movingVariance, 1)];
};

export const WEBGPU_BATCH_NORM_KERNELS: Record<string, KernelConfig> = {
  [BATCH_NORM_TRAINING]: { kernelName: BATCH_NORM_TRAINING, backendName: 'webgpu', kernelFunc: batchNormTraining },
  [BATCH_NORM_PARAM_GRADS]: { kernelName: BATCH_NORM_PARAM_GRADS, backendName: 'webgpu', kernelFunc: paramGrads },
  [BATCH_NORM_INPUT_GRAD]: { kernelName: BATCH_NORM_INPUT_GRAD, backendName: 'webgpu', kernelFunc: inputGrad },
  [BATCH_NORM_MOVING_STATS]: { kernelName: BATCH_NORM_MOVING_STATS, backendName: 'webgpu', kernelFunc: movingStats },
};
