/**
 * The project's kernels and gradients, registered over (or beside) tfjs' own.
 *
 * Kernels are per backend and must be registered after the backend has been initialized: replacing a
 * stock kernel before then would skip its setupFunc (wasm kernels bind their C++ entry points there),
 * and the replacements fall back to the stock kernelFunc for cases they do not cover. Gradients are
 * global (tfjs keeps one gradient registry for all backends).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs-core';
// tfjs-core registers none of its gradients by itself under Node; tfjs-layers' Node bundle registers them
// all when first evaluated (it bundles tfjs-core's register_all_gradients). Importing it here makes that
// happen before registerProjectGradients replaces three of them, never after, which would undo ours.
import '@tensorflow/tfjs-layers';
import { conv2dBackpropFilterConfig } from './conv2d_backprop_filter.js';
import { conv2dBackpropInputConfig } from './conv2d_backprop_input.js';
import { fusedBatchNormGradConfig } from './fused_batch_norm_grad.js';
import { meanGradConfig } from './mean_grad.js';
import { splitVConfig } from './split_v.js';
import { sumGradConfig } from './sum_grad.js';

export type KernelBackendName = 'wasm' | 'cpu' | 'webgpu';

/** Which kernels each backend gets (each file says why; backend.ts has the cpu measurements). */
export const PROJECT_KERNELS: Record<KernelBackendName, readonly string[]> = {
  wasm: [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput, tf.SplitV],
  cpu: [tf.Conv2DBackpropFilter],
  webgpu: [],
};

const BUILDERS: Record<string, (backendName: string, stock: KernelFunc | undefined) => KernelConfig> = {
  [tf.Conv2DBackpropFilter]: (backendName) => conv2dBackpropFilterConfig(backendName),
  [tf.Conv2DBackpropInput]: conv2dBackpropInputConfig,
  [tf.SplitV]: (backendName, stock) => {
    if (backendName !== 'wasm') throw new Error(`the project's SplitV works on the wasm heap only. Received: backend ${backendName}`);
    return splitVConfig(stock);
  },
};

/** The kernelFuncs that were registered before ours, by `${backend}/${kernel}`; undefined if none was. */
const stockKernels = new Map<string, KernelFunc | undefined>();

/** Registers the project's kernels for `backendName`; idempotent. Call after tf.setBackend(backendName). */
export function registerProjectKernels(backendName: KernelBackendName, kernelNames: readonly string[] = PROJECT_KERNELS[backendName]): void {
  for (const kernelName of kernelNames) {
    const key = `${backendName}/${kernelName}`;
    if (stockKernels.has(key)) continue;
    const build = BUILDERS[kernelName];
    if (build === undefined) throw new Error(`project kernels are ${Object.keys(BUILDERS).join(', ')}. Received: ${kernelName}`);
    const stock = tf.getKernel(kernelName, backendName)?.kernelFunc;
    stockKernels.set(key, stock);
    if (stock !== undefined) tf.unregisterKernel(kernelName, backendName);
    tf.registerKernel(build(backendName, stock));
  }
}

/** Puts tfjs' own kernels back (or none where tfjs has none); for benchmarks and tests. */
export function unregisterProjectKernels(backendName: KernelBackendName): void {
  for (const [key, stock] of stockKernels) {
    const [name, kernelName] = key.split('/');
    if (name !== backendName) continue;
    tf.unregisterKernel(kernelName, backendName);
    if (stock !== undefined) tf.registerKernel({ kernelName, backendName, kernelFunc: stock });
    stockKernels.delete(key);
  }
}

/** Replaces the Sum, Mean and FusedBatchNorm gradients (see their files); idempotent, backend-independent. */
export function registerProjectGradients(): void {
  tf.registerGradient(sumGradConfig);
  tf.registerGradient(meanGradConfig);
  tf.registerGradient(fusedBatchNormGradConfig);
}

