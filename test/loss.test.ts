import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { correctPerExample, crossEntropy, crossEntropyPerExample, oneHot } from '../src/model/loss.js';
import { useCpu } from './helpers/cpu.js';

beforeAll(useCpu);

const t2 = (rows: number[][]) => tf.tensor2d(rows);

describe('categorical cross-entropy with Keras clipping', () => {
  it('is −ln p of the true class', () => {
    const l = crossEntropyPerExample(t2([[1, 0, 0]]), t2([[0.7, 0.2, 0.1]]));
    expect(l.dataSync()[0]).toBeCloseTo(-Math.log(0.7), 6); // 0.356675
  });

  it('clips a zero probability to 1e-7 instead of returning infinity', () => {
    const l = crossEntropyPerExample(t2([[0, 1, 0]]), t2([[1, 0, 0]]));
    expect(l.dataSync()[0]).toBeCloseTo(-Math.log(1e-7), 4); // 16.118096
  });

  it('clips a certain prediction to 1 − 1e-7, so a perfect answer still costs about 1e-7', () => {
    const l = crossEntropyPerExample(t2([[1, 0]]), t2([[1, 0]]));
    expect(l.dataSync()[0]).toBeGreaterThan(0);
    expect(l.dataSync()[0]).toBeLessThan(1.5e-7);
  });

  it('renormalizes outputs that do not sum to one, as Keras does', () => {
    const l = crossEntropyPerExample(t2([[1, 0, 0]]), t2([[2, 1, 1]]));
    expect(l.dataSync()[0]).toBeCloseTo(Math.log(2), 6);
  });

  it('averages over the batch', () => {
    const l = crossEntropy(t2([[1, 0], [0, 1]]), t2([[0.5, 0.5], [0.2, 0.8]]));
    expect(l.dataSync()[0]).toBeCloseTo((Math.log(2) - Math.log(0.8)) / 2, 6); // 0.458145
  });
});

describe('categorical accuracy', () => {
  it('counts argmax agreement, ties going to the first class', () => {
    const c = correctPerExample(t2([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), t2([[0.5, 0.5, 0], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]]));
    expect(Array.from(c.dataSync())).toEqual([1, 1, 0]);
  });
});

describe('oneHot', () => {
  it('turns class indices into float rows', () => {
    const y = oneHot(new Uint8Array([2, 0]), 3);
    expect(y.dtype).toBe('float32');
    expect(y.arraySync()).toEqual([[0, 0, 1], [1, 0, 0]]);
  });
});
