import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildModel, dropoutLayers } from '../src/model/minigooglenet.js';
import { paramCounts, summary } from '../src/model/summary.js';
import { useCpu } from './helpers/cpu.js';

beforeAll(useCpu);

const cifar = { width: 32, height: 32, depth: 3, classes: 10, seed: 1 } as const;

describe('MiniGoogLeNet', () => {
  it('has the tutorial parameter counts for 32×32×3 and 10 classes', () => {
    const m = buildModel({ name: 'minigooglenet', ...cifar });
    expect(paramCounts(m)).toEqual({ total: 1_656_250, trainable: 1_652_826, nonTrainable: 3_424 });
    m.dispose();
  });

  it('follows the depth of the input: one channel costs 2 × 96 × 9 fewer first-layer weights', () => {
    const m = buildModel({ name: 'minigooglenet', ...cifar, depth: 1 });
    expect(paramCounts(m).total).toBe(1_656_250 - 2 * 96 * 9);
    m.dispose();
  });

  it('ends the summary with the Keras totals', () => {
    const m = buildModel({ name: 'minigooglenet', ...cifar });
    const lines = summary(m).split('\n');
    expect(lines.slice(-4, -1)).toEqual([
      'Total params: 1,656,250',
      'Trainable params: 1,652,826',
      'Non-trainable params: 3,424',
    ]);
    expect(lines.some((l) => /^ conv2d_1 \(Conv2D\)\s+\(None, 32, 32, 96\)\s+2,688\s+input_1\[0\]\[0\]$/.test(l))).toBe(true);
    m.dispose();
  });

  it('pools the whole final 7×7 map and applies dropout 0.5 before the classifier', () => {
    const m = buildModel({ name: 'minigooglenet', ...cifar });
    const pool = m.layers.find((l) => l.getClassName() === 'AveragePooling2D')!;
    expect(pool.outputShape).toEqual([null, 1, 1, 336]);
    expect((dropoutLayers(m)[0].getConfig() as { rate: number }).rate).toBe(0.5);
    const bn = m.layers.find((l) => l.getClassName() === 'BatchNormalization')!.getConfig();
    expect(bn).toMatchObject({ axis: -1, momentum: 0.99, epsilon: 1e-3 });
    m.dispose();
  });

  it('builds the small model (the quick preset\'s): 38,714 parameters on 32×32×1, no dropout, 64 features into the classifier', () => {
    const m = buildModel({ name: 'small', ...cifar, depth: 1 });
    expect(paramCounts(m)).toEqual({ total: 38_714, trainable: 38_394, nonTrainable: 320 });
    expect((dropoutLayers(m)[0].getConfig() as { rate: number }).rate).toBe(0);
    expect(m.layers.find((l) => l.getClassName() === 'AveragePooling2D')!.outputShape).toEqual([null, 1, 1, 64]);
    // An explicit rate still wins over the architecture's.
    const d = buildModel({ name: 'small', ...cifar, dropout: 0.25 });
    expect((dropoutLayers(d)[0].getConfig() as { rate: number }).rate).toBe(0.25);
    m.dispose();
    d.dispose();
  });

  it('initializes identically from the same seed and differently from another', async () => {
    const a = buildModel({ name: 'tiny', ...cifar, seed: 7 });
    const b = buildModel({ name: 'tiny', ...cifar, seed: 7 });
    const c = buildModel({ name: 'tiny', ...cifar, seed: 8 });
    const k = (m: typeof a, i: number) => m.trainableWeights[i].read().dataSync();
    expect(k(a, 0)).toEqual(k(b, 0));
    expect(k(a, 0)).not.toEqual(k(c, 0));
    // Two kernels of one model do not share a stream.
    const first = k(a, 0);
    const other = a.trainableWeights.find((w) => w.originalName === 'conv2d_2/kernel')!.read().dataSync();
    expect(Array.from(other.slice(0, 8))).not.toEqual(Array.from(first.slice(0, 8)));
    // Biases start at zero, Glorot-uniform kernels within ±sqrt(6 / (fan_in + fan_out)).
    expect(Math.max(...a.trainableWeights.find((w) => w.originalName === 'conv2d_1/bias')!.read().dataSync())).toBe(0);
    const limit = Math.sqrt(6 / (3 * 3 * 3 + 3 * 3 * 16));
    expect(Math.max(...first.map(Math.abs))).toBeLessThanOrEqual(limit);
    expect(Math.max(...first.map(Math.abs))).toBeGreaterThan(limit * 0.8);
    for (const m of [a, b, c]) m.dispose();
  });

  it('names layers per model, so a second build in the same process has the same weight names', () => {
    const a = buildModel({ name: 'tiny', ...cifar });
    const b = buildModel({ name: 'tiny', ...cifar });
    expect(b.weights.map((w) => w.originalName)).toEqual(a.weights.map((w) => w.originalName));
    expect(a.weights[0].originalName).toBe('conv2d_1/kernel');
    a.dispose();
    b.dispose();
  });

  it('builds a variant without BatchNormalization and dropout', () => {
    const m = buildModel({ name: 'tiny', ...cifar, batchNorm: false });
    expect(m.layers.some((l) => l.getClassName() === 'BatchNormalization')).toBe(false);
    expect(paramCounts(m).nonTrainable).toBe(0);
    expect((dropoutLayers(m)[0].getConfig() as { rate: number }).rate).toBe(0);
    m.dispose();
  });

  it('rejects inputs too small for two stride-2 downsamples', () => {
    expect(() => buildModel({ name: 'tiny', ...cifar, width: 8 })).toThrow(
      'model input must be at least 11×11 pixels. Received: 8×32',
    );
  });

  it('leaves no tensors behind once disposed', () => {
    const before = tf.memory().numTensors;
    buildModel({ name: 'tiny', ...cifar }).dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
