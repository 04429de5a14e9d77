/**
 * Momentum SGD with Keras semantics, on flat arrays:
 *
 *     v ← m·v − lr·g
 *     w ← w + v
 *
 * (tf.keras.optimizers.SGD with nesterov=False; keras/optimizers/sgd.py). Differs from tfjs'
 * MomentumOptimizer and PyTorch, which accumulate v ← m·v + g and step w ← w − lr·v: the two agree only
 * while lr is constant, and the tutorial decays lr every epoch.
 *
 * Every intermediate is rounded to float32 (Math.fround) so the arithmetic is exactly TensorFlow's
 * float32 arithmetic, and identical on every machine.
 */
export interface SgdState {
  /** One velocity per trainable value, zero at start. */
  velocity: Float32Array;
}

export function createSgdState(trainableSize: number): SgdState {
  return { velocity: new Float32Array(trainableSize) };
}

/**
 * Updates `weights` (the trainable prefix of the state) and `state.velocity` in place. Returns false if
 * any update was NaN or infinite: a diverged step, which the caller stops on (Keras' TerminateOnNaN
 * looks at the loss only, but a backend whose clipping turns NaN probabilities into 1e-7 reports a
 * finite loss for NaN weights).
 */
export function sgdStep(weights: Float32Array, grads: Float32Array, state: SgdState, lr: number, momentum: number): boolean {
  const v = state.velocity;
  if (grads.length !== v.length || weights.length < v.length) {
    throw new Error(
      `sgdStep: ${grads.length} gradients, ${v.length} velocities and ${weights.length} weights must agree: this is a bug`,
    );
  }
  const m = Math.fround(momentum);
  const rate = Math.fround(lr);
  const fr = Math.fround;
  // One NaN or infinity anywhere makes the running sum non-finite; cheaper than a test per element.
  let sum = 0;
  for (let i = 0; i < v.length; i++) {
    const vi = fr(fr(m * v[i]) - fr(rate * grads[i]));
    v[i] = vi;
    weights[i] = fr(weights[i] + vi);
    sum += vi;
  }
  return Number.isFinite(sum);
}
