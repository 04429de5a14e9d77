/**
 * Comparing backends: the whole training-step gradient of a model as one flat vector, one kernel run
 * from plain arrays, and the relative error between two results.
 */
import { expect } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { Rng } from '../../src/util/random.js';

/** Keras' categorical cross-entropy epsilon (backend.epsilon()). */
const EPSILON = 1e-7;

/**
 * Mean over the batch of −Σ y·log(clip(p/Σp, ε, 1−ε)), Keras' categorical_crossentropy on probabilities,
 * computed with `training: true` (batch statistics in BatchNormalization, dropout active).
 */
export function crossEntropy(model: tfl.LayersModel, x: tf.Tensor, yOneHot: tf.Tensor): tf.Scalar {
  const p = model.apply(x, { training: true }) as tf.Tensor;
  const normalized = tf.clipByValue(tf.div(p, tf.sum(p, -1, true)), EPSILON, 1 - EPSILON);
  return tf.mean(tf.neg(tf.sum(tf.mul(yOneHot, tf.log(normalized)), -1)));
}

/**
 * Every trainable weight's gradient, in `model.trainableWeights` order, concatenated. Asynchronous because
 * webgpu cannot read synchronously under Node (its readSync needs OffscreenCanvas).
 */
export async function gradientsOf(model: tfl.LayersModel, x: tf.Tensor, yOneHot: tf.Tensor): Promise<Float32Array> {
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const { value, grads } = tf.variableGrads(() => crossEntropy(model, x, yOneHot), variables);
  const total = variables.reduce((n, v) => n + v.size, 0);
  const flat = new Float32Array(total);
  let offset = 0;
  for (const v of variables) {
    const g = grads[v.name];
    if (g === undefined) throw new Error(`no gradient for trainable weight ${v.name}: this is a bug`);
    flat.set((await g.data()) as Float32Array, offset);
    offset += v.size;
  }
  value.dispose();
  tf.dispose(Object.values(grads));
  return flat;
}

/** ‖a − b‖ / ‖b‖ in double precision. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relativeError: lengths must match. Received: ${a.length} and ${b.length}`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

/** Uniform values in [−1, 1) for `shape`, the same for a seed on every backend. */
export function randomArray(shape: number[], seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.uniform(-1, 1));
}

/**
 * Runs one kernel on the current backend from plain arrays and returns its output; fails the test if it
 * leaves a tensor behind (tf.memory) or data in the backend (numDataIds).
 */
export async function runKernel(name: string, inputs: Record<string, [Float32Array, number[]]>, attrs: object): Promise<Float32Array> {
  const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
  const tensors = Object.fromEntries(Object.entries(inputs).map(([k, [v, s]]) => [k, tf.tensor(v, s)]));
  const out = tf.engine().runKernel(name, tensors, attrs as tf.NamedAttrMap) as tf.Tensor;
  const values = (await out.data()) as Float32Array;
  tf.dispose([out, ...Object.values(tensors)]);
  expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }, `${name} leaked`).toEqual(before);
  return values;
}
