import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { average, averageInto } from '../src/coordinator/optim/average.js';
import { learningRate, polyDecay } from '../src/coordinator/optim/schedule.js';
import { createSgdState, sgdStep } from '../src/coordinator/optim/sgd.js';
import { useCpu } from './helpers/cpu.js';

beforeAll(useCpu);

describe('polyDecay (power 1, 70 epochs, lr0 5e-3)', () => {
  const lr = (e: number) => polyDecay(e, 70, 5e-3);
  it('starts at lr0', () => expect(lr(0)).toBe(5e-3));
  it('is halfway down at epoch 35', () => expect(lr(35)).toBeCloseTo(2.5e-3, 12));
  it('ends one step above zero at epoch 69', () => expect(lr(69)).toBeCloseTo(5e-3 / 70, 12)); // 7.142857e-5
  it('is zero at and beyond the end', () => {
    expect(lr(70)).toBe(0);
    expect(lr(80)).toBe(0);
  });
  it('squares the fraction with power 2', () => expect(polyDecay(35, 70, 5e-3, 2)).toBeCloseTo(1.25e-3, 12));
  it('rejects a negative epoch', () => expect(() => lr(-1)).toThrow('polyDecay: epoch must be an integer ≥ 0. Received: -1'));
});

describe('learningRate with linear scaling and warmup (Goyal et al.)', () => {
  const o = { lr: 5e-3, epochs: 70, workers: 4, scaleLr: true, warmupEpochs: 5 };
  it('starts at the single-GPU rate', () => expect(learningRate(0, o)).toBeCloseTo(5e-3, 12));
  it('climbs linearly during warmup', () => {
    // epoch 2: decayed 5e-3·68/70, scaled by 1 + 3·2/5 = 2.2
    expect(learningRate(2, o)).toBeCloseTo(5e-3 * (68 / 70) * 2.2, 12);
  });
  it('is G times the decayed rate after warmup', () => expect(learningRate(35, o)).toBeCloseTo(4 * 2.5e-3, 12));
  it('climbs by (G − 1)/warmup of the decayed rate each epoch, epochs 1–4, and is at full scale from epoch 5', () => {
    // Worked by hand: epoch e < 5 gives 5e-3·(70 − e)/70 · (1 + 3e/5); epoch 5 gives 4 · 5e-3·65/70.
    const want = [1, 1.6, 2.2, 2.8, 3.4].map((scale, e) => 5e-3 * ((70 - e) / 70) * scale);
    for (let e = 0; e < 5; e++) expect(learningRate(e, o), `epoch ${e}`).toBeCloseTo(want[e], 12);
    expect(learningRate(4, o)).toBeLessThan(4 * polyDecay(4, 70, 5e-3)); // the last warmup epoch is not yet at scale
    expect(learningRate(5, o)).toBeCloseTo(4 * 5e-3 * (65 / 70), 12);
  });
  it('has no warmup with one worker, and an immediate full scale with warmup 0', () => {
    expect(learningRate(1, { ...o, workers: 1 })).toBe(polyDecay(1, 70, 5e-3));
    expect(learningRate(0, { ...o, warmupEpochs: 0 })).toBeCloseTo(4 * 5e-3, 12);
  });
  it('is plain poly decay when off', () => expect(learningRate(35, { ...o, scaleLr: false })).toBeCloseTo(2.5e-3, 12));
});

describe('Keras momentum SGD', () => {
  it('follows v ← m·v − lr·g, w ← w + v over two steps (worked by hand)', () => {
    const w = new Float32Array([1, -2]);
    const s = createSgdState(2);
    sgdStep(w, new Float32Array([0.5, -1]), s, 0.1, 0.9);
    // v = −0.1·[0.5, −1] = [−0.05, 0.1]; w = [0.95, −1.9]
    expect(Array.from(s.velocity)).toEqual([Math.fround(-0.05), Math.fround(0.1)]);
    expect(w[0]).toBeCloseTo(0.95, 6);
    expect(w[1]).toBeCloseTo(-1.9, 6);
    sgdStep(w, new Float32Array([0.5, -1]), s, 0.05, 0.9);
    // v = 0.9·[−0.05, 0.1] − 0.05·[0.5, −1] = [−0.07, 0.14]; w = [0.88, −1.76]
    expect(s.velocity[0]).toBeCloseTo(-0.07, 6);
    expect(s.velocity[1]).toBeCloseTo(0.14, 6);
    expect(w[0]).toBeCloseTo(0.88, 6);
    expect(w[1]).toBeCloseTo(-1.76, 6);
  });

  it('differs from tfjs/PyTorch momentum once the rate changes', () => {
    // PyTorch: v = m·v + g; w -= lr·v. After the same two steps w[0] = 1 − 0.1·0.5 − 0.05·(0.45 + 0.5) = 0.9025.
    const w = new Float32Array([1]);
    const s = createSgdState(1);
    sgdStep(w, new Float32Array([0.5]), s, 0.1, 0.9);
    sgdStep(w, new Float32Array([0.5]), s, 0.05, 0.9);
    // Keras: v = 0.9·(−0.05) − 0.05·0.5 = −0.07, so w[0] = 1 − 0.05 − 0.07 = 0.88, not PyTorch's 0.9025.
    expect(w[0]).toBeCloseTo(0.88, 6);
  });

  it('is bit-for-bit TensorFlow float32 arithmetic', () => {
    const n = 1000;
    const w = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 3);
    const g = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 1.7));
    const v0 = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.3) * 0.01);
    const [lr, m] = [0.0047, 0.9];
    const expectedV = tf.sub(tf.mul(tf.scalar(m), tf.tensor1d(v0)), tf.mul(tf.scalar(lr), tf.tensor1d(g)));
    const expectedW = tf.add(tf.tensor1d(w), expectedV);
    const s = { velocity: v0.slice() };
    sgdStep(w, g, s, lr, m);
    expect(s.velocity).toEqual(expectedV.dataSync());
    expect(w).toEqual(expectedW.dataSync());
  });

  it('reports a NaN or infinite update, and only then', () => {
    expect(sgdStep(new Float32Array([1, 2]), new Float32Array([0.1, 0.2]), createSgdState(2), 0.1, 0.9)).toBe(true);
    expect(sgdStep(new Float32Array([1, 2]), new Float32Array([0.1, Number.NaN]), createSgdState(2), 0.1, 0.9)).toBe(false);
    expect(sgdStep(new Float32Array([1, 2]), new Float32Array([Infinity, 0]), createSgdState(2), 0.1, 0.9)).toBe(false);
  });

  it('updates only the trainable prefix of a state vector', () => {
    const state = new Float32Array([1, 1, 7, 7]); // two weights, then two BN statistics
    sgdStep(state, new Float32Array([1, 1]), createSgdState(2), 0.5, 0.9);
    expect(Array.from(state)).toEqual([0.5, 0.5, 7, 7]);
  });
});

describe('average', () => {
  it('is the element-wise mean', () => {
    const a = average([new Float32Array([1, 2]), new Float32Array([3, 6]), new Float32Array([2, 1])]);
    expect(Array.from(a)).toEqual([2, 3]);
  });
  it('returns a copy for a single array', () => {
    const one = new Float32Array([1, 2]);
    const a = average([one]);
    expect(a).toEqual(one);
    expect(a).not.toBe(one);
  });
  it('sums in float64 in rank order and rounds once, for every worker count up to 8', () => {
    for (let g = 1; g <= 8; g++) {
      const parts = Array.from({ length: g }, (_, k) => Float32Array.from({ length: 50 }, (_, i) => Math.sin(i * (k + 1)) * 10 ** (k % 4)));
      const expected = Float32Array.from({ length: 50 }, (_, i) => parts.reduce((s, p) => s + p[i], 0) / g);
      expect(average(parts)).toEqual(expected);
    }
  });

  it('refuses arrays of different lengths', () => {
    expect(() => average([new Float32Array(2), new Float32Array(3)])).toThrow('this is a bug');
  });
});

describe('the optimizer refuses what would be a bug upstream, naming the sizes', () => {
  it('average: no arrays, or arrays of other lengths than the output', () => {
    expect(() => average([])).toThrow('averageInto: no arrays to average: this is a bug');
    expect(() => averageInto(new Float32Array(3), [new Float32Array(3), new Float32Array(2)])).toThrow('averageInto: arrays of 3, 2 values into 3: this is a bug');
  });
  it('sgdStep: gradients, velocities and weights of other sizes', () => {
    expect(() => sgdStep(new Float32Array(3), new Float32Array(2), createSgdState(3), 0.1, 0.9)).toThrow('sgdStep: 2 gradients, 3 velocities and 3 weights must agree: this is a bug');
    expect(() => sgdStep(new Float32Array(2), new Float32Array(3), createSgdState(3), 0.1, 0.9)).toThrow('sgdStep: 3 gradients, 3 velocities and 2 weights must agree: this is a bug');
  });
  it('polyDecay: a number of epochs that is not a positive integer', () => {
    expect(() => polyDecay(0, 0, 5e-3)).toThrow('polyDecay: epochs must be a positive integer. Received: 0');
    expect(() => polyDecay(0, 2.5, 5e-3)).toThrow('polyDecay: epochs must be a positive integer. Received: 2.5');
    expect(polyDecay(0, 1, 5e-3)).toBe(5e-3);
  });
  it('learningRate: the power given is the one used', () => {
    expect(learningRate(35, { lr: 5e-3, epochs: 70, power: 2 })).toBeCloseTo(1.25e-3, 12);
  });
  it('learningRate: a warmup other than the default is the one used', () => {
    // G = 4, warmup 2: epoch 1 is halfway, 1 + 3/2 = 2.5 times the decayed rate; epoch 2 at full scale.
    const o = { lr: 5e-3, epochs: 70, workers: 4, scaleLr: true, warmupEpochs: 2 };
    expect(learningRate(1, o)).toBeCloseTo(5e-3 * (69 / 70) * 2.5, 12);
    expect(learningRate(2, o)).toBeCloseTo(4 * 5e-3 * (68 / 70), 12);
  });
});
