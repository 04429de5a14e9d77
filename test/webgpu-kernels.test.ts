/**
 * The project's webgpu kernels (src/engine/webgpu/) against tfjs' stock cpu backend, on fixed and
 * seeded-random shapes, within 1e-4 relative; the GPU work counters on a known op sequence; how many
 * dispatches the fused BatchNormalization takes; and no tensor or GPU buffer left behind.
 *
 * Runs on any WebGPU adapter; CI uses lavapipe (eval "$(bash tools/soft-gpu.sh)") with
 * TRAINPOOL_REQUIRE_WEBGPU=1. Shapes are small because lavapipe is a CPU pretending to be a GPU.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
import { setupBackend, type BackendHandle } from '../src/engine/backend.js';
import { batchNormTraining } from '../src/engine/ops/batch_norm_training.js';
import { WEBGPU_FORWARD_KERNELS, registerProjectKernels, unregisterProjectKernels } from '../src/engine/registry.js';
import { pack } from '../src/engine/ops/pack.js';
import { buildModel } from '../src/model/minigooglenet.js';
import { countGpuWork } from '../src/engine/diagnostics/webgpu-counters.js';
import { Rng } from '../src/util/random.js';
import { BN_SHAPES, batchNormStep } from './helpers/batchnorm.js';
import { gradientsOf, randomArray, relativeError, runKernel } from './helpers/gradcheck.js';
import { webgpuAvailability } from './helpers/webgpu.js';

const gpu = await webgpuAvailability('webgpu-kernels.test.ts');
const TOLERANCE = 1e-4;

describe.runIf(!gpu.available && gpu.required)('webgpu kernels, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('finds an adapter', () => {
    expect.fail(`TRAINPOOL_REQUIRE_WEBGPU=1 but ${gpu.skipReason.split(';')[0]}`);
  });
});

interface ConvCase {
  title: string;
  x: number[];
  filter: number[];
  strides: number | [number, number];
  pad: 'same' | 'valid';
}

const FIXED_CONV: ConvCase[] = [
  { title: '3×3 same stride 1, odd sizes', x: [2, 7, 5, 3], filter: [3, 3, 3, 5], strides: 1, pad: 'same' },
  { title: '3×3 valid stride 2 (a downsample module)', x: [2, 9, 9, 4], filter: [3, 3, 4, 6], strides: 2, pad: 'valid' },
  { title: '3×3 same stride 2 (asymmetric padding)', x: [2, 10, 10, 20], filter: [3, 3, 20, 17], strides: 2, pad: 'same' },
  { title: '1×1, more than one 64-wide tile each way', x: [3, 8, 8, 70], filter: [1, 1, 70, 66], strides: 1, pad: 'same' },
  { title: '3×3 same, filter gradient split over K', x: [4, 16, 16, 24], filter: [3, 3, 24, 40], strides: 1, pad: 'same' },
  // Strided input gradients run one group per residue class of dx's rows and columns.
  { title: '1×1 stride 2: residues with no tap, whose dx is zero', x: [2, 7, 6, 3], filter: [1, 1, 3, 5], strides: 2, pad: 'valid' },
  { title: '3×3 same stride 3: residues of 1 tap, some dy rows before the first', x: [2, 10, 11, 3], filter: [3, 3, 3, 4], strides: 3, pad: 'same' },
  { title: '3×3 valid stride 2, groups of several 64-row tiles and unequal sizes', x: [3, 21, 19, 5], filter: [3, 3, 5, 70], strides: 2, pad: 'valid' },
  { title: '5×3 same, strides [2, 1]', x: [2, 9, 6, 3], filter: [5, 3, 3, 4], strides: [2, 1], pad: 'same' },
];

/** Seeded shapes: batch 1–3, 3–11 pixels a side, 1–40 channels in and out, 1×1 or 3×3, stride 1 or 2. */
function randomConvCases(count: number, seed: number): ConvCase[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => {
    const k = rng.int(2) === 0 ? 1 : 3;
    const x = [1 + rng.int(3), 3 + rng.int(9), 3 + rng.int(9), 1 + rng.int(40)];
    const c: ConvCase = { title: '', x, filter: [k, k, x[3], 1 + rng.int(40)], strides: 1 + rng.int(2), pad: rng.int(2) === 0 ? 'same' : 'valid' };
    c.title = `random x ${x.join('×')}, filter ${c.filter.join('×')}, stride ${c.strides}, ${c.pad}`;
    return c;
  });
}

const CONV_CASES = [...FIXED_CONV, ...randomConvCases(4, 12)];

/** [dW, dx] for one case on the current backend, from seeded inputs. */
async function convGradients(c: ConvCase): Promise<[Float32Array, Float32Array]> {
  const dyShape = tf.backend_util.computeConv2DInfo(c.x as [number, number, number, number], c.filter as [number, number, number, number], c.strides, 1, c.pad).outShape;
  const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC' };
  return [
    await runKernel(tf.Conv2DBackpropFilter, { x: [randomArray(c.x, 1), c.x], dy: [randomArray(dyShape, 2), dyShape] }, { ...attrs, filterShape: c.filter }),
    await runKernel(tf.Conv2DBackpropInput, { dy: [randomArray(dyShape, 2), dyShape], filter: [randomArray(c.filter, 3), c.filter] }, { ...attrs, inputShape: c.x }),
  ];
}

/** [fused conv2d with a bias, conv2d] of one case on the current backend, from seeded inputs. */
async function convForward(c: ConvCase): Promise<[Float32Array, Float32Array]> {
  const channels = c.filter[3];
  const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', dilations: 1 };
  return [
    await runKernel(tf.FusedConv2D, { x: [randomArray(c.x, 1), c.x], filter: [randomArray(c.filter, 3), c.filter], bias: [randomArray([channels], 4), [channels]] }, { ...attrs, activation: 'linear' }),
    await runKernel(tf.Conv2D, { x: [randomArray(c.x, 1), c.x], filter: [randomArray(c.filter, 3), c.filter] }, attrs),
  ];
}

/** Sums over every axis but the last (the project's kernel; the second over several row chunks), then one tfjs keeps. */
const SUM_CASES: Array<[number[], number[]]> = [
  [[2, 5, 7, 12], [0, 1, 2]],
  [[64, 8, 8, 40], [0, 1, 2]],
  [[6, 10], [0]],
  [[3, 4, 5], [2]],
];

describe.skipIf(!gpu.available)(gpu.available ? `project webgpu kernels on ${gpu.detail}` : 'project webgpu kernels (skipped)', () => {
  const expected = new Map<string, Float32Array[]>();
  let handle: BackendHandle;

  beforeAll(async () => {
    await setupBackend('cpu');
    unregisterProjectKernels('cpu'); // tfjs' own cpu kernels are the reference
    for (const c of CONV_CASES) expected.set(c.title, await convGradients(c));
    for (const c of CONV_CASES) expected.set(`forward ${c.title}`, await convForward(c));
    for (const shape of BN_SHAPES) expected.set(`bn ${shape}`, await batchNormStep(shape));
    for (const [shape, axis] of SUM_CASES) {
      expected.set(`sum ${shape} ${axis}`, [await runKernel(tf.Sum, { x: [randomArray(shape, 8), shape] }, { axis, keepDims: false })]);
    }
    handle = await setupBackend('webgpu');
  });
  afterAll(async () => {
    await handle?.close();
  });

  it.each(CONV_CASES)('Conv2DBackpropFilter and Conv2DBackpropInput, $title, equal the stock cpu kernels', async (c) => {
    const [dw, dx] = await convGradients(c); // runKernel fails the test on a leaked tensor
    const [dwCpu, dxCpu] = expected.get(c.title)!;
    expect(relativeError(dw, dwCpu)).toBeLessThanOrEqual(TOLERANCE);
    expect(relativeError(dx, dxCpu)).toBeLessThanOrEqual(TOLERANCE);
  });

  it.each(CONV_CASES)('the opt-in forward convolution, $title, equals the stock cpu kernels with and without a bias', async (c) => {
    registerProjectKernels('webgpu', WEBGPU_FORWARD_KERNELS);
    try {
      const profile = await tf.profile(async () => {
        const [fused, plain] = await convForward(c);
        const [fusedCpu, plainCpu] = expected.get(`forward ${c.title}`)!;
        expect(relativeError(fused, fusedCpu)).toBeLessThanOrEqual(TOLERANCE);
        expect(relativeError(plain, plainCpu)).toBeLessThanOrEqual(TOLERANCE);
        return [];
      });
      expect(profile.kernels.map((k) => k.name)).toEqual([tf.FusedConv2D, tf.Conv2D]);
    } finally {
      unregisterProjectKernels('webgpu', WEBGPU_FORWARD_KERNELS);
    }
  });

  it.each(BN_SHAPES.map((shape) => ({ shape, title: shape.join('×') })))(
    'BatchNormalization trained on a $title batch gives tfjs-layers’ loss, gradients and moving statistics, leaving no tensor behind',
    async ({ shape }) => {
      const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
      const got = await batchNormStep(shape);
      expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
      const names = ['loss', 'dgamma', 'dbeta', 'dx', 'moving_mean', 'moving_variance'];
      const errors = Object.fromEntries(names.map((n, i) => [n, relativeError(got[i], expected.get(`bn ${shape}`)![i])]));
      for (const n of names) expect(errors[n], JSON.stringify(errors)).toBeLessThanOrEqual(TOLERANCE);
    },
  );

  it.each(SUM_CASES.map(([shape, axis], i) => ({ shape, axis, keepDims: i % 2 === 1 })))(
    'Sum of a $shape tensor over axes $axis (keepDims $keepDims) equals the stock cpu Sum',
    async ({ shape, axis, keepDims }) => {
    const cpu = expected.get(`sum ${shape} ${axis}`)!;
    expect(relativeError(await runKernel(tf.Sum, { x: [randomArray(shape, 8), shape] }, { axis, keepDims }), cpu[0])).toBeLessThanOrEqual(TOLERANCE);
    },
  );

  it('the Relu gradient is dy where x > 0 and 0 elsewhere, NaN where x is NaN', async () => {
    const x = tf.tensor1d([-2, -0, 0, 1e-30, 3, NaN, 5, -7]);
    const dy = tf.tensor1d([1, 2, 3, 4, 5, 6, 7, 8]);
    const dx = tf.grad((t: tf.Tensor) => tf.relu(t))(x, dy);
    expect(Array.from(await dx.data())).toEqual([0, 0, 0, 4, 5, NaN, 7, 0]);
    tf.dispose([x, dy, dx]);
  });

  it('the BatchNormTraining op returns the batch mean and biased variance of every channel', async () => {
    const shape = [4, 6, 5, 12];
    const x = tf.tensor(randomArray(shape, 9).map((v) => 10 * v - 4), shape);
    const ones = tf.ones([12]);
    const zeros = tf.zeros([12]);
    const [y, stats] = batchNormTraining(x, ones, zeros, 1e-3);
    const got = (await stats.data()) as Float32Array;
    // Two-pass in double precision on the host.
    const values = await x.data();
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
    expect(stats.shape).toEqual([2, 12]);
    expect(relativeError(got, want)).toBeLessThanOrEqual(1e-6);
    tf.dispose([x, ones, zeros, y, stats]);
  });

  it('counts 2 dispatches and two 4 KiB tensor uploads for an add then a multiply of two fresh 1,024-value tensors, then 1 dispatch and no tensor upload on data already on the GPU', async () => {
    // 1,024 values: above tfjs' WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD (1,000), under which the op would run on the CPU.
    const a = tf.tensor1d(randomArray([1024], 1));
    const b = tf.tensor1d(randomArray([1024], 2));
    const first = await countGpuWork(async () => {
      const p = tf.mul(tf.add(a, b), b);
      await p.data();
      return p;
    });
    const mapped = first.counts.uploads.filter((u) => u.via === 'mapped').map((u) => u.bytes);
    const uniforms = first.counts.uploads.filter((u) => u.via === 'writeBuffer');
    expect({ dispatches: first.counts.dispatches, mapped, uniformWrites: uniforms.length }).toEqual({ dispatches: 2, mapped: [4096, 4096], uniformWrites: 2 });
    const second = await countGpuWork(async () => {
      const q = tf.sub(first.result, a);
      await q.data();
      return q;
    });
    expect({ dispatches: second.counts.dispatches, mapped: second.counts.uploads.filter((u) => u.via === 'mapped').length }).toEqual({ dispatches: 1, mapped: 0 });
    tf.dispose([a, b, first.result, second.result]);
  });

  it('Pack lays tensors computed on the GPU end to end with buffer copies, no dispatch, and leaves nothing behind', async () => {
    const shapes = [[40, 30], [1], [0], [3, 5, 7], [1100]];
    const inputs = shapes.map((sh, i) => tf.tensor(randomArray(sh, 30 + i), sh));
    const expected = Float32Array.from(await tf.tidy(() => tf.concat(inputs.map((t) => tf.reshape(t, [-1])))).data());
    const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
    // Computed on the GPU (doubled), so the packed values come from GPU buffers that are not reused early.
    const { result, counts } = await countGpuWork(async () => {
      const doubled = inputs.map((t) => tf.mul(t, 2));
      await Promise.all(doubled.map((t) => t.data())); // everything on the GPU before counting the pack alone
      return doubled;
    });
    expect(counts.dispatches).toBeGreaterThan(0);
    const packed = await countGpuWork(async () => {
      const p = pack(result);
      tf.dispose(result); // freed at once, as a tidy would: the queued copies still read their buffers
      const other = tf.tensor1d(randomArray([4096], 9));
      const big = tf.mul(other, 3); // wants a buffer of its own meanwhile
      const values = Float32Array.from(await p.data());
      tf.dispose([p, other, big]);
      return values;
    });
    expect(packed.counts.dispatches).toBe(1); // the multiply only
    expect(relativeError(packed.result, expected.map((v) => 2 * v))).toBe(0);
    expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
    tf.dispose(inputs);
  });

  it('a model trained one step through the fused BatchNormalization saves only tfjs-layers classes and its own weight names, which stock loadLayersModel reads back', async () => {
    const model = buildModel({ name: 'tiny', width: 16, height: 16, depth: 3, classes: 10, seed: 3 });
    const names = model.weights.map((w) => w.name);
    const x = tf.tensor4d(randomArray([2, 16, 16, 3], 4), [2, 16, 16, 3]);
    const y = tf.oneHot(tf.tensor1d([1, 7], 'int32'), 10);
    await gradientsOf(model, x, y); // moves the BN statistics
    let artifacts: tf.io.ModelArtifacts | undefined;
    await model.save(
      tf.io.withSaveHandler(async (a) => {
        artifacts = a;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const classes = new Set([...JSON.stringify(artifacts!.modelTopology).matchAll(/"class_name":"(\w+)"/g)].map((m) => m[1]));
    expect(classes.has('BatchNormalization')).toBe(true);
    expect([...classes].filter((c) => !/^(Model|InputLayer|Conv2D|BatchNormalization|Activation|Concatenate|MaxPooling2D|AveragePooling2D|Dropout|Flatten|Dense|GlorotUniform|Zeros|Ones|VarianceScaling)$/.test(c))).toEqual([]);
    expect(artifacts!.weightSpecs!.map((w) => w.name)).toEqual(names);
    // Loaded beside the original, tfjs suffixes the variables' names (_1) to keep them unique in the process.
    const loaded = await tfl.loadLayersModel(tf.io.fromMemory(artifacts!));
    expect(loaded.weights.map((w) => w.name.replace(/_\d+$/, ''))).toEqual(names);
    const movingMean = model.weights.findIndex((w) => w.name.endsWith('moving_mean'));
    expect(Array.from(await loaded.weights[movingMean].read().data())).toEqual(Array.from(await model.weights[movingMean].read().data()));
    tf.dispose([x, y]);
    model.dispose();
    loaded.dispose();
  });

  it('a BatchNormalization layer takes 5 dispatches forward (3, and 2 for the moving averages) and 4 backward', async () => {
    const shape = [2, 8, 8, 16];
    const layer = tfl.layers.batchNormalization({ axis: -1 });
    layer.build(shape);
    const x = tf.tensor(randomArray(shape, 3), shape);
    const dy = tf.tensor(randomArray(shape, 4), shape);
    const forward = await countGpuWork(async () => {
      const y = layer.apply(x, { training: true }) as tf.Tensor;
      await y.data();
      y.dispose();
    });
    const both = await countGpuWork(async () => {
      const [dx] = tf.grads((t: tf.Tensor) => layer.apply(t, { training: true }) as tf.Tensor)([x], dy);
      await dx.data();
      dx.dispose();
    });
    expect({ forward: forward.counts.dispatches, backward: both.counts.dispatches - forward.counts.dispatches }).toEqual({ forward: 5, backward: 4 });
    tf.dispose([x, dy]);
    for (const v of layer.weights) v.dispose();
  });
});
