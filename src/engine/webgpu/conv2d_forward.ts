/**
 * The forward convolution (Conv2D, and FusedConv2D with a bias and no activation, which tfjs-layers'
 * Conv2D emits) as the project's implicit GEMM (implicit_gemm.ts): m = (n, oh, ow), n = co,
 * k = (kh, kw, ci), the bias added as each value is stored.
 *
 * Opt-in (setupBackend's kernel set 'project-forward', bench:engine --kernels project-forward): tfjs'
 * own forward kernel (conv2d_mm_webgpu) is an implicit GEMM already, and whether this one pays can only
 * be measured on a GPU; bench/gpu-check.sh times both. Other layouts, dilations, activations and dtypes
 * go to tfjs' kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Conv2DAttrs, FusedConv2DAttrs, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { X_PATCH, geometry } from './conv2d_backprop.js';
import { gemmUniforms, implicitGemmProgram, type GemmSpec } from './implicit_gemm.js';
import { runProgram } from './program.js';

function forwardSpec(c: tf.backend_util.Conv2DInfo, withBias: boolean, g = geometry(c)): GemmSpec {
  return {
    key: `conv2d_forward_${withBias ? 'bias' : 'plain'}_${g.key}`,
    inputs: withBias ? ['x', 'w', 'bias'] : ['x', 'w'],
    uniforms: '',
    aAlong: 'k', // k = (kh, kw, ci): ci runs along x's channels
    bAlong: 'n', // W[kh, kw, ci, co] as a [k, n] matrix: n = co is its innermost axis
    loaders: `${g.wgsl}
${X_PATCH}
fn loadA(k : i32, m : i32, z : i32) -> f32 { return xPatch(m, k); }
fn loadB(k : i32, n : i32, z : i32) -> f32 {
  return w[k * outC + n];
}`,
    epilogue: withBias ? 'fn epilogue(m : i32, n : i32, v : f32) -> f32 { return v + bias[n]; }' : undefined,
  };
}

function convolve(backend: WebGPUBackend, x: TensorInfo, filter: TensorInfo, bias: TensorInfo | undefined, c: tf.backend_util.Conv2DInfo): TensorInfo {
  const shape = { m: c.batchSize * c.outHeight * c.outWidth, n: c.outChannels, k: c.filterHeight * c.filterWidth * c.inChannels };
  const product = runProgram(backend, implicitGemmProgram(forwardSpec(c, bias !== undefined), shape, 1), bias === undefined ? [x, filter] : [x, filter, bias], gemmUniforms(shape, shape.k));
  return { dataId: product.dataId, shape: c.outShape, dtype: 'float32' };
}

/** The convolution's geometry when this kernel handles it: NHWC, dilation 1, float32. */
function handled(x: TensorInfo, filter: TensorInfo, a: Conv2DAttrs): tf.backend_util.Conv2DInfo | undefined {
  const dilations = typeof a.dilations === 'number' ? [a.dilations, a.dilations] : a.dilations ?? [1, 1];
  if (a.dataFormat !== 'NHWC' || dilations[0] !== 1 || dilations[1] !== 1 || x.dtype !== 'float32' || filter.dtype !== 'float32') return undefined;
  return tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filter.shape as [number, number, number, number], a.strides, 1, a.pad, a.dimRoundingMode);
}

function need(stock: KernelFunc | undefined, kernel: string): KernelFunc {
  if (stock === undefined) throw new Error(`${kernel} on webgpu (trainpool): tfjs registered no kernel to fall back on: this is a bug`);
  return stock;
}

export function conv2dForwardWebgpuConfig(stock: KernelFunc | undefined): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const { x, filter } = args.inputs as { x: TensorInfo; filter: TensorInfo };
    const c = handled(x, filter, args.attrs as unknown as Conv2DAttrs);
    return c === undefined ? need(stock, tf.Conv2D)(args) : convolve(args.backend as WebGPUBackend, x, filter, undefined, c);
  };
  return { kernelName: tf.Conv2D, backendName: 'webgpu', kernelFunc };
}

export function fusedConv2dForwardWebgpuConfig(stock: KernelFunc | undefined): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const { x, filter, bias, preluActivationWeights } = args.inputs as Record<string, TensorInfo | undefined>;
    const a = args.attrs as unknown as FusedConv2DAttrs;
    const linear = a.activation === undefined || a.activation === 'linear';
    const c = linear && preluActivationWeights == null && (bias === undefined || (bias.shape.length === 1 && bias.shape[0] === filter!.shape[3])) ? handled(x!, filter!, a) : undefined;
    return c === undefined ? need(stock, tf.FusedConv2D)(args) : convolve(args.backend as WebGPUBackend, x!, filter!, bias ?? undefined, c);
  };
  return { kernelName: tf.FusedConv2D, backendName: 'webgpu', kernelFunc };
}
