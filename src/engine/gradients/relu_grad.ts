/**
 * Gradient of Relu in one kernel where the backend has it (webgpu/elementwise.ts), else tfjs' own.
 *
 * tfjs-core 4.22 (gradients/Relu_grad.ts) computes dy·step(x): a Step and a Multiply, two full-size
 * passes over the activation and two dispatches on webgpu, once per ReLU per step (21 in MiniGoogLeNet).
 * ReluGrad computes the same products, dy·1 or dy·0 (NaN where x is NaN, as Step gives), in one pass.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, Tensor } from '@tensorflow/tfjs-core';
import { RELU_GRAD } from '../ops/relu_grad.js';

export const reluGradConfig: GradConfig = {
  kernelName: tf.Relu,
  inputsToSave: ['x'],
  gradFunc: (dy, saved) => {
    const [x] = saved;
    if (tf.getKernel(RELU_GRAD, tf.getBackend()) !== undefined && x.dtype === 'float32') {
      return { x: () => tf.engine().runKernel(RELU_GRAD, { dy: dy as Tensor, x }) as Tensor };
    }
    return { x: () => tf.mul(dy as Tensor, tf.cast(tf.step(x), 'float32')) };
  },
};
