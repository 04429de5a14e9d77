/**
 * The two wasm ways of Conv2DBackpropFilter side by side, per layer shape (src/engine/wasm/
 * conv2d_backprop_filter.ts chooses between them by a fixed rule; this is what the rule was set from):
 *
 *   npm run bench:filter-gradient
 *
 * Prints ms per call of each way, which one the rule takes, and their relative difference.
 */
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend } from '../src/engine/backend.js';
import { conv2dBackpropFilterConfig } from '../src/engine/composite/conv2d_backprop_filter.js';
import { filterGradientByConvolution, filterGradientByConvolutionPays, filterGradientWasm } from '../src/engine/wasm/conv2d_backprop_filter.js';

type Layer = [name: string, x: [number, number, number, number], filter: [number, number, number, number], stride: number, pad: 'same' | 'valid'];
const LAYERS: Layer[] = [
  ['small conv (grayscale)', [16, 32, 32, 1], [3, 3, 1, 16], 1, 'same'],
  ['small downsample 1', [16, 32, 32, 16], [3, 3, 16, 16], 2, 'valid'],
  ['small inception 1, 3×3', [16, 15, 15, 32], [3, 3, 32, 16], 1, 'same'],
  ['small downsample 2', [16, 15, 15, 32], [3, 3, 32, 32], 2, 'valid'],
  ['small inception 2, 1×1', [16, 7, 7, 64], [1, 1, 64, 32], 1, 'same'],
  ['small inception 2, 3×3', [16, 7, 7, 64], [3, 3, 64, 32], 1, 'same'],
  ['minigooglenet conv', [64, 32, 32, 3], [3, 3, 3, 96], 1, 'same'],
  ['minigooglenet inception 1, 3×3', [64, 32, 32, 96], [3, 3, 96, 32], 1, 'same'],
  ['minigooglenet downsample 1', [64, 32, 32, 80], [3, 3, 80, 80], 2, 'valid'],
  ['minigooglenet inception 3, 3×3', [64, 15, 15, 160], [3, 3, 160, 48], 1, 'same'],
  ['minigooglenet inception 7, 3×3', [64, 7, 7, 240], [3, 3, 240, 160], 1, 'same'],
];
const REPS = 8;

await setupBackend('wasm');
const rows = [];
for (const [name, xs, fs, stride, pad] of LAYERS) {
  const info = tf.backend_util.computeConv2DInfo(xs, fs, stride, 1, pad);
  const x = tf.randomNormal(xs);
  const dy = tf.randomNormal(info.outShape);
  const ms: number[] = [];
  const outs: Float32Array[] = [];
  for (const body of [filterGradientWasm, filterGradientByConvolution]) {
    tf.unregisterKernel(tf.Conv2DBackpropFilter, 'wasm');
    tf.registerKernel(conv2dBackpropFilterConfig('wasm', body));
    const once = () => {
      const r = tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { strides: stride, pad, dataFormat: 'NHWC', filterShape: fs }) as tf.Tensor;
      const v = r.dataSync() as Float32Array;
      r.dispose();
      return v;
    };
    outs.push(once()); // warm-up: XNNPACK operators, heap growth
    const t0 = performance.now();
    for (let i = 0; i < REPS; i++) once();
    ms.push((performance.now() - t0) / REPS);
  }
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < outs[0].length; i++) {
    diff = Math.max(diff, Math.abs(outs[0][i] - outs[1][i]));
    scale = Math.max(scale, Math.abs(outs[0][i]));
  }
  rows.push({
    layer: name, 'chunked ms': ms[0].toFixed(2), 'convolution ms': ms[1].toFixed(2),
    'chunked / convolution': (ms[0] / ms[1]).toFixed(2), 'rule takes': filterGradientByConvolutionPays(info) ? 'convolution' : 'chunked',
    'max rel. diff': (diff / scale).toExponential(1),
  });
  tf.dispose([x, dy]);
}
console.table(rows);
