/**
 * The ReLU gradient and bias-gradient sums for wasm and cpu, one pass each (./tensors.ts says why).
 *
 * ReluGrad: dx = dy where x > 0, 0 where x ≤ 0, NaN where x is NaN (tfjs' mul(dy, step(x)) gives NaN
 * there, and the NaN checks downstream rely on it). Two kernels and a cast on tfjs' path.
 * Sum over every axis but the last (a bias's gradient, Σ over batch and pixels of dy): wasm's Sum first
 * transposes the reduced axes to the end, a full copy, then reduces; here one pass accumulates each
 * channel in double precision. Other reductions go to the stock kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, SumAttrs, TensorInfo } from '@tensorflow/tfjs-core';
import { isColumnSum } from '../plans/reductions.js';
import { RELU_GRAD } from '../ops/relu_grad.js';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { rowsPerBlock } from './batch_norm.js';
import { hostKernel, type HostBackendName } from './tensors.js';

/**
 * dy·step(x) without a branch on x's sign, which a ReLU input makes a coin toss: a branchy loop took
 * 6.8 ns per value on this machine, this one 1.9. +(v > 0) is step(x) for every number, ±∞ included,
 * but 0 for NaN, where step(x) is NaN; `check` turns NaN when any x is NaN (or infinite), and only
 * then does a second pass put the NaNs back.
 */
function reluGrad([dy, x]: Float32Array[], [dx]: Float32Array[]): void {
  let check = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    dx[i] = dy[i] * +(v > 0);
    check += v - v;
  }
  if (Number.isNaN(check)) {
    for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i])) dx[i] = NaN;
  }
}

function columnSum([x]: Float32Array[], [out]: Float32Array[]): void {
  const channels = out.length;
  const rows = x.length / channels;
  const acc = new Float64Array(channels);
  const block = rowsPerBlock(channels);
  for (let r0 = 0; r0 < rows; r0 += block) {
    const end = Math.min(rows, r0 + block) * channels;
    for (let c = 0; c < channels; c++) {
      let a = 0;
      for (let i = r0 * channels + c; i < end; i += channels) a += x[i];
      acc[c] += a;
    }
  }
  out.set(acc);
}

export function hostElementwiseKernels(backendName: HostBackendName, stockSum: KernelFunc | undefined): Record<string, KernelConfig> {
  const sum = hostKernel(backendName, tf.Sum, ['x'], ([x], attrs) => {
    const { keepDims } = attrs as unknown as SumAttrs;
    const channels = x.shape[x.shape.length - 1];
    return [keepDims ? x.shape.map((d, i) => (i === x.shape.length - 1 ? d : 1)) : [channels]];
  }, columnSum);
  return {
    [RELU_GRAD]: { kernelName: RELU_GRAD, backendName, kernelFunc: hostKernel(backendName, RELU_GRAD, ['dy', 'x'], ([, x]) => [x.shape], reluGrad) },
    [tf.Sum]: {
      kernelName: tf.Sum,
      backendName,
      kernelFunc: (args) => {
        const { x } = args.inputs as { x: TensorInfo };
        if (isColumnSum(x, (args.attrs as unknown as SumAttrs).axis)) return sum(args);
        if (stockSum === undefined) throw new Error(`Sum on ${backendName}: tfjs registered no stock kernel to fall back on: this is a bug`);
        return stockSum(args);
      },
    },
  };
}

/**
 * Identity for wasm without a copy: tfjs' engine clones (Identity) every tensor a gradient saves, 206 per
 * MiniGoogLeNet step, and tfjs-backend-wasm 4.22's Identity copies each (60 ms of a step at batch 64).
 * Tensors are immutable in tfjs, so the clone can share the data and count a reference, as the cpu and
 * webgpu backends' Identity and wasm's own Reshape do.
 */
export function wasmIdentityKernel(stock: KernelFunc | undefined): KernelConfig {
  return {
    kernelName: tf.Identity,
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: TensorInfo };
      if (x.dtype === 'string') {
        if (stock === undefined) throw new Error('Identity on wasm: tfjs registered no stock kernel for strings: this is a bug');
        return stock(args);
      }
      (args.backend as BackendWasm).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  };
}
