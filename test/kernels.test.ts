/**
 * The project's kernels against tfjs' stock cpu kernels, and its gradients against values worked out
 * by hand, with leak checks on both tfjs' tensor count and the backend's own data count.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setupBackend } from '../src/engine/backend.js';
import { fusedBatchNormGradConfig } from '../src/engine/gradients/fused_batch_norm_grad.js';
import { batchNormTraining } from '../src/engine/ops/batch_norm_training.js';
import { registerProjectKernels, unregisterProjectKernels } from '../src/engine/registry.js';
import { PACK, pack } from '../src/engine/ops/pack.js';
import { conv2dBackpropFilterConfig } from '../src/engine/composite/conv2d_backprop_filter.js';
import { filterGradientByConvolution, filterGradientByConvolutionPays, filterGradientWasm } from '../src/engine/wasm/conv2d_backprop_filter.js';
import { BN_SHAPES, batchNormStep } from './helpers/batchnorm.js';
import { randomArray, relativeError, runKernel } from './helpers/gradcheck.js';

const TOLERANCE = 1e-4;
/** tfjs-core's own FusedBatchNorm gradient, taken before setupBackend registers the project's. */
const STOCK_FUSED_BATCH_NORM_GRAD = tf.getGradient(tf.FusedBatchNorm);

interface ConvCase {
  title: string;
  x: [number, number, number, number]; // N, H, W, Cin
  filter: [number, number, number, number]; // KH, KW, Cin, Cout
  strides: number | [number, number];
  pad: 'same' | 'valid';
}

const CASES: ConvCase[] = [
  { title: '1×1 stride 1, batch 2', x: [2, 6, 6, 5], filter: [1, 1, 5, 7], strides: 1, pad: 'same' },
  { title: '3×3 same stride 1, batch 1, odd sizes', x: [1, 7, 5, 3], filter: [3, 3, 3, 5], strides: 1, pad: 'same' },
  { title: '3×3 valid stride 1, batch 3', x: [3, 9, 8, 6], filter: [3, 3, 6, 10], strides: 1, pad: 'valid' },
  { title: '3×3 valid stride 2 (the downsample module), odd input', x: [2, 11, 11, 7], filter: [3, 3, 7, 9], strides: 2, pad: 'valid' },
  { title: '3×3 same stride 2, even input (padding 0 top, 1 bottom)', x: [2, 8, 10, 5], filter: [3, 3, 5, 6], strides: 2, pad: 'same' },
  { title: '3×3 same stride 2, odd input', x: [1, 9, 7, 3], filter: [3, 3, 3, 2], strides: 2, pad: 'same' },
  { title: '1×1 stride 2', x: [2, 7, 6, 3], filter: [1, 1, 3, 5], strides: 2, pad: 'valid' },
  { title: '5×3 same, strides [2, 1]', x: [2, 9, 6, 3], filter: [5, 3, 3, 4], strides: [2, 1], pad: 'same' },
  { title: '2×2 valid stride 3, rows left over', x: [2, 10, 11, 2], filter: [2, 2, 2, 3], strides: 3, pad: 'valid' },
  { title: '3×3 same stride 3 (a residue whose first rows of dy are skipped)', x: [2, 10, 11, 3], filter: [3, 3, 3, 4], strides: 3, pad: 'same' },
  // wasm splits the filter gradient into chunks of ≈1,024 grid positions: 3 + 2 images, then 8 + 1.
  { title: '3×3 same stride 1, batch 5 in two chunks, the second smaller', x: [5, 16, 16, 3], filter: [3, 3, 3, 4], strides: 1, pad: 'same' },
  { title: '3×3 same stride 2, batch 9 in two chunks (8 + 1)', x: [9, 21, 19, 2], filter: [3, 3, 2, 3], strides: 2, pad: 'same' },
];

function filterGradient(c: ConvCase): Promise<Float32Array> {
  const y = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad).outShape;
  return runKernel(
    tf.Conv2DBackpropFilter,
    { x: [randomArray(c.x, 1), c.x], dy: [randomArray(y, 2), y] },
    { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', filterShape: c.filter },
  );
}

function inputGradient(c: ConvCase): Promise<Float32Array> {
  const y = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad).outShape;
  return runKernel(
    tf.Conv2DBackpropInput,
    { dy: [randomArray(y, 2), y], filter: [randomArray(c.filter, 3), c.filter] },
    { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', inputShape: c.x },
  );
}

/** The stock cpu kernel's answer: the cpu backend with the project's kernels taken off. */
async function stockCpu<T>(f: () => Promise<T>): Promise<T> {
  await tf.setBackend('cpu');
  unregisterProjectKernels('cpu');
  try {
    return await f();
  } finally {
    registerProjectKernels('cpu');
  }
}

beforeAll(async () => {
  await setupBackend('cpu'); // registers the cpu kernels and the gradients
  await setupBackend('wasm');
});

describe.each(['wasm', 'cpu'] as const)('Conv2DBackpropFilter on %s equals the stock cpu kernel', (backend) => {
  it.each(CASES)('$title', async (c) => {
    const expected = await stockCpu(() => filterGradient(c));
    await tf.setBackend(backend);
    expect(relativeError(await filterGradient(c), expected)).toBeLessThanOrEqual(TOLERANCE);
  });
});

// wasm takes one of two ways per layer (filterGradientByConvolutionPays): each is checked on every case.
describe.each([
  ['chunked products', filterGradientWasm],
  ['one convolution', filterGradientByConvolution],
] as const)('Conv2DBackpropFilter on wasm by %s equals the stock cpu kernel', (_, body) => {
  it.each(CASES)('$title', async (c) => {
    const expected = await stockCpu(() => filterGradient(c));
    await tf.setBackend('wasm');
    tf.unregisterKernel(tf.Conv2DBackpropFilter, 'wasm');
    tf.registerKernel(conv2dBackpropFilterConfig('wasm', body));
    try {
      const before = tf.engine().backend.numDataIds();
      expect(relativeError(await filterGradient(c), expected)).toBeLessThanOrEqual(TOLERANCE);
      expect(tf.engine().backend.numDataIds()).toBe(before);
    } finally {
      unregisterProjectKernels('wasm');
      registerProjectKernels('wasm');
    }
  });
});

describe('the wasm filter gradient rule', () => {
  const info = (x: [number, number, number, number], f: [number, number, number, number], s: number) => tf.backend_util.computeConv2DInfo(x, f, s, 1, 'same');
  it("takes the convolution for the small models' 3×3 layers and keeps MiniGoogLeNet's and every 1×1 on the chunked products", () => {
    expect(filterGradientByConvolutionPays(info([16, 32, 32, 1], [3, 3, 1, 16], 1))).toBe(true);
    expect(filterGradientByConvolutionPays(info([16, 7, 7, 64], [3, 3, 64, 32], 1))).toBe(true);
    expect(filterGradientByConvolutionPays(info([16, 7, 7, 64], [1, 1, 64, 32], 1))).toBe(false);
    expect(filterGradientByConvolutionPays(info([64, 32, 32, 3], [3, 3, 3, 96], 1))).toBe(false);
    expect(filterGradientByConvolutionPays(info([64, 15, 15, 160], [3, 3, 160, 48], 1))).toBe(false);
  });
});

describe('Conv2DBackpropInput on wasm equals the stock cpu kernel', () => {
  it.each(CASES)('$title', async (c) => {
    const expected = await stockCpu(() => inputGradient(c));
    await tf.setBackend('wasm');
    expect(relativeError(await inputGradient(c), expected)).toBeLessThanOrEqual(TOLERANCE);
  });
});

describe('SplitV on wasm equals the stock cpu kernel', () => {
  const cases: Array<{ shape: number[]; sizes: number | number[]; axis: number; dtype: 'float32' | 'int32' }> = [
    { shape: [2, 5, 4, 7], sizes: [3, 4], axis: 3, dtype: 'float32' }, // Concatenate's gradient: channels
    { shape: [2, 5, 4, 7], sizes: [1, -1, 2], axis: 1, dtype: 'float32' },
    { shape: [6, 3], sizes: 3, axis: 0, dtype: 'int32' },
    { shape: [3, 8], sizes: [0, 8], axis: -1, dtype: 'float32' },
  ];
  it.each(cases)('shape $shape into $sizes along axis $axis ($dtype)', async ({ shape, sizes, axis, dtype }) => {
    const values = randomArray(shape, 4).map((v) => (dtype === 'int32' ? Math.round(v * 100) : v));
    const split = async (): Promise<number[][]> => {
      const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
      const x = tf.tensor(values, shape, dtype);
      const parts = tf.split(x, sizes, axis);
      const out = await Promise.all(parts.map(async (p) => [...p.shape, ...(await p.data())]));
      tf.dispose([x, ...parts]);
      expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
      return out;
    };
    await tf.setBackend('cpu');
    const expected = await split();
    await tf.setBackend('wasm');
    expect(await split()).toEqual(expected);
  });
});

describe('Conv2DBackpropFilter errors', () => {
  it('rejects NCHW, naming what it received', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 3, 4, 4]);
    const dy = tf.zeros([1, 2, 4, 4]);
    expect(() => tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NCHW', filterShape: [1, 1, 3, 2] })).toThrow(
      'Conv2DBackpropFilter on wasm (trainpool) supports dataFormat NHWC only. Received: NCHW',
    );
    tf.dispose([x, dy]);
  });
});

/**
 * Sum and Mean gradients. With f(x) = Σ w ⊙ reduce(x), ∂f/∂x[i] is w at i's reduced position (divided by
 * the number of reduced elements for Mean); e.g. x 2×3, Sum over axis 1, w = [a, b] gives [[a, a, a], [b, b, b]].
 */
describe.each(['wasm', 'cpu'] as const)('Sum and Mean gradients on %s', (backend) => {
  const shape = [2, 3, 4];
  const axesCases: Array<{ axis: number | number[] | undefined; keepDims: boolean }> = [
    { axis: 1, keepDims: false },
    { axis: [0, 2], keepDims: true },
    { axis: -1, keepDims: false },
    { axis: undefined, keepDims: false },
    { axis: [0, 1, 2], keepDims: true },
  ];

  it('x 2×3, Sum over axis 1 with weights [2, −3] gives [[2, 2, 2], [−3, −3, −3]]', async () => {
    await tf.setBackend(backend);
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.sum(x, 1), tf.tensor1d([2, -3]))))(tf.zeros([2, 3]));
    expect(Array.from(await g.data())).toEqual([2, 2, 2, -3, -3, -3]);
    g.dispose();
  });

  it.each(['sum', 'mean'] as const)('%s over several axes and keepDims matches the worked-out broadcast', async (op) => {
    await tf.setBackend(backend);
    for (const { axis, keepDims } of axesCases) {
      const axes = axis === undefined ? [0, 1, 2] : (Array.isArray(axis) ? axis : [axis]).map((a) => (a + 3) % 3);
      const reducedShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const count = axes.reduce((n, a) => n * shape[a], 1);
      const w = randomArray(reducedShape, 7);
      const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
      const x = tf.tensor(randomArray(shape, 8), shape);
      const weights = tf.tensor(w, keepDims ? reducedShape : reducedShape.filter((_, i) => !axes.includes(i)));
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul((op === 'sum' ? tf.sum : tf.mean)(t, axis, keepDims), weights)))(x);
      const got = await g.data();
      tf.dispose([x, weights, g]);
      expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);

      const expected = new Float32Array(24);
      for (let i = 0; i < 24; i++) {
        const loc = [Math.floor(i / 12), Math.floor(i / 4) % 3, i % 4].map((c, d) => (axes.includes(d) ? 0 : c));
        const wi = (loc[0] * reducedShape[1] + loc[1]) * reducedShape[2] + loc[2];
        expected[i] = op === 'sum' ? w[wi] : Math.fround(w[wi] / count);
      }
      expect(Array.from(got), `axis ${JSON.stringify(axis)} keepDims ${keepDims}`).toEqual(Array.from(expected));
    }
  });
});

describe('FusedBatchNorm gradient', () => {
  it('equals tfjs-core 4.22 stock gradient (which tiles) for every input, on cpu', async () => {
    await tf.setBackend('cpu');
    const shape = [2, 3, 4, 5];
    const f = (x: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor, offset: tf.Tensor, scale: tf.Tensor) =>
      tf.sum(tf.mul(tf.batchNorm(x, mean, variance, offset, scale, 1e-3), tf.tensor(randomArray(shape, 9), shape)));
    const inputs = () => [
      tf.tensor(randomArray(shape, 10), shape),
      tf.tensor(randomArray([5], 11)),
      tf.abs(tf.tensor(randomArray([5], 12))),
      tf.tensor(randomArray([5], 13)),
      tf.tensor(randomArray([5], 14)),
    ];
    const gradients = async () => {
      const args = inputs();
      const grads = tf.grads(f)(args);
      const values = await Promise.all(grads.map((g) => g.data()));
      tf.dispose([...args, ...grads]);
      return values.map((v) => Array.from(v));
    };
    const ours = await gradients();
    tf.registerGradient(STOCK_FUSED_BATCH_NORM_GRAD);
    try {
      expect(ours).toEqual(await gradients());
    } finally {
      tf.registerGradient(fusedBatchNormGradConfig);
    }
  });
});

/** The host kernels (src/engine/wasm-and-cpu/): JavaScript loops over the wasm heap or the cpu backend's arrays. */
describe.each(['wasm', 'cpu'] as const)('BatchNormalization, ReLU gradient and column Sum on %s', (backend) => {
  it.each(BN_SHAPES.map((shape) => ({ shape, title: shape.join('×') })))(
    'a BatchNormalization layer trained on a $title batch gives the stock cpu path’s loss, gradients and moving statistics, leaving nothing behind',
    async ({ shape }) => {
      const expected = await stockCpu(() => batchNormStep(shape));
      await tf.setBackend(backend);
      const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
      const profile = await tf.profile(async () => {
        const got = await batchNormStep(shape);
        const names = ['loss', 'dgamma', 'dbeta', 'dx', 'moving_mean', 'moving_variance'];
        const errors = Object.fromEntries(names.map((n, i) => [n, relativeError(got[i], expected[i])]));
        for (const n of names) expect(errors[n], JSON.stringify(errors)).toBeLessThanOrEqual(TOLERANCE);
        return [];
      });
      expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
      // The fused path ran (not tfjs' composite, which would pass the comparison too): its four ops, no Mean.
      const kernels = new Set(profile.kernels.map((k) => k.name));
      for (const name of ['TrainpoolBatchNormTraining', 'TrainpoolBatchNormParamGrads', 'TrainpoolBatchNormInputGrad', 'TrainpoolBatchNormMovingStats']) {
        expect(kernels.has(name), `${name} in ${[...kernels].join(', ')}`).toBe(true);
      }
      expect(kernels.has('Mean')).toBe(false);
    },
  );

  it('the batch variance keeps its digits under a mean 10⁴ times the spread (two-pass double-precision reference)', async () => {
    await tf.setBackend(backend);
    const shape = [4, 6, 5, 12];
    const values = randomArray(shape, 9).map((v, i) => 3e4 + (i % 12) + v * 3);
    const x = tf.tensor(values, shape);
    const [ones, zeros] = [tf.ones([12]), tf.zeros([12])];
    const [y, stats] = batchNormTraining(x, ones, zeros, 1e-3);
    const got = (await stats.data()) as Float32Array;
    const rows = values.length / 12;
    const want = new Float32Array(24);
    for (let c = 0; c < 12; c++) {
      let s = 0;
      for (let r = 0; r < rows; r++) s += values[r * 12 + c];
      const mean = s / rows;
      let q = 0;
      for (let r = 0; r < rows; r++) q += (values[r * 12 + c] - mean) ** 2;
      want[c] = mean;
      want[12 + c] = q / rows;
    }
    expect(relativeError(got.subarray(12), want.subarray(12))).toBeLessThanOrEqual(1e-6);
    expect(relativeError(got.subarray(0, 12), want.subarray(0, 12))).toBeLessThanOrEqual(1e-7);
    tf.dispose([x, ones, zeros, y, stats]);
  });

  it('the ReLU gradient is dy·step(x): dy where x > 0, 0 for x ≤ 0 and −∞, dy at +∞, NaN where x is NaN', async () => {
    await tf.setBackend(backend);
    const x = tf.tensor1d([-2, -0, 0, 1e-30, 3, NaN, 5, -7, Infinity, -Infinity]);
    const dy = tf.tensor1d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const profile = await tf.profile(async () => {
      const dx = tf.grad((t: tf.Tensor) => tf.relu(t))(x, dy);
      expect(Array.from(await dx.data())).toEqual([0, 0, 0, 4, 5, NaN, 7, 0, 9, 0]);
      dx.dispose();
      return [];
    });
    // cpu runs the project's one-pass kernel; wasm keeps step and multiply, which XNNPACK runs faster.
    const names = profile.kernels.map((k) => k.name);
    if (backend === 'cpu') expect(names).toContain('TrainpoolReluGrad');
    else expect(names).toEqual(expect.arrayContaining(['Step', 'Multiply']));
    tf.dispose([x, dy]);
  });

  const sums: Array<{ shape: number[]; axis: number | number[]; keepDims: boolean; dtype: 'float32' | 'int32' }> = [
    { shape: [2, 5, 7, 12], axis: [0, 1, 2], keepDims: false, dtype: 'float32' }, // a bias gradient
    { shape: [3, 4, 5], axis: [1, 0], keepDims: true, dtype: 'float32' },
    { shape: [6, 10], axis: 0, keepDims: false, dtype: 'float32' },
    { shape: [3, 4, 5], axis: 2, keepDims: false, dtype: 'float32' }, // not leading axes: the stock kernel
    { shape: [3, 4, 5], axis: [0, 2], keepDims: false, dtype: 'float32' },
    { shape: [4, 6], axis: 0, keepDims: false, dtype: 'int32' },
  ];
  it.each(sums)('Sum of $dtype $shape over $axis (keepDims $keepDims) equals the stock cpu Sum', async ({ shape, axis, keepDims, dtype }) => {
    const values = randomArray(shape, 8).map((v) => (dtype === 'int32' ? Math.round(v * 50) : v));
    const run = async () => {
      const x = tf.tensor(values, shape, dtype);
      const s = tf.sum(x, axis, keepDims);
      const out = { shape: s.shape, dtype: s.dtype, values: Array.from(await s.data()) };
      tf.dispose([x, s]);
      return out;
    };
    const expected = await stockCpu(run);
    await tf.setBackend(backend);
    const got = await run();
    expect({ shape: got.shape, dtype: got.dtype }).toEqual({ shape: expected.shape, dtype: expected.dtype });
    expect(relativeError(got.values, expected.values)).toBeLessThanOrEqual(dtype === 'int32' ? 0 : 1e-6);
  });
});

/** dx of `pool` on the current backend for x = `values` and a seeded dy; fails on a leaked tensor. */
async function poolGradient(
  pool: typeof tf.avgPool,
  values: Float32Array,
  shape: number[],
  filter: number,
  strides: number,
  pad: 'same' | 'valid',
  dySeed: number,
): Promise<number[]> {
  const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
  const x = tf.tensor4d(values, shape as [number, number, number, number]);
  const outShape = tf.backend_util.computePool2DInfo(x.shape, filter, strides, 1, pad).outShape;
  const dy = tf.tensor(randomArray(outShape, dySeed), outShape);
  const dx = tf.grad((t: tf.Tensor) => pool(t as tf.Tensor4D, filter, strides, pad))(x, dy);
  const out = Array.from(await dx.data());
  tf.dispose([x, dy, dx]);
  expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
  return out;
}

describe('AvgPoolGrad on wasm equals the stock cpu kernel', () => {
  const cases: Array<{ title: string; shape: number[]; filter: number; strides: number; pad: 'same' | 'valid' }> = [
    { title: 'global 7×7 (MiniGoogLeNet’s last pooling)', shape: [3, 7, 7, 5], filter: 7, strides: 7, pad: 'valid' },
    { title: '3×3/2 valid, overlapping windows, rows left over', shape: [2, 10, 9, 3], filter: 3, strides: 2, pad: 'valid' },
    { title: '3×3/2 same (padded: the stock kernel)', shape: [2, 8, 7, 3], filter: 3, strides: 2, pad: 'same' },
  ];
  it.each(cases)('$title', async ({ shape, filter, strides, pad }) => {
    const run = () => poolGradient(tf.avgPool, randomArray(shape, 7), shape, filter, strides, pad, 8);
    const expected = await stockCpu(run);
    await tf.setBackend('wasm');
    expect(relativeError(await run(), expected)).toBeLessThanOrEqual(1e-6);
  });
});

describe('MaxPoolGrad on wasm equals the stock cpu kernel', () => {
  const cases: Array<{ title: string; shape: number[]; filter: number; strides: number; pad: 'same' | 'valid'; ties: boolean }> = [
    { title: '3×3/2 valid, odd input (the downsample module)', shape: [2, 11, 11, 5], filter: 3, strides: 2, pad: 'valid', ties: false },
    { title: '3×3/2 same, even input', shape: [2, 8, 10, 3], filter: 3, strides: 2, pad: 'same', ties: false },
    { title: '2×2/1 valid, overlapping windows', shape: [1, 6, 5, 4], filter: 2, strides: 1, pad: 'valid', ties: false },
    { title: '3×3/2 valid with ties (ReLU zeros and repeated values): the first maximum takes it', shape: [2, 9, 9, 6], filter: 3, strides: 2, pad: 'valid', ties: true },
  ];
  it.each(cases)('$title', async ({ shape, filter, strides, pad, ties }) => {
    const values = randomArray(shape, 5).map((v) => (ties ? Math.max(0, Math.round(v * 2)) : v));
    const run = () => poolGradient(tf.maxPool, values, shape, filter, strides, pad, 6);
    const expected = await stockCpu(run);
    await tf.setBackend('wasm');
    const got = await run();
    expect(relativeError(got, expected)).toBeLessThanOrEqual(1e-6);
    if (ties) expect(got.filter((v) => v !== 0).length, 'ties must not spread the gradient').toBe(expected.filter((v) => v !== 0).length);
  });

  it('a window of only NaN passes no gradient, as on cpu; one NaN among numbers is skipped', async () => {
    // Two 2×2 windows of a 1×2×4×1 input: [[NaN, NaN, NaN, 4], [NaN, NaN, 2, NaN]].
    const x = [NaN, NaN, NaN, 4, NaN, NaN, 2, NaN];
    const run = async () => {
      const t = tf.tensor4d(x, [1, 2, 4, 1]);
      const dx = tf.grad((u: tf.Tensor) => tf.maxPool(u as tf.Tensor4D, 2, 2, 'valid'))(t, tf.tensor4d([5, 7], [1, 1, 2, 1]));
      const out = Array.from(await dx.data());
      tf.dispose([t, dx]);
      return out;
    };
    const expected = await stockCpu(run);
    await tf.setBackend('wasm');
    expect(await run()).toEqual(expected);
    expect(expected).toEqual([0, 0, 0, 7, 0, 0, 0, 0]);
  });
});

describe('Identity on wasm', () => {
  it('shares the data of its input (no copy), which outlives the input, and frees it with the last reference', async () => {
    await tf.setBackend('wasm');
    const before = tf.engine().backend.numDataIds();
    const x = tf.tensor1d([1, 2, 3]);
    const y = tf.clone(x);
    expect(tf.engine().backend.numDataIds()).toBe(before + 1); // one heap allocation for both
    x.dispose();
    expect(Array.from(await y.data())).toEqual([1, 2, 3]);
    y.dispose();
    expect(tf.engine().backend.numDataIds()).toBe(before);
    const strings = tf.tensor(['a', 'b']);
    const s = tf.clone(strings); // strings go to the stock kernel
    expect(await s.data()).toEqual(['a', 'b']);
    tf.dispose([strings, s]);
    expect(tf.engine().backend.numDataIds()).toBe(before);
  });
});

describe.each(['wasm', 'cpu'] as const)('Pack on %s', (backend) => {
  it('lays float32 tensors of any shapes end to end, as concat of their flattenings does, in one kernel', async () => {
    await tf.setBackend(backend);
    const shapes = [[2, 3], [1], [0], [2, 2, 2], [5]];
    const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
    const tensors = shapes.map((s, i) => tf.tensor(randomArray(s, 20 + i), s));
    const profile = await tf.profile(async () => {
      const packed = pack(tensors);
      const expected = tf.tidy(() => tf.concat(tensors.map((t) => tf.reshape(t, [-1]))));
      expect(packed.shape).toEqual([20]);
      expect(Array.from(await packed.data())).toEqual(Array.from(await expected.data()));
      tf.dispose([packed, expected]);
      return [];
    });
    expect(profile.kernels.filter((k) => k.name === PACK)).toHaveLength(1);
    tf.dispose(tensors);
    expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
  });

  it('refuses other dtypes, naming the one received', async () => {
    await tf.setBackend(backend);
    const t = tf.tensor1d([1, 2], 'int32');
    expect(() => pack([t])).toThrow(`TrainpoolPack on ${backend} packs float32 tensors. Received: int32 [2]`);
    t.dispose();
  });
});
