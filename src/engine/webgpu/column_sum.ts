/**
 * Sum on webgpu when it reduces every axis but the last: a bias gradient (tfjs-core's fused_util.ts
 * getFusedBiasGradient sums dy over N, H and W for every convolution and dense layer).
 *
 * tfjs-backend-webgpu 4.22 reduces only an innermost axis (kernels/Sum_impl.ts via reduce): it first
 * transposes the whole activation so that the channels come first, a full-size copy, then reduces each
 * row in one workgroup. Here the activation is read once, in place, by the chunked column sums of
 * chunked_reduce.ts: one dispatch when the rows fit one chunk, else two (chunks, then their sum).
 * Any other Sum goes to tfjs' kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, SumAttrs, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { isColumnSum } from '../plans/reductions.js';
import { chunkSumsProgram, planChunks, planUniforms, sumChunksProgram } from './chunked_reduce.js';
import { runProgram } from './program.js';

export function columnSumConfig(stock: KernelFunc | undefined): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args;
    const { x } = inputs as { x: TensorInfo };
    const { axis, keepDims } = attrs as unknown as SumAttrs;
    if (!isColumnSum(x, axis)) {
      const axes = tf.util.parseAxisParam(axis, x.shape);
      if (stock === undefined) throw new Error(`Sum on webgpu (trainpool) handles float32 sums over every axis but the last only. Received: ${x.dtype} [${x.shape}] axes [${axes}]`);
      return stock(args);
    }
    const rank = x.shape.length;
    const size = tf.util.sizeFromShape(x.shape);
    const b = backend as WebGPUBackend;
    const channels = x.shape[rank - 1];
    const plan = planChunks(size / channels, channels);
    const partials = runProgram(b, chunkSumsProgram(plan), [x], planUniforms(plan));
    const shape = keepDims ? [...x.shape.slice(0, -1).map(() => 1), channels] : [channels];
    if (plan.chunks === 1) return { dataId: partials.dataId, shape, dtype: 'float32' };
    const total = runProgram(b, sumChunksProgram(plan, 1), [partials], [...planUniforms(plan), ...[0, 0].map((v) => ({ type: 'int32' as const, data: [v] })), { type: 'float32', data: [0] }]);
    b.disposeData(partials.dataId);
    return { dataId: total.dataId, shape, dtype: 'float32' };
  };
  return { kernelName: tf.Sum, backendName: 'webgpu', kernelFunc };
}
