/**
 * Pack: float32 tensors of any shapes, flattened and laid end to end in one 1-D tensor, for the one read
 * of a step's results (every gradient, then the BatchNormalization statistics).
 *
 * tfjs' way, concat(reshape(t, [-1]) for each t), costs a tfjs kernel per tensor plus the Concat: 116
 * reshapes and ~22 dispatches for MiniGoogLeNet's gradients on webgpu (tfjs splits a Concat of more
 * inputs than a shader may bind), 13 of 53 ms of a step's host time on lavapipe. The project's kernel is
 * one tfjs kernel: buffer-to-buffer copies on webgpu (no dispatch), copyWithin on the wasm heap, set() on
 * cpu. Backends without it (tensorflow; --kernels stock) take tfjs' way.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensorMap, Tensor, TensorInfo } from '@tensorflow/tfjs-core';

export const PACK = 'TrainpoolPack';

export function pack(tensors: Tensor[]): Tensor {
  if (tf.getKernel(PACK, tf.getBackend()) === undefined) return tf.tidy(() => tf.concat(tensors.map((t) => tf.reshape(t, [-1]))));
  return tf.engine().runKernel(PACK, tensors as unknown as NamedTensorMap, {}) as Tensor;
}

/** The kernels' inputs, each checked to be float32. */
export function packInputs(inputs: unknown, backendName: string): TensorInfo[] {
  const list = inputs as TensorInfo[];
  for (const t of list) {
    if (t.dtype !== 'float32') throw new Error(`${PACK} on ${backendName} packs float32 tensors. Received: ${t.dtype} [${t.shape.join(', ')}]`);
  }
  return list;
}

export const sizeOf = (t: TensorInfo): number => tf.util.sizeFromShape(t.shape);
