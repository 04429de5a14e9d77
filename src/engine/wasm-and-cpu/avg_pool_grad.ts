/**
 * AvgPoolGrad for wasm in JavaScript, for pooling without padding: MiniGoogLeNet's final 7×7 average
 * pooling spreads 64×336 values over 64×7×7×336, which took tfjs-backend-wasm 4.22's kernel 27 ms; a
 * loop writing each value of dx once takes about 2. Each window adds dy/(filter area) to every position
 * it covers, as tfjs' cpu kernel does. Padded pooling goes to the stock kernel (the divisor near edges is
 * where implementations differ).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AvgPoolGradAttrs, KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { hostKernel } from './tensors.js';

function poolInfo(x: TensorInfo, attrs: NamedAttrMap): tf.backend_util.Conv2DInfo {
  const { filterSize, strides, pad } = attrs as unknown as AvgPoolGradAttrs;
  return tf.backend_util.computePool2DInfo(x.shape as [number, number, number, number], filterSize, strides, 1, pad);
}

function avgPoolGrad([dy]: Float32Array[], [dx]: Float32Array[], attrs: NamedAttrMap, [, input]: TensorInfo[]): void {
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, strideHeight, strideWidth, filterHeight: fh, filterWidth: fw } = poolInfo(input, attrs);
  const scale = 1 / (fh * fw);
  dx.fill(0);
  for (let b = 0; b < batchSize; b++) {
    for (let yr = 0; yr < outHeight; yr++) {
      for (let yc = 0; yc < outWidth; yc++) {
        const from = ((b * outHeight + yr) * outWidth + yc) * c;
        for (let r = yr * strideHeight; r < yr * strideHeight + fh; r++) {
          for (let col = yc * strideWidth; col < yc * strideWidth + fw; col++) {
            const to = ((b * inHeight + r) * inWidth + col) * c;
            for (let d = 0; d < c; d++) dx[to + d] += dy[from + d] * scale;
          }
        }
      }
    }
  }
}

export function wasmAvgPoolGradKernel(stock: KernelFunc | undefined): KernelConfig {
  const host = hostKernel('wasm', tf.AvgPoolGrad, ['dy', 'input'], ([, x]) => [x.shape], avgPoolGrad);
  return {
    kernelName: tf.AvgPoolGrad,
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { input } = args.inputs as { input: TensorInfo };
      const { padInfo } = poolInfo(input, args.attrs ?? {});
      const padded = padInfo.top + padInfo.bottom + padInfo.left + padInfo.right > 0;
      if (!padded && input.dtype === 'float32') return host(args);
      if (stock === undefined) throw new Error('AvgPoolGrad on wasm: tfjs registered no stock kernel for padded pooling: this is a bug');
      return stock(args);
    },
  };
}
