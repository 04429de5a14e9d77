/**
 * One BatchNormalization layer trained on one batch, the same on every backend: what the project's
 * BatchNormalization kernels (webgpu and host) are checked against tfjs' stock cpu path with.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { Rng } from '../../src/util/random.js';
import { randomArray } from './gradcheck.js';

/** Seeded NHWC shapes: batch 1–4, 1–12 pixels a side, 1–70 channels. */
function randomBatchNormShapes(count: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => [1 + rng.int(4), 1 + rng.int(12), 1 + rng.int(12), 1 + rng.int(70)]);
}

/** Shapes whose rows (all axes but the last) split into one chunk, several, and several channel blocks. */
export const BN_SHAPES: number[][] = [
  [3, 5, 7, 40],
  [2, 4, 4, 8],
  [5, 33],
  [2, 9, 9, 100],
  [1, 3, 3, 3],
  ...randomBatchNormShapes(2, 5),
];

/**
 * A BatchNormalization layer (Keras defaults: momentum 0.99, epsilon 1e-3) with seeded weights, trained
 * on one batch: [loss, dγ, dβ, dx, moving mean, moving variance] for loss = Σ y·w.
 */
export async function batchNormStep(shape: number[]): Promise<Float32Array[]> {
  const channels = shape[shape.length - 1];
  const layer = tfl.layers.batchNormalization({ axis: -1, momentum: 0.99, epsilon: 1e-3 });
  layer.build(shape);
  // γ, β, moving mean, moving variance (positive).
  const weights = [2, 3, 4, 5].map((seed) => tf.tensor1d(randomArray([channels], seed).map((v) => (seed === 5 ? Math.abs(v) : v))));
  layer.setWeights(weights);
  // Mean 2, spread 3: a mean that E[x²] − E[x]² would lose digits to.
  const x = tf.tensor(randomArray(shape, 1).map((v) => 3 * v + 2), shape);
  const w = tf.tensor(randomArray(shape, 6), shape);
  const loss = (t: tf.Tensor) => tf.sum(tf.mul(layer.apply(t, { training: true }) as tf.Tensor, w)) as tf.Scalar;
  const { value, grads } = tf.variableGrads(() => loss(x), layer.trainableWeights.map((v) => v.read() as tf.Variable));
  const dx = tf.grad(loss)(x); // a second step: the moving statistics move twice
  const results = [value, ...layer.trainableWeights.map((v) => grads[(v.read() as tf.Variable).name]), dx, ...layer.nonTrainableWeights.map((v) => v.read())];
  const values = await Promise.all(results.map(async (t) => (await t.data()) as Float32Array));
  tf.dispose([value, dx, x, w, ...weights, ...Object.values(grads)]);
  for (const v of layer.weights) v.dispose(); // layer.dispose() refuses a layer never applied to a symbolic input
  return values;
}
