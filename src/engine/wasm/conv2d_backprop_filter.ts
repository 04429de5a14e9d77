/**
 * Conv2DBackpropFilter on wasm as XNNPACK matrix products over chunks of the batch, whose operands are
 * windows of two tensors laid out once per call, so no tap copies anything.
 *
 * The composite of composite/conv2d_backprop_filter.ts (which cpu keeps) does one product per tap over every
 * position of the batch: K = N·Hs·Ws ≈ 74,000 for 64 images of 32×32. XNNPACK's GEMM does not block K,
 * so its operand panels (K × 8 values) stream from memory for every block of rows: 24–27 GFLOP/s on this
 * machine, where products with K ≈ 2,000–4,000 run at 32–36 and the forward convolution at 36–37. And
 * every tap moved all of dy with a PadV2 first. Here:
 *
 *   X_p     each phase of zero-padded x, [N, Hs, Ws, Cin] (as in the composite): rows of images
 *           n₀..n₁ are one contiguous [(n₁ − n₀)·Hs·Ws, Cin] block, a view;
 *   D       dy transposed per chunk of g images to [Cout, g·Hs·Ws] and placed at the top left of each
 *           image's Hs × Ws phase grid, zeros elsewhere, after `lead` zeros.
 *
 * dy moved by (a, b) grid cells — tap (kh, kw)'s dy_ab of the composite — is D read `shift = a·Ws + b`
 * values earlier: a cell (i, j) reads D at (i − a, j − b) when j ≥ b, and otherwise the right margin of
 * the row above (j − b + Ws ≥ OW: zeros), while rows before the first read the bottom rows of the
 * previous image, of the previous channel's row, or the lead (zeros: Hs ≥ OH + a). So tap (kh, kw)'s
 * [Cout, Cin] contribution from a chunk is one product of two views:
 *   view(D, chunk start − shift) [Cout, g·Hs·Ws]  ·  view(X_p, chunk start) [g·Hs·Ws, Cin]
 * and the taps of a phase share the second operand, which the wasm backend packs once per tensor id.
 * Contributions are summed in double precision on the host; the result is laid out as [KH, KW, Cin, Cout].
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelComposer } from '../composite/compose.js';
import { phase, phaseGrid } from '../composite/phases.js';

/**
 * Which of the two ways below a layer's filter gradient takes on wasm. Layers with few channels (the
 * `small` and `tiny` models', a grayscale input layer) go by one convolution; MiniGoogLeNet's, whose
 * chunked products run near XNNPACK's GEMM peak, stay as they were. Measured side by side with
 * `npm run bench:filter-gradient` (bench/filter-gradient.ts): the small model's 3×3 layers 1.5–2× faster
 * by convolution (the grayscale input layer at batch 16: 14 → 7 ms); MiniGoogLeNet's 32×32 layers 1.2–1.7×
 * slower by it, its 15×15 and 7×7 ones 1.0–1.3× faster in one run and slower in another (this machine's
 * noise), so they stay; 1×1 layers, one product per chunk anyway, no faster.
 */
export function filterGradientByConvolutionPays(info: tf.backend_util.Conv2DInfo): boolean {
  return info.filterHeight * info.filterWidth > 1 && info.inChannels <= 64 && info.outChannels <= 32;
}

/** Conv2DBackpropFilter's body on wasm: the faster of the two ways for this layer (a fixed rule, so runs stay reproducible). */
export function filterGradientWasmAuto(k: KernelComposer, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  return filterGradientByConvolutionPays(info) ? filterGradientByConvolution(k, x, dy, info) : filterGradientWasm(k, x, dy, info);
}

/** About how many grid positions (K) one product takes: where XNNPACK ran fastest here (bench/ENGINE.md). */
export const CHUNK_POSITIONS = 1024;

export function filterGradientWasm(k: KernelComposer, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: n, inChannels: cin, outHeight: oh, outWidth: ow, outChannels: cout } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const { gridHeight, gridWidth, padding } = phaseGrid(info);
  const cells = gridHeight * gridWidth;
  const perChunk = Math.max(1, Math.min(n, Math.round(CHUNK_POSITIONS / cells)));
  const lead = Math.floor((kh - 1) / sh) * gridWidth + Math.floor((kw - 1) / sw);

  const phases: TensorInfo[] = [];
  for (let ph = 0; ph < sh; ph++) for (let pw = 0; pw < sw; pw++) phases.push(phase(k, x, [ph, pw], [sh, sw], padding));

  const d = k.empty([lead + n * cout * cells]);
  const wasm = k.backend as BackendWasm;
  layOutDy(wasm.typedArrayFromHeap(dy) as Float32Array, wasm.typedArrayFromHeap(d) as Float32Array, { n, oh, ow, cout, gridWidth, cells, perChunk, lead });

  const taps = kh * kw;
  const sums = new Float64Array(taps * cout * cin); // [tap, Cout, Cin]
  for (let n0 = 0; n0 < n; n0 += perChunk) {
    const images = Math.min(perChunk, n - n0);
    const positions = images * cells;
    const start = lead + n0 * cout * cells; // this chunk's [Cout, positions] block of D
    for (let p = 0; p < sh * sw; p++) {
      const xChunk = k.view(phases[p], n0 * cells * cin, [1, positions, cin]);
      for (let tap = 0; tap < taps; tap++) {
        const [r, c] = [Math.floor(tap / kw), tap % kw];
        if ((r % sh) * sw + (c % sw) !== p) continue;
        const shift = Math.floor(r / sh) * gridWidth + Math.floor(c / sw);
        const dyChunk = k.view(d, start - shift, [1, cout, positions]);
        const product = k.run('BatchMatMul', { a: dyChunk, b: xChunk }, { transposeA: false, transposeB: false });
        const values = wasm.typedArrayFromHeap(product) as Float32Array;
        const base = tap * cout * cin;
        for (let i = 0; i < values.length; i++) sums[base + i] += values[i];
        k.dispose(product);
        k.disposeView(dyChunk);
      }
      k.disposeView(xChunk);
    }
  }

  const out = k.empty([kh, kw, cin, cout]);
  const dw = wasm.typedArrayFromHeap(out) as Float32Array;
  for (let tap = 0; tap < taps; tap++) {
    for (let co = 0; co < cout; co++) {
      for (let ci = 0; ci < cin; ci++) dw[(tap * cin + ci) * cout + co] = sums[(tap * cout + co) * cin + ci];
    }
  }
  return out;
}

interface Layout {
  n: number;
  oh: number;
  ow: number;
  cout: number;
  gridWidth: number;
  cells: number;
  perChunk: number;
  lead: number;
}

/** D[lead + chunk block + co·(images·cells) + image·cells + i·Ws + j] = dy[n, i, j, co]; zeros elsewhere. */
function layOutDy(dy: Float32Array, d: Float32Array, { n, oh, ow, cout, gridWidth, cells, perChunk, lead }: Layout): void {
  d.fill(0);
  for (let image = 0; image < n; image++) {
    const n0 = image - (image % perChunk);
    const rowLength = Math.min(perChunk, n - n0) * cells; // one channel's row of this chunk's block
    const base = lead + n0 * cout * cells + (image - n0) * cells;
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        const from = ((image * oh + i) * ow + j) * cout;
        const to = base + i * gridWidth + j;
        for (let co = 0; co < cout; co++) d[to + co * rowLength] = dy[from + co];
      }
    }
  }
}

/**
 * The same gradient as one forward convolution (XNNPACK's, which builds its own indirection and runs at
 * the forward pass's speed), for layers with few channels, where filterGradientWasm's products are too
 * small to amortize a call: 9 taps × a product per chunk of [Cout, K]·[K, Cin] with Cin = 1 for a
 * grayscale input layer. With the batch as the channels:
 *
 *   dW[kh, kw, ci, co] = Σ_{n,i,j} x[n, i·sh + kh − pt, j·sw + kw − pl, ci] · dy[n, i, j, co]
 *
 * is a convolution of x laid out as [Cin, H, W, N] (Cin images of N channels) with dy laid out as the
 * filter [OH, OW, N, Cout], dilated by the stride, padded by the layer's top/left padding: its output
 * [Cin, KH', KW', Cout] (KH' ≥ KH; the extra rows of a 'valid' layer whose last rows are never read are
 * cropped) transposed to [KH, KW, Cin, Cout]. XNNPACK sums over K = N·OH·OW in float32, as a framework's
 * convolution does.
 */
export function filterGradientByConvolution(k: KernelComposer, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, inChannels: cin, outChannels: cout } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  // Rows the dilated "filter" needs below the input so that KH outputs exist (none when they exist already).
  const bottom = Math.max(0, kh - 1 + sh * (oh - 1) - (h - 1) - top);
  const right = Math.max(0, kw - 1 + sw * (ow - 1) - (w - 1) - left);
  const xt = k.run('Transpose', { x }, { perm: [3, 1, 2, 0] });
  const filter = k.run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] });
  let g = k.run('Conv2D', { x: xt, filter }, {
    strides: [1, 1],
    pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    dataFormat: 'NHWC',
    dilations: [sh, sw],
    dimRoundingMode: undefined,
  });
  k.dispose(xt);
  k.dispose(filter);
  if (g.shape[1] !== kh || g.shape[2] !== kw) g = k.run('Slice', { x: g }, { begin: [0, 0, 0, 0], size: [cin, kh, kw, cout] });
  return k.run('Transpose', { x: g }, { perm: [1, 2, 0, 3] });
}
