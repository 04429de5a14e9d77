/**
 * MaxPoolGrad for wasm in JavaScript: 0.13 s of a MiniGoogLeNet step at batch 64 went to tfjs-backend-wasm
 * 4.22's C++ kernel for one 3×3/2 pooling of 64×32×32×80 (a downsample module); this loop, channels
 * innermost as NHWC stores them, takes about a quarter of that.
 *
 * Semantics are tfjs' (tfjs-backend-cpu maxPoolPositions): each window sends its dy to the first
 * position, in row-major window order, holding the window's largest value (a strict > from −∞, so ties
 * go to the first, and a window of only NaN or −∞ passes no gradient); positions receiving from several
 * windows add up.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, MaxPoolGradAttrs, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { hostKernel, type HostBackendName } from './tensors.js';

function poolInfo(x: TensorInfo, attrs: NamedAttrMap): tf.backend_util.Conv2DInfo {
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as MaxPoolGradAttrs;
  return tf.backend_util.computePool2DInfo(x.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
}

function maxPoolGrad([dy, x]: Float32Array[], [dx]: Float32Array[], attrs: NamedAttrMap, [, input]: TensorInfo[]): void {
  const info = poolInfo(input, attrs);
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, strideHeight, strideWidth } = info;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw, padInfo } = info;
  dx.fill(0);
  const best = new Float32Array(c);
  const at = new Int32Array(c);
  for (let b = 0; b < batchSize; b++) {
    for (let yr = 0; yr < outHeight; yr++) {
      const r0 = yr * strideHeight - padInfo.top;
      for (let yc = 0; yc < outWidth; yc++) {
        const c0 = yc * strideWidth - padInfo.left;
        best.fill(-Infinity);
        at.fill(-1);
        for (let r = Math.max(0, r0); r < Math.min(inHeight, r0 + fh); r++) {
          for (let col = Math.max(0, c0); col < Math.min(inWidth, c0 + fw); col++) {
            const base = ((b * inHeight + r) * inWidth + col) * c;
            for (let d = 0; d < c; d++) {
              const v = x[base + d];
              if (v > best[d]) {
                best[d] = v;
                at[d] = base + d;
              }
            }
          }
        }
        const from = ((b * outHeight + yr) * outWidth + yc) * c;
        for (let d = 0; d < c; d++) if (at[d] >= 0) dx[at[d]] += dy[from + d];
      }
    }
  }
}

export function hostMaxPoolGradKernel(backendName: HostBackendName): KernelConfig {
  return { kernelName: tf.MaxPoolGrad, backendName, kernelFunc: hostKernel(backendName, tf.MaxPoolGrad, ['dy', 'input'], ([, x]) => [x.shape], maxPoolGrad) };
}
