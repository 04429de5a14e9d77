/**
 * Gradient of Mean that broadcasts dy / n on the device.
 *
 * tfjs-core 4.22 computes `div(mul(reshape(dy), ones(x.shape)), n)`, building a full-size ones array on the
 * CPU (see sum_grad.ts). This divides the small tensor first and broadcasts with `onesLike(x)` made on
 * the device: every element is the same float32 value (dy·1)/n = (dy/n)·1 either way.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, Tensor } from '@tensorflow/tfjs-core';
import { expandReduced } from './sum_grad.js';

export const meanGradConfig: GradConfig = {
  kernelName: tf.Mean,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved;
    const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
    const reduceSize = axes.reduce((n, a) => n * x.shape[a], 1);
    return { x: () => tf.mul(tf.div(expandReduced(dy as Tensor, x.shape, attrs.axis), reduceSize), tf.onesLike(x)) };
  },
};
