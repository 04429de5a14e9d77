/**
 * Gradient of Sum that broadcasts dy on the device.
 *
 * tfjs-core 4.22's Sum gradient returns `mul(reshape(dy), ones(x.shape))`, and `ones` builds a
 * Float32Array of x's full size on the CPU with a JavaScript loop, then uploads it: one full-size host
 * array and transfer per reduction per step, for every backend (BatchNormalization's moments go through
 * here). Multiplying by `onesLike(x)` instead gives the same values (the same float32 products by 1)
 * with the ones made on the device by the backend's OnesLike kernel (a native fill on wasm and cpu, a
 * shader on webgpu). Not tf.broadcastTo: it runs the Tile kernel, which tfjs-backend-wasm implements
 * with per-element index vectors (Tile.cc), slower than the JavaScript loop it would replace.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';

/** dy reshaped to x's rank with 1 on the reduced axes, which broadcasts back onto x. */
export function expandReduced(dy: Tensor, xShape: number[], axis: NamedAttrMap[string]): Tensor {
  const axes = tf.util.parseAxisParam(axis as number | number[], xShape);
  const expanded = xShape.slice();
  for (const a of axes) expanded[a] = 1;
  return tf.reshape(dy, expanded);
}

export const sumGradConfig: GradConfig = {
  kernelName: tf.Sum,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved;
    return { x: () => tf.mul(expandReduced(dy as Tensor, x.shape, attrs.axis), tf.onesLike(x)) };
  },
};
