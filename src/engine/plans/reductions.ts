/**
 * The Sum the project's kernels take over on every backend (wasm-and-cpu/elementwise.ts, webgpu/column_sum.ts): a
 * bias gradient, Σ over every axis but the last of a float32 tensor, which tfjs' kernels compute through a
 * transpose of the whole tensor.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';

/** Whether a Sum reduces exactly the leading axes of a non-empty float32 tensor of rank ≥ 2, keeping the last. */
export function isColumnSum(x: TensorInfo, axis: number | number[]): boolean {
  if (x.dtype !== 'float32' || x.shape.length < 2 || tf.util.sizeFromShape(x.shape) === 0) return false;
  const axes = tf.util.parseAxisParam(axis, x.shape).slice().sort((a, b) => a - b);
  return axes.length === x.shape.length - 1 && axes.every((a, i) => a === i);
}
