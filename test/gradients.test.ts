import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSgdState, sgdStep } from '../src/coordinator/optim/sgd.js';
import { layoutHash, layoutOf, statsPart, trainablePart } from '../src/model/flat.js';
import { installInputConvolution, uninstallInputConvolution, withoutInputGradient } from '../src/engine/patches/input_convolution.js';
import { Replica } from '../src/model/replica.js';
import { Rng } from '../src/util/random.js';
import { useCpu } from './helpers/cpu.js';

beforeAll(useCpu);

const spec = { name: 'tiny', width: 16, height: 16, depth: 3, classes: 4, seed: 3 } as const;

/** A fixed batch in which class k has a brighter k-th quadrant. */
function fixedBatch(count: number) {
  const rng = new Rng(11);
  const x = new Float32Array(count * 16 * 16 * 3);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const k = n % 4;
    labels[n] = k;
    for (let i = 0; i < 16; i++)
      for (let j = 0; j < 16; j++)
        for (let c = 0; c < 3; c++) {
          const quadrant = (i < 8 ? 0 : 2) + (j < 8 ? 0 : 1);
          x[((n * 16 + i) * 16 + j) * 3 + c] = (quadrant === k ? 1 : 0) + 0.3 * rng.normal();
        }
  }
  return { x, labels };
}

describe('flat weight layout', () => {
  let replica: Replica;
  beforeAll(() => {
    replica = new Replica(spec);
  });
  afterAll(() => replica.dispose());

  it('puts trainable weights first and BN statistics last', () => {
    const { entries, trainableSize, totalSize } = replica.layout;
    expect(entries[0]).toMatchObject({ name: 'conv2d_1/kernel', shape: [3, 3, 3, 16], offset: 0, size: 432, trainable: true });
    const firstStat = entries.findIndex((e) => !e.trainable);
    expect(entries.slice(firstStat).every((e) => !e.trainable)).toBe(true);
    expect(entries[firstStat]).toMatchObject({ name: 'batch_normalization_1/moving_mean', offset: trainableSize });
    expect(totalSize).toBe(entries.reduce((s, e) => s + e.size, 0));
  });

  it('round-trips a state vector through the model', async () => {
    const state = Float32Array.from({ length: replica.layout.totalSize }, (_, i) => Math.sin(i));
    replica.setState(state);
    state[0] = 42; // the model must not alias the caller's array
    const back = await replica.getState();
    expect(back[0]).toBeCloseTo(Math.sin(0), 7);
    expect(back.subarray(1)).toEqual(state.subarray(1));
  });

  it('gives the same hash to the same architecture and another to a different one', () => {
    const other = new Replica({ ...spec, classes: 5 });
    const same = new Replica(spec);
    expect(same.layoutHash).toBe(replica.layoutHash);
    expect(other.layoutHash).not.toBe(replica.layoutHash);
    expect(layoutHash(layoutOf(same.model))).toBe(same.layoutHash);
    other.dispose();
    same.dispose();
  });
});

describe('computeGradients on a fixed batch', () => {
  it('lowers the loss when the averaged-gradient SGD step is applied', async () => {
    const r = new Replica({ ...spec, dropout: 0 });
    const batch = fixedBatch(16);
    const state = await r.getState();
    const sgd = createSgdState(r.layout.trainableSize);
    const losses: number[] = [];
    for (let step = 0; step < 8; step++) {
      const g = await r.computeGradients(batch, step);
      losses.push(g.loss);
      sgdStep(trainablePart(r.layout, state), g.grads, sgd, 0.05, 0.9);
      statsPart(r.layout, state).set(g.stats);
      r.setState(state);
    }
    expect(losses[7]).toBeLessThan(losses[0] * 0.8);
    r.dispose();
  });

  it('returns gradients and BN statistics of the layout’s sizes, and moves moving_mean a small step off zero', async () => {
    const r = new Replica({ ...spec, dropout: 0 });
    const batch = fixedBatch(8);
    const before = await r.getState();
    const g = await r.computeGradients(batch, 1);
    expect(g.grads.length).toBe(r.layout.trainableSize);
    expect(g.stats.length).toBe(r.layout.totalSize - r.layout.trainableSize);
    // moving_mean starts at 0: after one step it is 0.01 × the batch mean of conv2d_1's output.
    const mean = r.layout.entries.find((e) => e.name === 'batch_normalization_1/moving_mean')!;
    const moved = g.stats.subarray(mean.offset - r.layout.trainableSize, mean.offset - r.layout.trainableSize + mean.size);
    expect(before.subarray(mean.offset, mean.offset + mean.size).every((v) => v === 0)).toBe(true);
    expect(moved.some((v) => v !== 0)).toBe(true);
    // Conv biases are zero at start, so conv2d_1's output mean is the kernel applied to the input mean.
    expect(Math.max(...moved.map(Math.abs))).toBeLessThan(0.05);
    expect(Number.isFinite(g.loss)).toBe(true);
    expect(g.acc).toBeGreaterThanOrEqual(0);
    expect(g.acc).toBeLessThanOrEqual(1);
    r.dispose();
  });

  it('draws a fresh dropout mask per seed and the same mask for the same seed', async () => {
    const r = new Replica({ ...spec, dropout: 0.5 });
    const start = await r.getState();
    const batch = fixedBatch(8);
    const run = async (seed: number) => {
      r.setState(start);
      return (await r.computeGradients(batch, seed)).grads;
    };
    const a = await run(5);
    const b = await run(5);
    const c = await run(6);
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    r.dispose();
  });

  it('leaks no tensors per step or per evaluation', async () => {
    const r = new Replica(spec);
    const batch = fixedBatch(8);
    await r.computeGradients(batch, 0); // first call may build lazily
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      await r.computeGradients(batch, i);
      await r.evaluate(batch);
      r.setState(await r.getState());
    }
    expect(tf.memory().numTensors).toBe(before);
    r.dispose();
  });
});

describe('the first convolution without its input gradient', () => {
  const convSpec = { name: 'tiny', width: 16, height: 16, depth: 3, classes: 4, seed: 5 } as const;

  /** Gradients, loss, and the Conv2DBackpropInput kernels of one step, with the wrapper installed or not. */
  async function step(installed: boolean) {
    if (installed) installInputConvolution();
    else uninstallInputConvolution();
    const replica = new Replica(convSpec);
    try {
      let result: Awaited<ReturnType<Replica['computeGradients']>> | undefined;
      const profile = await tf.profile(async () => {
        result = await replica.computeGradients(fixedBatch(6), 7);
        return [];
      });
      const inputGradients = profile.kernels.filter((k) => k.name === tf.Conv2DBackpropInput).length;
      const convolutions = replica.model.layers.filter((l) => l.getClassName() === 'Conv2D').length;
      return { result: result!, inputGradients, convolutions };
    } finally {
      replica.dispose();
      installInputConvolution();
    }
  }

  it('skips only the images’ gradient and leaves the step’s gradients, statistics and loss as they were', async () => {
    const stock = await step(false);
    const ours = await step(true);
    expect(stock.inputGradients).toBe(stock.convolutions);
    expect(ours.inputGradients).toBe(stock.convolutions - 1);
    const rel = (a: Float32Array, b: Float32Array) => Math.sqrt(a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / b.reduce((s, v) => s + v * v, 0));
    expect(rel(ours.result.grads, stock.result.grads)).toBeLessThan(1e-5);
    expect(rel(ours.result.stats, stock.result.stats)).toBeLessThan(1e-6);
    expect(ours.result.loss).toBeCloseTo(stock.result.loss, 5);
  });

  it('takes the plain path only for a marked tensor and a linear convolution, with the same values', async () => {
    const x = tf.tensor4d(Array.from({ length: 32 }, (_, i) => (i % 7) - 3), [1, 4, 4, 2]);
    const filter = tf.tensor4d([0.5, -1, 2, 0.25, 1, -0.5], [1, 1, 2, 3]);
    const bias = tf.tensor1d([1, -2, 0.5]);
    const run = async (mark: boolean, activation: 'linear' | 'relu') => {
      let values: number[] = [];
      const profile = await tf.profile(async () => {
        const conv = () => tf.fused.conv2d({ x, filter, strides: 1, pad: 'same', bias, activation });
        const y = mark ? withoutInputGradient(x, conv) : conv();
        values = Array.from(await y.data());
        y.dispose();
        return [];
      });
      return { values, kernels: profile.kernels.map((k) => k.name).filter((n) => !n.endsWith('__op')) };
    };
    const unmarked = await run(false, 'linear');
    const marked = await run(true, 'linear');
    const relu = await run(true, 'relu');
    expect(unmarked.kernels).toEqual(['FusedConv2D']);
    expect(marked.kernels).toEqual(['Conv2D', 'Add']);
    expect(relu.kernels).toEqual(['FusedConv2D']);
    expect(marked.values).toEqual(unmarked.values);
    expect(relu.values).toEqual(unmarked.values.map((v) => Math.max(0, v)));
    tf.dispose([x, filter, bias]);
  });
});

describe('evaluate', () => {
  it('sums over sub-batches the same correct answers as over one batch, and the same loss to float32 rounding', async () => {
    const r = new Replica(spec);
    const batch = fixedBatch(10);
    const whole = await r.evaluate(batch);
    const { evaluateShard } = await import('../src/model/gradients.js');
    const pieces = await evaluateShard(r.model, batch, 3);
    expect(pieces.count).toBe(10);
    expect(pieces.correct).toBe(whole.correct);
    expect(pieces.lossSum).toBeCloseTo(whole.lossSum, 4);
    r.dispose();
  });
});
