/**
 * Conv2DBackpropInput for strides above 1 on wasm: one stride-1 convolution per residue pair, each with
 * only the taps of that residue, interleaved into dx on the host.
 *
 * composite/conv2d_backprop_input.ts's sub-pixel form pads every residue's sub-filter to ⌈K/s⌉ taps a side so that
 * all residues are one convolution: for 3×3 stride 2 that is 16 taps where the filter has 9, so 1.8× the
 * multiply-adds, and its depth-to-space and crop cost two more passes (wasm's Slice of a 64×16×16×144
 * tensor took 38 ms). Here residue (rh, rw) convolves dy with its own M_rh × M_rw sub-filter
 * (2×2, 2×1, 1×2 and 1×1 for 3×3 stride 2: the 9 taps), and one pass writes each result into its
 * rows and columns of dx. Along an axis, with dx row i = q·s + r − pt:
 *   dx[q·s + r − pt] = Σ_{m < M_r} dy[q − m] · W[r + s·m],   M_r = ⌈(K − r)/s⌉,
 * a stride-1 correlation of dy with W[r + s·(M_r − 1 − j)], j < M_r, whose output row t is q = t + q₀.
 * A residue with no tap (a filter smaller than the stride) leaves its rows of dx zero.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelComposer } from '../composite/compose.js';
import { residues, type Residue } from '../plans/residues.js';

/** A residue along one axis, and the dy padding of the stride-1 convolution that computes its rows. */
interface Planned extends Residue {
  padBefore: number;
  padAfter: number;
  skip: number; // leading output rows of the convolution that are not dx rows (dx row `first` comes next)
}

function planned(size: number, outSize: number, kernel: number, stride: number, pad: number): Planned[] {
  return residues(size, kernel, stride, pad).map((res) => {
    const before = res.taps - 1 - res.q0; // dy padding that puts dy[q0 − (M − 1)] at the first output row
    const padBefore = Math.max(0, before);
    const skip = Math.max(0, -before);
    return { ...res, padBefore, skip, padAfter: Math.max(0, res.rows + skip + res.taps - 1 - padBefore - outSize) };
  });
}

export function stridedInputGradient(k: KernelComposer, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: n, inHeight, inWidth, inChannels: cin, outHeight, outWidth, outChannels: cout } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const wasm = k.backend as BackendWasm;
  const dx = k.empty([n, inHeight, inWidth, cin]);
  const rowResidues = planned(inHeight, outHeight, kh, sh, padInfo.top);
  const colResidues = planned(inWidth, outWidth, kw, sw, padInfo.left);
  const w = k.backend.readSync(filter.dataId) as Float32Array; // a copy, [KH, KW, Cin, Cout]
  // Pixels of a residue pair with no tap get no convolution: zero them all first (before any is written).
  if (rowResidues.some((r) => r.taps === 0) || colResidues.some((r) => r.taps === 0)) (wasm.typedArrayFromHeap(dx) as Float32Array).fill(0);
  for (const rh of rowResidues) {
    for (const rw of colResidues) {
      if (rh.rows === 0 || rw.rows === 0 || rh.taps === 0 || rw.taps === 0) continue;
      const g = new Float32Array(rh.taps * rw.taps * cout * cin); // [M_rh, M_rw, Cout, Cin]
      for (let jh = 0; jh < rh.taps; jh++) {
        for (let jw = 0; jw < rw.taps; jw++) {
          const th = rh.r + sh * (rh.taps - 1 - jh);
          const tw = rw.r + sw * (rw.taps - 1 - jw);
          const to = (jh * rw.taps + jw) * cout * cin;
          const from = (th * kw + tw) * cin * cout;
          for (let ci = 0; ci < cin; ci++) for (let co = 0; co < cout; co++) g[to + co * cin + ci] = w[from + ci * cout + co];
        }
      }
      const subFilter = k.constant(g, [rh.taps, rw.taps, cout, cin]);
      const pad = [[0, 0], [rh.padBefore, rh.padAfter], [rw.padBefore, rw.padAfter], [0, 0]];
      const part = k.run('Conv2D', { x: dy, filter: subFilter }, { strides: 1, pad, dataFormat: 'NHWC', dilations: 1, dimRoundingMode: undefined });
      k.dispose(subFilter);
      const [, partHeight, partWidth] = part.shape;
      // Both are windows of the heap: one view of it, and copyWithin per pixel (no allocation per call).
      const src = wasm.typedArrayFromHeap(part) as Float32Array;
      const heap = new Float32Array(src.buffer);
      const partAt = src.byteOffset / 4;
      const dxAt = (wasm.typedArrayFromHeap(dx) as Float32Array).byteOffset / 4;
      for (let b = 0; b < n; b++) {
        for (let t = 0; t < rh.rows; t++) {
          const row = rh.first + t * sh;
          for (let u = 0; u < rw.rows; u++) {
            const from = partAt + ((b * partHeight + t + rh.skip) * partWidth + u + rw.skip) * cin;
            heap.copyWithin(dxAt + ((b * inHeight + row) * inWidth + rw.first + u * sw) * cin, from, from + cin);
          }
        }
      }
      k.dispose(part);
    }
  }
  return dx;
}
