/**
 * The project's BatchNormalization ops (../ops/batch_norm_training.ts says what each computes) for wasm and
 * cpu, as loops over [rows, channels] in JavaScript: two passes over x forward, one per gradient kernel.
 * tfjs' composite takes about 50 kernels per layer, most of them full passes (on wasm, 1.3 s of a
 * 7.3 s MiniGoogLeNet step at batch 64 went to BatchNormalization's Sum, Mean, Multiply, Sub and Cast).
 *
 * Sums are accumulated in double precision, and the variance is taken about the first row (a shifted
 * sum of squares, exact in double for any batch that fits in memory), so no precision is lost to a large
 * mean. Results are rounded to float32 once, when stored.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelComposer } from '../composite/compose.js';
import {
  BATCH_NORM_INPUT_GRAD,
  BATCH_NORM_MOVING_STATS,
  BATCH_NORM_PARAM_GRADS,
  BATCH_NORM_TRAINING,
  type BatchNormMovingStatsAttrs,
  type BatchNormTrainingAttrs,
} from '../ops/batch_norm_training.js';
import { floatInputs, hostKernel, type HostBackendName } from './tensors.js';

const channelsOf = (x: TensorInfo): number => x.shape[x.shape.length - 1];
const epsilonOf = (attrs: NamedAttrMap): number => (attrs as unknown as BatchNormTrainingAttrs).epsilon;

/**
 * Rows per block of the per-channel reductions: each channel's column of a block (≈16 KB, in the first
 * level cache) is summed into locals, then added to the channel's total. Summing row by row into a
 * per-channel array instead loads and stores that array for every value: 2.4 ns per value here, against 1.2.
 */
export function rowsPerBlock(channels: number): number {
  return Math.max(1, Math.floor(4096 / channels));
}

/** 1/√(σ² + ε) per channel, from stats = [μ (C), σ² (C)]. */
function inverseStd(stats: Float32Array, channels: number, epsilon: number): Float64Array {
  const inv = new Float64Array(channels);
  for (let c = 0; c < channels; c++) inv[c] = 1 / Math.sqrt(stats[channels + c] + epsilon);
  return inv;
}

/** The batch mean and biased variance of every channel into stats [2, C]. */
function moments(x: Float32Array, stats: Float32Array): void {
  const channels = stats.length / 2;
  const rows = x.length / channels;
  const s1 = new Float64Array(channels);
  const s2 = new Float64Array(channels);
  const block = rowsPerBlock(channels);
  for (let r0 = 0; r0 < rows; r0 += block) {
    const end = Math.min(rows, r0 + block) * channels;
    for (let c = 0; c < channels; c++) {
      const shift = x[c];
      let a = 0;
      let b = 0;
      for (let i = r0 * channels + c; i < end; i += channels) {
        const d = x[i] - shift;
        a += d;
        b += d * d;
      }
      s1[c] += a;
      s2[c] += b;
    }
  }
  for (let c = 0; c < channels; c++) {
    const shiftedMean = s1[c] / rows;
    stats[c] = x[c] + shiftedMean;
    stats[channels + c] = Math.max(0, s2[c] / rows - shiftedMean * shiftedMean);
  }
}

/** x, γ, β → y, stats [2, C]. */
function training([x, scale, offset]: Float32Array[], [y, stats]: Float32Array[], attrs: NamedAttrMap): void {
  const channels = scale.length;
  const rows = x.length / channels;
  moments(x, stats);
  const inv = inverseStd(stats, channels, epsilonOf(attrs));
  const a = new Float64Array(channels);
  const b = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    a[c] = scale[c] * inv[c];
    b[c] = offset[c] - stats[c] * a[c];
  }
  for (let i = 0, r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++, i++) y[i] = x[i] * a[c] + b[c];
  }
}

/** dy, x, stats → dγ = Σ dy·x̂, dβ = Σ dy. */
function paramGrads([dy, x, stats]: Float32Array[], [dscale, doffset]: Float32Array[], attrs: NamedAttrMap): void {
  const channels = stats.length / 2;
  const rows = x.length / channels;
  const sumDy = new Float64Array(channels);
  const sumDyX = new Float64Array(channels);
  const block = rowsPerBlock(channels);
  for (let r0 = 0; r0 < rows; r0 += block) {
    const end = Math.min(rows, r0 + block) * channels;
    for (let c = 0; c < channels; c++) {
      const mean = stats[c];
      let a = 0;
      let b = 0;
      for (let i = r0 * channels + c; i < end; i += channels) {
        a += dy[i];
        b += dy[i] * (x[i] - mean);
      }
      sumDy[c] += a;
      sumDyX[c] += b;
    }
  }
  const inv = inverseStd(stats, channels, epsilonOf(attrs));
  for (let c = 0; c < channels; c++) {
    dscale[c] = sumDyX[c] * inv[c];
    doffset[c] = sumDy[c];
  }
}

/** dx = γ/√(σ² + ε)·(dy − dβ/M − x̂·dγ/M), as A·dy + B·(x − μ) + D per channel. */
function inputGrad([dy, x, stats, scale, dscale, doffset]: Float32Array[], [dx]: Float32Array[], attrs: NamedAttrMap): void {
  const channels = scale.length;
  const rows = x.length / channels;
  const inv = inverseStd(stats, channels, epsilonOf(attrs));
  const a = new Float64Array(channels);
  const b = new Float64Array(channels);
  const d = new Float64Array(channels);
  const mean = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    a[c] = scale[c] * inv[c];
    b[c] = (-a[c] * inv[c] * dscale[c]) / rows;
    d[c] = (-a[c] * doffset[c]) / rows;
    mean[c] = stats[c];
  }
  for (let i = 0, r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++, i++) dx[i] = a[c] * dy[i] + b[c] * (x[i] - mean[c]) + d[c];
  }
}

/** Each moving statistic m − (m − s)·(1 − momentum), rounded to float32 at every operation as tfjs-layers' float32 ops are. */
function movingStats([movingMean, movingVariance, stats]: Float32Array[], [mean, variance]: Float32Array[], attrs: NamedAttrMap): void {
  const decay = Math.fround(1 - (attrs as unknown as BatchNormMovingStatsAttrs).momentum);
  const channels = movingMean.length;
  const f = Math.fround;
  for (let c = 0; c < channels; c++) {
    mean[c] = f(movingMean[c] - f(f(movingMean[c] - stats[c]) * decay));
    variance[c] = f(movingVariance[c] - f(f(movingVariance[c] - stats[channels + c]) * decay));
  }
}

/**
 * On wasm, the elementwise passes go to XNNPACK's binary kernels (0.3 ns per value on this machine, where
 * these JavaScript loops take 2–4): y = (x − μ)·(γ/√(σ² + ε)) + β, as tfjs' own batchNorm rounds it, and
 * dx = (dy·A + (x − μ)·B) + D. The reductions stay the blocked loops above.
 */
function wasmTraining(): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const { x, scale, offset } = floatInputs(inputs, ['x', 'scale', 'offset'], BATCH_NORM_TRAINING, 'wasm');
    const wasm = backend as BackendWasm;
    return KernelComposer.composeAll('wasm', wasm, (k) => {
      const channels = channelsOf(x);
      const stats = k.empty([2, channels]);
      // Every heap view is read before the next allocation, which may grow the heap and detach them.
      const statsValues = wasm.typedArrayFromHeap(stats) as Float32Array;
      moments(wasm.typedArrayFromHeap(x) as Float32Array, statsValues);
      const inv = inverseStd(statsValues, channels, epsilonOf(attrs));
      const gamma = wasm.typedArrayFromHeap(scale) as Float32Array;
      const factorValues = Float32Array.from(inv, (v, c) => gamma[c] * v);
      const meanValues = statsValues.slice(0, channels);
      const mean = k.constant(meanValues, [channels]);
      const factor = k.constant(factorValues, [channels]);
      const centered = k.run('Sub', { a: x, b: mean });
      const scaled = k.run('Multiply', { a: centered, b: factor });
      k.dispose(centered);
      return [k.run('Add', { a: scaled, b: offset }), stats];
    });
  };
}

function wasmInputGrad(): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const { dy, x, stats, scale, dscale, doffset } = floatInputs(inputs, ['dy', 'x', 'stats', 'scale', 'dscale', 'doffset'], BATCH_NORM_INPUT_GRAD, 'wasm');
    const wasm = backend as BackendWasm;
    return KernelComposer.compose('wasm', wasm, (k) => {
      const channels = channelsOf(x);
      const rows = tf.util.sizeFromShape(x.shape) / channels;
      const [s, g, dg, db] = [stats, scale, dscale, doffset].map((t) => wasm.typedArrayFromHeap(t) as Float32Array);
      const inv = inverseStd(s, channels, epsilonOf(attrs));
      const a = Float32Array.from(inv, (v, c) => g[c] * v);
      const b = Float32Array.from(inv, (v, c) => (-g[c] * v * v * dg[c]) / rows);
      const d = Float32Array.from(inv, (v, c) => (-g[c] * v * db[c]) / rows);
      const mean = s.slice(0, channels);
      const centered = k.run('Sub', { a: x, b: k.constant(mean, [channels]) });
      const fromX = k.run('Multiply', { a: centered, b: k.constant(b, [channels]) });
      k.dispose(centered);
      const fromDy = k.run('Multiply', { a: dy, b: k.constant(a, [channels]) });
      const sum = k.run('Add', { a: fromDy, b: fromX });
      k.dispose(fromDy);
      k.dispose(fromX);
      return k.run('Add', { a: sum, b: k.constant(d, [channels]) });
    });
  };
}

export function hostBatchNormKernels(backendName: HostBackendName): Record<string, KernelConfig> {
  const config = (
    kernelName: string,
    names: string[],
    shapes: (inputs: TensorInfo[]) => number[][],
    body: Parameters<typeof hostKernel>[4],
  ): KernelConfig => ({ kernelName, backendName, kernelFunc: hostKernel(backendName, kernelName, names, shapes, body) });
  return {
    [BATCH_NORM_TRAINING]:
      backendName === 'wasm'
        ? { kernelName: BATCH_NORM_TRAINING, backendName, kernelFunc: wasmTraining() }
        : config(BATCH_NORM_TRAINING, ['x', 'scale', 'offset'], ([x]) => [x.shape, [2, channelsOf(x)]], training),
    [BATCH_NORM_PARAM_GRADS]: config(BATCH_NORM_PARAM_GRADS, ['dy', 'x', 'stats'], ([, x]) => [[channelsOf(x)], [channelsOf(x)]], paramGrads),
    [BATCH_NORM_INPUT_GRAD]:
      backendName === 'wasm'
        ? { kernelName: BATCH_NORM_INPUT_GRAD, backendName, kernelFunc: wasmInputGrad() }
        : config(BATCH_NORM_INPUT_GRAD, ['dy', 'x', 'stats', 'scale', 'dscale', 'doffset'], ([, x]) => [x.shape], inputGrad),
    [BATCH_NORM_MOVING_STATS]: config(BATCH_NORM_MOVING_STATS, ['movingMean', 'movingVariance', 'stats'], ([m]) => [m.shape, m.shape], movingStats),
  };
}
