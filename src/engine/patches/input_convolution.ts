/**
 * The first convolution of a model without the gradient with respect to its input: the images.
 *
 * tfjs-layers' Conv2D with a bias runs tf.fused.conv2d, whose gradient (tfjs-core ops/fused/conv2d.ts, a
 * customGrad) computes the input gradient with the filter's, whether or not anything needs it. For the
 * first layer it is the gradient of the loss with respect to the images, and it is thrown away: 32 ms of
 * a wasm step, and on webgpu a GEMM whose 3 columns (the images' channels) fill 3 of a 64-wide tile.
 * tf.conv2d followed by a bias add computes the same forward; tfjs' tape then asks each input of Conv2D
 * for its gradient only if it derives from a trained variable, which the images do not.
 *
 * `withoutInputGradient(x, f)` marks x while f runs; the wrapper of tf.fused.conv2d (installed once by
 * registerProjectGradients) takes that path for a linear convolution of a marked tensor, and tfjs' own
 * otherwise.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { replaceFusedConv2d, type FusedConv2d } from '../tfjs-internals.js';

type FusedConv2dArgs = Parameters<FusedConv2d>[0];

const marked = new WeakSet<object>();
let stock: FusedConv2d | undefined;

export function withoutInputGradient<T>(x: Tensor, f: () => T): T {
  marked.add(x);
  try {
    return f();
  } finally {
    marked.delete(x);
  }
}

/** Installs the wrapper; idempotent. */
export function installInputConvolution(): void {
  if (stock !== undefined) return;
  const original = tf.fused.conv2d;
  stock = original;
  replaceFusedConv2d(((args: FusedConv2dArgs) => {
    const linear = args.activation === undefined || args.activation === 'linear';
    if (!marked.has(args.x as object) || !linear || args.preluActivationWeights != null) return original(args);
    const y = tf.conv2d(args.x as tf.Tensor4D, args.filter as tf.Tensor4D, args.strides, args.pad, args.dataFormat, args.dilations, args.dimRoundingMode);
    return args.bias == null ? y : tf.add(y, args.bias);
  }) as FusedConv2d);
}

/** Puts tfjs' own tf.fused.conv2d back; for tests. */
export function uninstallInputConvolution(): void {
  if (stock === undefined) return;
  replaceFusedConv2d(stock);
  stock = undefined;
}
