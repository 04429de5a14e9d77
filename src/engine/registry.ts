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
// happen before registerProjectGradients replaces four of them, never after, which would undo ours.
import '@tensorflow/tfjs-layers';
import { installFusedBatchNormalization } from './patches/batch_norm_layer.js';
import { batchNormTrainingGradConfig } from './ops/batch_norm_training.js';
import { conv2dBackpropFilterConfig } from './composite/conv2d_backprop_filter.js';
import { filterGradientWasmAuto } from './wasm/conv2d_backprop_filter.js';
import { stridedInputGradient } from './wasm/conv2d_backprop_input_strided.js';
import { conv2dBackpropInputConfig } from './composite/conv2d_backprop_input.js';
import { fusedBatchNormGradConfig } from './gradients/fused_batch_norm_grad.js';
import { hostBatchNormKernels } from './wasm-and-cpu/batch_norm.js';
import { hostElementwiseKernels, wasmIdentityKernel } from './wasm-and-cpu/elementwise.js';
import { wasmAvgPoolGradKernel } from './wasm-and-cpu/avg_pool_grad.js';
import { hostMaxPoolGradKernel } from './wasm-and-cpu/max_pool_grad.js';
import { installInputConvolution } from './patches/input_convolution.js';
import { meanGradConfig } from './gradients/mean_grad.js';
import { PACK } from './ops/pack.js';
import { PACK_CPU, PACK_WASM } from './wasm-and-cpu/pack.js';
import { PACK_WEBGPU } from './webgpu/pack.js';
import { reluGradConfig } from './gradients/relu_grad.js';
import { splitVConfig } from './wasm/split_v.js';
import { sumGradConfig } from './gradients/sum_grad.js';
import { WEBGPU_BATCH_NORM_KERNELS } from './webgpu/batch_norm.js';
import { columnSumConfig } from './webgpu/column_sum.js';
import { conv2dBackpropFilterWebgpuConfig, conv2dBackpropInputWebgpuConfig } from './webgpu/conv2d_backprop.js';
import { conv2dForwardWebgpuConfig, fusedConv2dForwardWebgpuConfig } from './webgpu/conv2d_forward.js';
import { WEBGPU_ELEMENTWISE_KERNELS } from './webgpu/elementwise.js';

export type KernelBackendName = 'wasm' | 'cpu' | 'webgpu';

/** The project's BatchNormalization ops and the ReLU gradient: a kernel of their own on webgpu and cpu. */
const BATCH_NORM_OPS = Object.keys(WEBGPU_BATCH_NORM_KERNELS);
const FUSED_OPS = [...BATCH_NORM_OPS, ...Object.keys(WEBGPU_ELEMENTWISE_KERNELS)];

/** Which kernels each backend gets (each file says why; backend.ts has the cpu measurements, bench/ENGINE.md webgpu's and wasm's). */
export const PROJECT_KERNELS: Record<KernelBackendName, readonly string[]> = {
  // Not the ReLU gradient: wasm's Step and Multiply (XNNPACK) do it in 0.75 ns a value, the loop in 2.5.
  wasm: [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput, tf.SplitV, ...BATCH_NORM_OPS, tf.Sum, tf.MaxPoolGrad, tf.AvgPoolGrad, tf.Identity, PACK],
  cpu: [tf.Conv2DBackpropFilter, ...FUSED_OPS, tf.Sum, PACK],
  webgpu: [
    ...FUSED_OPS,
    PACK,
    tf.Conv2DBackpropFilter,
    tf.Conv2DBackpropInput,
    tf.Sum,
  ],
};

type Builder = (backendName: string, stock: KernelFunc | undefined) => KernelConfig;

/** A kernel that only wasm gets: the others' own is fine already (`why`). */
const wasmOnly =
  (kernelName: string, why: string, build: (stock: KernelFunc | undefined) => KernelConfig): Builder =>
  (backendName, stock) => {
    if (backendName !== 'wasm') throw new Error(`the project's ${kernelName} is for wasm (${why}). Received: backend ${backendName}`);
    return build(stock);
  };

const BUILDERS: Record<string, Builder> = {
  [tf.Conv2DBackpropFilter]: (backendName) => conv2dBackpropFilterConfig(backendName, backendName === 'wasm' ? filterGradientWasmAuto : undefined),
  [tf.Conv2DBackpropInput]: (backendName, stock) => conv2dBackpropInputConfig(backendName, stock, backendName === 'wasm' ? stridedInputGradient : undefined),
  [tf.SplitV]: wasmOnly(tf.SplitV, 'it works on the wasm heap', splitVConfig),
  ...Object.fromEntries(FUSED_OPS.map((name) => [name, (backendName: string) => hostKernels(backendName, undefined)[name]])),
  [tf.Sum]: (backendName, stock) => hostKernels(backendName, stock)[tf.Sum],
  [PACK]: (backendName) => (backendName === 'wasm' ? PACK_WASM : PACK_CPU),
  [tf.Identity]: wasmOnly(tf.Identity, 'the others share data already', wasmIdentityKernel),
  [tf.AvgPoolGrad]: wasmOnly(tf.AvgPoolGrad, "cpu's own is JavaScript already", wasmAvgPoolGradKernel),
  [tf.MaxPoolGrad]: wasmOnly(tf.MaxPoolGrad, "cpu's own is JavaScript already", () => hostMaxPoolGradKernel('wasm')),
};

/** JavaScript loops over the values of the CPU backends (wasm-and-cpu/). */
function hostKernels(backendName: string, stockSum: KernelFunc | undefined): Record<string, KernelConfig> {
  if (backendName !== 'wasm' && backendName !== 'cpu') throw new Error(`host kernels run on wasm and cpu only. Received: backend ${backendName}`);
  return { ...hostBatchNormKernels(backendName), ...hostElementwiseKernels(backendName, stockSum) };
}

/** webgpu kernels are WGSL programs of their own (webgpu/), not compositions of tfjs kernels. */
const WEBGPU_BUILDERS: Record<string, Builder> = {
  ...Object.fromEntries(Object.entries({ ...WEBGPU_BATCH_NORM_KERNELS, ...WEBGPU_ELEMENTWISE_KERNELS }).map(([name, config]) => [name, () => config])),
  [tf.Conv2DBackpropFilter]: (_, stock) => conv2dBackpropFilterWebgpuConfig(stock),
  [tf.Conv2DBackpropInput]: (_, stock) => conv2dBackpropInputWebgpuConfig(stock),
  [tf.Sum]: (_, stock) => columnSumConfig(stock),
  [PACK]: () => PACK_WEBGPU,
  [tf.Conv2D]: (_, stock) => conv2dForwardWebgpuConfig(stock),
  [tf.FusedConv2D]: (_, stock) => fusedConv2dForwardWebgpuConfig(stock),
};

/** Opt-in webgpu kernels (setupBackend's kernel set 'project-forward'): the forward convolution (webgpu/conv2d_forward.ts). */
export const WEBGPU_FORWARD_KERNELS: readonly string[] = [tf.Conv2D, tf.FusedConv2D];

/** The kernelFuncs that were registered before ours, by `${backend}/${kernel}`; undefined if none was. */
const stockKernels = new Map<string, KernelFunc | undefined>();

/** Registers the project's kernels for `backendName`; idempotent. Call after tf.setBackend(backendName). */
export function registerProjectKernels(backendName: KernelBackendName, kernelNames: readonly string[] = PROJECT_KERNELS[backendName]): void {
  for (const kernelName of kernelNames) {
    const key = `${backendName}/${kernelName}`;
    if (stockKernels.has(key)) continue;
    const builders = backendName === 'webgpu' ? WEBGPU_BUILDERS : BUILDERS;
    const build = builders[kernelName];
    if (build === undefined) throw new Error(`project kernels for ${backendName} are ${Object.keys(builders).join(', ')}. Received: ${kernelName}`);
    const stock = tf.getKernel(kernelName, backendName)?.kernelFunc;
    stockKernels.set(key, stock);
    if (stock !== undefined) tf.unregisterKernel(kernelName, backendName);
    tf.registerKernel(build(backendName, stock));
  }
}

/** Puts tfjs' own kernels back (or none where tfjs has none), all of them or `kernelNames`; for benchmarks and tests. */
export function unregisterProjectKernels(backendName: KernelBackendName, kernelNames?: readonly string[]): void {
  for (const [key, stock] of stockKernels) {
    const [name, kernelName] = key.split('/');
    if (name !== backendName || (kernelNames !== undefined && !kernelNames.includes(kernelName))) continue;
    tf.unregisterKernel(kernelName, backendName);
    if (stock !== undefined) tf.registerKernel({ kernelName, backendName, kernelFunc: stock });
    stockKernels.delete(key);
  }
}

/**
 * Replaces the Sum, Mean, FusedBatchNorm and Relu gradients (see their files), adds the gradient of the project's
 * BatchNormalization op and routes tfjs-layers' BatchNormalization through it where a backend has its
 * kernels (patches/batch_norm_layer.ts), and lets the first convolution skip its input's gradient
 * (patches/input_convolution.ts); idempotent, backend-independent.
 */
export function registerProjectGradients(): void {
  tf.registerGradient(sumGradConfig);
  tf.registerGradient(meanGradConfig);
  tf.registerGradient(fusedBatchNormGradConfig);
  tf.registerGradient(batchNormTrainingGradConfig);
  tf.registerGradient(reluGradConfig);
  installFusedBatchNormalization();
  installInputConvolution();
}

