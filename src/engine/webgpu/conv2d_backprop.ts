/**
 * Conv2DBackpropFilter and Conv2DBackpropInput on webgpu as implicit GEMMs (implicit_gemm.ts), NHWC,
 * dilation 1. tfjs-backend-webgpu 4.22 computes both with one thread per output value looping over the
 * whole reduction (conv_backprop_webgpu.ts; the matmul form of the input gradient is off by default,
 * WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE): the filter gradient of a MiniGoogLeNet step took 175 of 205 ms of
 * GPU time on an H200, a thread per filter value summing over all N·OH·OW positions of the batch.
 *
 * With forward padding (pt, pl) and strides (sh, sw):
 *   dW[kh, kw, ci, co] = Σ_{n, oh, ow} x[n, oh·sh + kh − pt, ow·sw + kw − pl, ci] · dy[n, oh, ow, co]
 *     GEMM with m = (kh, kw, ci), n = co, k = (n, oh, ow): few output tiles and a long k, so split K.
 *   dx[n, ih, iw, ci] = Σ_{kh, kw, co} dy[n, (ih + pt − kh)/sh, (iw + pl − kw)/sw, co] · W[kh, kw, ci, co]
 *     over the taps where both divisions are exact and land inside dy; GEMM with m = (n, ih, iw), n = ci,
 *     k = (kh, kw, co). With a stride, only the taps kh ≡ ih + pt (mod sh) (and likewise for columns)
 *     are exact: dx's rows and columns fall into sh·sw residue classes, each a GEMM over its own taps
 *     (for 3×3 stride 2: 4, 2, 2 and 1 of the 9), run as groups of one dispatch. Without that, three
 *     quarters of k would be zeros, loaded as zeros and multiplied.
 * Other layouts and dilations go to tfjs' own kernels.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Conv2DBackpropFilterAttrs, Conv2DBackpropInputAttrs, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { gemmUniforms, implicitGemmProgram, planSplits, sumSplitsProgram, sumSplitsUniforms, type GemmSpec } from './implicit_gemm.js';
import { residues } from '../plans/residues.js';
import { runProgram } from './program.js';

/**
 * The convolution's geometry as WGSL constants: integer division and remainder by a constant compile to
 * a multiply and shift, where by a uniform they are a long instruction sequence, and the loaders do
 * several per value loaded. Costs one pipeline per distinct geometry (about 20 in MiniGoogLeNet).
 */
export function geometry(c: tf.backend_util.Conv2DInfo): { key: string; wgsl: string } {
  const values: Record<string, number> = {
    batch: c.batchSize, inH: c.inHeight, inW: c.inWidth, inC: c.inChannels, outH: c.outHeight, outW: c.outWidth,
    outC: c.outChannels, kH: c.filterHeight, kW: c.filterWidth, strideH: c.strideHeight, strideW: c.strideWidth,
    padTop: c.padInfo.top, padLeft: c.padInfo.left,
  };
  return {
    key: Object.values(values).join('_'),
    wgsl: Object.entries(values).map(([name, v]) => `const ${name} = ${v};`).join('\n'),
  };
}

/**
 * WGSL over the geometry constants and an input `x`: the value of zero-padded x that filter position
 * `tapChannel` = (kh, kw, ci) meets at output position `position` = (n, oh, ow). The forward convolution's
 * A operand, and the filter gradient's with its axes swapped.
 */
export const X_PATCH = `fn xPatch(position : i32, tapChannel : i32) -> f32 {
  let ci = tapChannel % inC;
  let tap = tapChannel / inC;
  let kw = tap % kW;
  let kh = tap / kW;
  let ow = position % outW;
  let rest = position / outW;
  let oh = rest % outH;
  let b = rest / outH;
  let ih = oh * strideH + kh - padTop;
  let iw = ow * strideW + kw - padLeft;
  if (ih < 0 || ih >= inH || iw < 0 || iw >= inW) { return 0.0; }
  return x[((b * inH + ih) * inW + iw) * inC + ci];
}`;

const filterGradSpec = (c: tf.backend_util.Conv2DInfo, g = geometry(c)): GemmSpec => ({
  key: `conv2d_filter_grad_${g.key}`,
  inputs: ['x', 'dy'],
  uniforms: '',
  aAlong: 'm', // m = (kh, kw, ci): ci runs along x's channels
  bAlong: 'n', // n = co: along dy's channels
  loaders: `${g.wgsl}
${X_PATCH}
fn loadA(k : i32, m : i32, z : i32) -> f32 { return xPatch(k, m); }
fn loadB(k : i32, n : i32, z : i32) -> f32 {
  return dy[k * outC + n];
}`,
});

const inputGradSpec = (c: tf.backend_util.Conv2DInfo, g = geometry(c)): GemmSpec => ({
  key: `conv2d_input_grad_${g.key}`,
  inputs: ['dy', 'w'], // not 'filter': a WGSL reserved word
  uniforms: '',
  aAlong: 'k', // k = (kh, kw, co): co runs along dy's channels
  bAlong: 'k', // W[kh, kw, ci, co]: co is W's innermost axis
  loaders: `${g.wgsl}
fn loadA(k : i32, m : i32, z : i32) -> f32 {
  let co = k % outC;
  let tap = k / outC;
  let kw = tap % kW;
  let kh = tap / kW;
  let iw = m % inW;
  let rest = m / inW;
  let ih = rest % inH;
  let b = rest / inH;
  let hs = ih + padTop - kh;
  let ws = iw + padLeft - kw;
  if (hs < 0 || ws < 0 || hs % strideH != 0 || ws % strideW != 0) { return 0.0; }
  let oh = hs / strideH;
  let ow = ws / strideW;
  if (oh >= outH || ow >= outW) { return 0.0; }
  return dy[((b * outH + oh) * outW + ow) * outC + co];
}
fn loadB(k : i32, n : i32, z : i32) -> f32 {
  let co = k % outC;
  let tap = k / outC;
  return w[(tap * inC + n) * outC + co];
}`,
});

/** A WGSL function of the group z returning values[z]. */
const table = (name: string, values: number[]) =>
  `fn ${name}(z : i32) -> i32 {\n${values.map((v, z) => `  if (z == ${z}) { return ${v}; }`).join('\n')}\n  return 0;\n}`;

/**
 * The strided input gradient as one GEMM per residue pair z = rh·sw + rw: m = (n, t, u) over that pair's
 * dx rows and columns, k = (jh, jw, co) over its taps kh = rh + sh·jh, kw = rw + sw·jw; dy's row for
 * row t and tap jh is q0 + t − jh.
 */
function stridedInputGradSpec(c: tf.backend_util.Conv2DInfo, g = geometry(c)) {
  const rowsOf = residues(c.inHeight, c.filterHeight, c.strideHeight, c.padInfo.top);
  const colsOf = residues(c.inWidth, c.filterWidth, c.strideWidth, c.padInfo.left);
  const pairs = rowsOf.flatMap((rh, i) => colsOf.map((rw, j) => ({ i, j, rh, rw })));
  const field = (f: (p: (typeof pairs)[number]) => number) => pairs.map(f);
  const groupM = field((p) => c.batchSize * p.rh.rows * p.rw.rows);
  const spec: GemmSpec = {
    key: `conv2d_input_grad_strided_${g.key}`,
    inputs: ['dy', 'w'],
    uniforms: '',
    aAlong: 'k',
    bAlong: 'k',
    loaders: `${g.wgsl}
${table('resRow', field((p) => p.i))}
${table('resCol', field((p) => p.j))}
${table('tapsH', field((p) => p.rh.taps))}
${table('tapsW', field((p) => p.rw.taps))}
${table('q0H', field((p) => p.rh.q0))}
${table('q0W', field((p) => p.rw.q0))}
${table('rowsH', field((p) => p.rh.rows))}
${table('colsW', field((p) => p.rw.rows))}
${table('firstH', field((p) => p.rh.first))}
${table('firstW', field((p) => p.rw.first))}
fn loadA(k : i32, m : i32, z : i32) -> f32 {
  let co = k % outC;
  let tap = k / outC;
  let jw = tap % tapsW(z);
  let jh = tap / tapsW(z);
  let u = m % colsW(z);
  let rest = m / colsW(z);
  let t = rest % rowsH(z);
  let b = rest / rowsH(z);
  let oh = q0H(z) + t - jh;
  let ow = q0W(z) + u - jw;
  if (oh < 0 || oh >= outH || ow < 0 || ow >= outW) { return 0.0; }
  return dy[((b * outH + oh) * outW + ow) * outC + co];
}
fn loadB(k : i32, n : i32, z : i32) -> f32 {
  let co = k % outC;
  let tap = k / outC;
  let kh = resRow(z) + strideH * (tap / tapsW(z));
  let kw = resCol(z) + strideW * (tap % tapsW(z));
  return w[((kh * kW + kw) * inC + n) * outC + co];
}`,
    groups: {
      count: pairs.length,
      maxM: Math.max(...groupM),
      outputShape: [c.batchSize, c.inHeight, c.inWidth, c.inChannels],
      wgsl: `${table('groupM', groupM)}
${table('groupK', field((p) => p.rh.taps * p.rw.taps * c.outChannels))}
fn storeC(m : i32, n : i32, z : i32, v : f32) {
  let u = m % colsW(z);
  let rest = m / colsW(z);
  let t = rest % rowsH(z);
  let b = rest / rowsH(z);
  let ih = firstH(z) + strideH * t;
  let iw = firstW(z) + strideW * u;
  result[((b * inH + ih) * inW + iw) * inC + n] = v;
}`,
    },
  };
  return spec;
}

function convInfo(xShape: number[], filterShape: number[], attrs: { strides: number | [number, number]; pad: unknown; dimRoundingMode?: unknown }) {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad as 'same',
    attrs.dimRoundingMode as 'floor' | undefined,
  );
}

export function conv2dBackpropFilterWebgpuConfig(stock: KernelFunc | undefined): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const a = attrs as unknown as Conv2DBackpropFilterAttrs;
    if (a.dataFormat !== 'NHWC' || x.dtype !== 'float32') return fallback(stock, args, 'Conv2DBackpropFilter', a.dataFormat);
    const c = convInfo(x.shape, a.filterShape, a);
    const b = backend as WebGPUBackend;
    const shape = { m: c.filterHeight * c.filterWidth * c.inChannels, n: c.outChannels, k: c.batchSize * c.outHeight * c.outWidth };
    const { splits, kPerSplit } = planSplits(shape);
    const product = runProgram(b, implicitGemmProgram(filterGradSpec(c), shape, splits), [x, dy], gemmUniforms(shape, kPerSplit));
    const filterShape = [...a.filterShape];
    if (splits === 1) return { dataId: product.dataId, shape: filterShape, dtype: 'float32' };
    const summed = runProgram(b, sumSplitsProgram(filterShape), [product], sumSplitsUniforms(shape.m * shape.n, splits));
    b.disposeData(product.dataId);
    return summed;
  };
  return { kernelName: tf.Conv2DBackpropFilter, backendName: 'webgpu', kernelFunc };
}

export function conv2dBackpropInputWebgpuConfig(stock: KernelFunc | undefined): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args;
    const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
    const a = attrs as unknown as Conv2DBackpropInputAttrs;
    if (a.dataFormat !== 'NHWC' || dy.dtype !== 'float32') return fallback(stock, args, 'Conv2DBackpropInput', a.dataFormat);
    const c = convInfo(a.inputShape, filter.shape, a);
    if (c.strideHeight * c.strideWidth > 1) {
      const spec = stridedInputGradSpec(c);
      const groups = spec.groups!;
      const shape = { m: groups.maxM, n: c.inChannels, k: c.filterHeight * c.filterWidth * c.outChannels };
      const product = runProgram(backend as WebGPUBackend, implicitGemmProgram(spec, shape, 1), [dy, filter], gemmUniforms(shape, shape.k));
      return { dataId: product.dataId, shape: [...a.inputShape], dtype: 'float32' };
    }
    const shape = { m: c.batchSize * c.inHeight * c.inWidth, n: c.inChannels, k: c.filterHeight * c.filterWidth * c.outChannels };
    const product = runProgram(backend as WebGPUBackend, implicitGemmProgram(inputGradSpec(c), shape, 1), [dy, filter], gemmUniforms(shape, shape.k));
    return { dataId: product.dataId, shape: [...a.inputShape], dtype: 'float32' };
  };
  return { kernelName: tf.Conv2DBackpropInput, backendName: 'webgpu', kernelFunc };
}

function fallback(stock: KernelFunc | undefined, args: Parameters<KernelFunc>[0], kernel: string, dataFormat: string) {
  if (stock === undefined) throw new Error(`${kernel} on webgpu (trainpool) needs NHWC float32 when tfjs has no kernel of its own. Received: dataFormat=${dataFormat}`);
  return stock(args);
}
