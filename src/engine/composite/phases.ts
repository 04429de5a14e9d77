/**
 * The phases of a strided convolution's input that both filter-gradient kernels read (the composite in
 * conv2d_backprop_filter.ts, which cpu keeps, and wasm's in ../wasm/conv2d_backprop_filter.ts): x split by
 * stride into sh·sw phase grids, each a tensor of its own, so that a tap's operand is a whole phase.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelComposer } from './compose.js';

/**
 * The phase grid: room for the largest offset plus OH rows, and for every row of padded x (rows no tap
 * reads meet zeros of dy_ab, which is simpler than cropping them); and the padding of x that fills it.
 */
export function phaseGrid(info: tf.backend_util.Conv2DInfo): { gridHeight: number; gridWidth: number; padding: number[] } {
  const { inHeight, inWidth, outHeight, outWidth, filterHeight, filterWidth, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const gridHeight = Math.max(Math.floor((filterHeight - 1) / sh) + outHeight, Math.ceil((padInfo.top + inHeight) / sh));
  const gridWidth = Math.max(Math.floor((filterWidth - 1) / sw) + outWidth, Math.ceil((padInfo.left + inWidth) / sw));
  const padding = [padInfo.top, sh * gridHeight - padInfo.top - inHeight, padInfo.left, sw * gridWidth - padInfo.left - inWidth];
  return { gridHeight, gridWidth, padding };
}

/**
 * Phase (ph, pw) of x zero-padded by [top, bottom, left, right]: x_pad[n, i·sh + ph, j·sw + pw, c], as
 * [N, Hs, Ws, Cin]. Stride 1 has one phase, the padded x itself.
 */
export function phase(k: KernelComposer, x: TensorInfo, [ph, pw]: number[], [sh, sw]: number[], [top, bottom, left, right]: number[]): TensorInfo {
  if (sh === 1 && sw === 1) {
    if (top === 0 && bottom === 0 && left === 0 && right === 0) return x;
    return k.run('PadV2', { x }, { paddings: [[0, 0], [top, bottom], [left, right], [0, 0]], constantValue: 0 });
  }
  const channels = x.shape[3];
  const oneHot = new Float32Array(sh * sw * channels);
  oneHot.fill(1, (ph * sw + pw) * channels, (ph * sw + pw + 1) * channels);
  const filter = k.constant(oneHot, [sh, sw, channels, 1]);
  const pad = [[0, 0], [top, bottom], [left, right], [0, 0]];
  return k.run('DepthwiseConv2dNative', { x, filter }, { strides: [sh, sw], pad, dilations: 1, dimRoundingMode: undefined, dataFormat: 'NHWC' });
}
