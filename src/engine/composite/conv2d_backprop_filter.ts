/**
 * Conv2DBackpropFilter (the gradient of a convolution with respect to its filter) built from a
 * backend's PadV2, DepthwiseConv2dNative, Transpose, BatchMatMul and Concat kernels.
 *
 * tfjs-backend-wasm 4.22 registers no Conv2DBackpropFilter at all ("Kernel 'Conv2DBackpropFilter' not
 * registered for backend 'wasm'"), so no conv net can train on it; tfjs-backend-cpu's is a scalar loop.
 *
 * For NHWC, strides (sh, sw) and x zero-padded as the forward pass pads it,
 *   dW[kh, kw, ci, co] = Σ_{n, oh, ow} x[n, oh·sh + kh, ow·sw + kw, ci] · dy[n, oh, ow, co].
 * Split x into its sh·sw phases x_p[n, i, j] = x[n, i·sh + ph, j·sw + pw]; tap (kh, kw) reads phase
 * (kh mod sh, kw mod sw) at offset (a, b) = (⌊kh/sh⌋, ⌊kw/sw⌋):
 *   dW[kh, kw]ᵀ = Σ_{n, i, j} dy_ab[n, i, j, co] · x_p[n, i, j, ci],  dy_ab = dy moved by (a, b), zero elsewhere,
 * one matrix product DY_abᵀ [Cout, K] · X_p [K, Cin] per tap over the K = N·Hs·Ws positions of the phase
 * grid. Moving dy with a PadV2 (XNNPACK, about 2 ms for 64×32×32×32) instead of cutting a window out of
 * x per tap means x is rearranged once per phase and never sliced: wasm's Slice copies its whole input
 * on every call (BackendWasm.readSync), and its StridedSlice, Tile and rank-5+ Transpose walk index
 * vectors per element, which made window-per-tap versions 2.5–14× slower than the forward convolution.
 * The zero rows cost (Hs·Ws)/(OH·OW) extra multiply-adds, 13 % for a 3×3 'same' convolution on 32×32.
 * Phases are taken by a depthwise convolution with a one-hot sh×sw filter and stride s: exact for
 * finite x (x·1 + 0·x'), about 2 ms for 64×32×32×80 on wasm.
 *
 * Operand layout matters on wasm: its BatchMatMul runs XNNPACK only when neither operand is transposed
 * and the batch is 1, and a scalar loop otherwise (tfjs-backend-wasm/src/cc/batch_mat_mul_impl.cc); it
 * packs the second operand once per tensor id, so all the taps of a phase share one packing of X_p.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Conv2DBackpropFilterAttrs, KernelBackend, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelComposer } from './compose.js';
import { phase, phaseGrid } from './phases.js';

/** What computes dW once the convolution is known: this file's composite, or wasm's (../wasm/conv2d_backprop_filter.ts). */
export type FilterGradientBody = (k: KernelComposer, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo) => TensorInfo;

export function conv2dBackpropFilterConfig(backendName: string, body: FilterGradientBody = filterGradient): KernelConfig {
  const kernelFunc: KernelFunc = ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as Conv2DBackpropFilterAttrs;
    if (dataFormat !== 'NHWC') {
      throw new Error(`Conv2DBackpropFilter on ${backendName} (trainpool) supports dataFormat NHWC only. Received: ${dataFormat}`);
    }
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    return KernelComposer.compose(backendName, backend as KernelBackend, (k) => body(k, x, dy, info));
  };
  return { kernelName: tf.Conv2DBackpropFilter, backendName, kernelFunc };
}

function filterGradient(k: KernelComposer, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: n, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight: sh, strideWidth: sw } = info;
  const { gridHeight, gridWidth, padding } = phaseGrid(info);
  const positions = n * gridHeight * gridWidth;

  const phases: TensorInfo[] = [];
  for (let ph = 0; ph < sh; ph++) {
    for (let pw = 0; pw < sw; pw++) phases.push(k.reshape(phase(k, x, [ph, pw], [sh, sw], padding), [1, positions, inChannels]));
  }

  const dyT = k.run('Transpose', { x: dy }, { perm: [3, 0, 1, 2] }); // [Cout, N, OH, OW]
  const taps: TensorInfo[] = [];
  for (let kh = 0; kh < filterHeight; kh++) {
    for (let kw = 0; kw < filterWidth; kw++) {
      const a = Math.floor(kh / sh);
      const b = Math.floor(kw / sw);
      let moved = dyT;
      if (gridHeight !== outHeight || gridWidth !== outWidth) {
        const paddings = [[0, 0], [0, 0], [a, gridHeight - outHeight - a], [b, gridWidth - outWidth - b]];
        moved = k.run('PadV2', { x: dyT }, { paddings, constantValue: 0 });
      }
      const dyMatrix = k.reshape(moved, [1, outChannels, positions]);
      const xMatrix = phases[(kh % sh) * sw + (kw % sw)];
      taps.push(k.run('BatchMatMul', { a: dyMatrix, b: xMatrix }, { transposeA: false, transposeB: false }));
      k.dispose(dyMatrix);
      if (moved !== dyT) k.dispose(moved);
    }
  }
  const stacked = taps.length === 1 ? taps[0] : k.run('Concat', taps, { axis: 0 }); // [T, Cout, Cin]
  const transposed = k.run('Transpose', { x: stacked }, { perm: [0, 2, 1] });
  return k.reshape(transposed, [filterHeight, filterWidth, inChannels, outChannels]);
}
