/**
 * Categorical cross-entropy on softmax outputs and categorical accuracy, as Keras computes them
 * (tf.keras.backend.categorical_crossentropy with from_logits=False, and categorical_accuracy).
 */
import * as tf from '@tensorflow/tfjs-core';

/** Keras' backend epsilon: probabilities are clipped to [EPSILON, 1 − EPSILON] before the log. */
export const EPSILON = 1e-7;

/**
 * Per-example loss: −Σ y·log(clip(p / Σp)). Keras renormalizes the probabilities first, so outputs that
 * do not sum to one (they do after a softmax, up to rounding) are treated the same way.
 */
export function crossEntropyPerExample(yTrue: tf.Tensor2D, yPred: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => {
    const p = tf.clipByValue(tf.div(yPred, tf.sum(yPred, -1, true)), EPSILON, 1 - EPSILON);
    return tf.neg(tf.sum(tf.mul(yTrue, tf.log(p)), -1)) as tf.Tensor1D;
  });
}

/** Mean over the batch: the loss the optimizer minimizes and Keras reports. */
export function crossEntropy(yTrue: tf.Tensor2D, yPred: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.mean(crossEntropyPerExample(yTrue, yPred)) as tf.Scalar);
}

/** 1 where argmax(pred) equals argmax(true), else 0 (ties go to the first index, as in numpy/TF). */
export function correctPerExample(yTrue: tf.Tensor2D, yPred: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.cast(tf.equal(tf.argMax(yTrue, -1), tf.argMax(yPred, -1)), 'float32') as tf.Tensor1D);
}

/** One-hot float32 labels from class indices. */
export function oneHot(labels: Uint8Array | Int32Array, classes: number): tf.Tensor2D {
  return tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(Int32Array.from(labels), 'int32'), classes), 'float32') as tf.Tensor2D);
}
