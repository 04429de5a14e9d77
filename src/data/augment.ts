/**
 * Keras' ImageDataGenerator(width_shift_range, height_shift_range, horizontal_flip, fill_mode='nearest')
 * for HWC float32 images: a fractional shift with bilinear interpolation, edges extended by their
 * nearest pixel, then an optional left-right flip. Pure and synchronous, so the augmentation threads and
 * the tests run the same code.
 *
 * What Keras does (keras-preprocessing 1.1.2, the last release, commit 4538765f):
 *   image_data_generator.py get_random_transform, lines 775-778 and 787-790:
 *     tx = uniform(-height_shift_range, height_shift_range) * rows
 *     ty = uniform(-width_shift_range, width_shift_range) * cols
 *   line 809: flip = random() < 0.5 (drawn even when horizontal_flip is off)
 *   affine_transformations.py apply_affine_transform, lines 291-335: the matrix [[1,0,tx],[0,1,ty]]
 *     (re-centring leaves a pure shift unchanged) goes to scipy.ndimage.affine_transform for each
 *     channel with order=1, mode='nearest', and scipy reads out[i, j] = in(i + tx, j + ty).
 *   image_data_generator.py apply_transform, lines 881-882: the flip of columns comes after the shift.
 * tools/make-augment-fixtures.py runs those lines and test/augment.test.ts compares against it.
 *
 * Differs from Keras: the draws come from our counter-based Rng, not NumPy's global state, so the same
 * seed gives other shifts than Keras would; the distribution is the same.
 */
import { TrainpoolError } from '../util/errors.js';
import type { Rng } from '../util/random.js';

/**
 * One image's augmentation. Output pixel (i, j) before the flip is the input sampled at
 * (i + rows, j + cols), so a positive `rows` moves the content up by `rows` pixels and a positive
 * `cols` moves it left; `flip` then mirrors the columns. `rows` is Keras' `tx`, `cols` its `ty`.
 *
 * Keras after keras-preprocessing PR #318 (tf.keras >= 2.6, Keras 3's legacy generator) swaps the two
 * for channels-last images, so there the width draw moves rows; with equal shift ranges on square
 * images the distribution is the same, and the fixtures check both code paths give the same pixels.
 */
export interface Transform {
  rows: number;
  cols: number;
  flip: boolean;
}

export interface AugmentOptions {
  /** Fraction of the height, in [0, 1): rows are shifted by up to ± this × height pixels. */
  heightShiftRange: number;
  /** Fraction of the width, in [0, 1). */
  widthShiftRange: number;
  horizontalFlip: boolean;
}

/** The tutorial's ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True). */
export const TUTORIAL_AUGMENT: Readonly<AugmentOptions> = Object.freeze({
  heightShiftRange: 0.1,
  widthShiftRange: 0.1,
  horizontalFlip: true,
});

/**
 * Draws in Keras' order (height shift, width shift, flip), consuming the flip draw even when flipping is
 * off, so turning flips on or off does not change the shifts of the same seed.
 */
export function drawTransform(rng: Rng, height: number, width: number, opts: AugmentOptions): Transform {
  checkRange('heightShiftRange', opts.heightShiftRange);
  checkRange('widthShiftRange', opts.widthShiftRange);
  const rows = rng.uniform(-opts.heightShiftRange, opts.heightShiftRange) * height;
  const cols = rng.uniform(-opts.widthShiftRange, opts.widthShiftRange) * width;
  const flip = rng.next() < 0.5 && opts.horizontalFlip;
  return { rows, cols, flip };
}

function checkRange(name: string, value: number): void {
  // Keras reads values >= 1 as pixels and lists as choices; only the fractional form is ported.
  if (!(value >= 0 && value < 1)) {
    throw new TrainpoolError('USAGE', `Augmentation option \`${name}\` must be a fraction in [0, 1). Received: ${name}=${value}`);
  }
}

/**
 * Per-axis sampling tables, reused across calls (the function is synchronous and each thread has its
 * own module instance). The shift is separable: output row i always reads input rows lo and lo + 1
 * with weight (1 - w, w) whatever the column, so rows and columns each get one table and the pixel loop
 * does no floor, clamp or division.
 */
let rowLo = new Int32Array(0);
let rowHi = new Int32Array(0);
let rowW = new Float64Array(0);
let colLo = new Int32Array(0);
let colHi = new Int32Array(0);
let colW = new Float64Array(0);

function ensureTables(height: number, width: number): void {
  if (rowLo.length < height) {
    rowLo = new Int32Array(height);
    rowHi = new Int32Array(height);
    rowW = new Float64Array(height);
  }
  if (colLo.length < width) {
    colLo = new Int32Array(width);
    colHi = new Int32Array(width);
    colW = new Float64Array(width);
  }
}

/**
 * Fills lo/hi with the two neighbours' offsets (index × stride) and w with the weight of hi, for
 * output positions 0..n-1 sampling at (reverse ? n-1-k : k) + shift. Clamping both neighbours into
 * [0, n-1] is scipy's mode='nearest' for order 1: beyond an edge both read the edge pixel.
 */
function fillAxis(lo: Int32Array, hi: Int32Array, w: Float64Array, n: number, shift: number, reverse: boolean, stride: number): void {
  const last = n - 1;
  for (let k = 0; k < n; k++) {
    const p = (reverse ? last - k : k) + shift;
    const f = Math.floor(p);
    const a = f < 0 ? 0 : f > last ? last : f;
    const b = f + 1 < 0 ? 0 : f + 1 > last ? last : f + 1;
    lo[k] = a * stride;
    hi[k] = b * stride;
    w[k] = p - f;
  }
}

/**
 * Writes the transformed image to dst[dstOffset ..] from src[srcOffset ..], both height×width×depth
 * float32 values, channels last. src and dst must not overlap. Integer shifts and flips copy values
 * exactly (the other neighbour's weight is 0).
 */
export function applyTransform(
  src: Float32Array,
  srcOffset: number,
  dst: Float32Array,
  dstOffset: number,
  height: number,
  width: number,
  depth: number,
  t: Transform,
): void {
  const size = height * width * depth;
  if (!(Number.isInteger(height) && Number.isInteger(width) && Number.isInteger(depth) && height > 0 && width > 0 && depth > 0)) {
    throw new RangeError(`applyTransform: height, width and depth must be positive integers. Received: ${height}×${width}×${depth}`);
  }
  if (!(Number.isInteger(srcOffset) && srcOffset >= 0 && srcOffset + size <= src.length)) {
    throw new RangeError(`applyTransform: src must hold ${size} values from srcOffset. Received: srcOffset=${srcOffset}, src.length=${src.length}`);
  }
  if (!(Number.isInteger(dstOffset) && dstOffset >= 0 && dstOffset + size <= dst.length)) {
    throw new RangeError(`applyTransform: dst must hold ${size} values from dstOffset. Received: dstOffset=${dstOffset}, dst.length=${dst.length}`);
  }
  if (!(Number.isFinite(t.rows) && Number.isFinite(t.cols))) {
    throw new RangeError(`applyTransform: the shift must be finite. Received: rows=${t.rows}, cols=${t.cols}`);
  }

  ensureTables(height, width);
  const rowStride = width * depth;
  fillAxis(rowLo, rowHi, rowW, height, t.rows, false, rowStride);
  fillAxis(colLo, colHi, colW, width, t.cols, t.flip, depth);

  let o = dstOffset;
  for (let i = 0; i < height; i++) {
    const r0 = srcOffset + rowLo[i];
    const r1 = srcOffset + rowHi[i];
    const wr = rowW[i];
    const vr = 1 - wr;
    for (let j = 0; j < width; j++) {
      const c0 = colLo[j];
      const c1 = colHi[j];
      const wc = colW[j];
      const vc = 1 - wc;
      // Weights of the four neighbours, as scipy forms them (product of the per-axis weights).
      const w00 = vr * vc;
      const w01 = vr * wc;
      const w10 = wr * vc;
      const w11 = wr * wc;
      const a = r0 + c0;
      const b = r0 + c1;
      const c = r1 + c0;
      const d = r1 + c1;
      if (depth === 3) {
        // RGB unrolled: about 1.2× the generic loop (measured with bench/augment.ts on Node 20).
        dst[o] = w00 * src[a] + w01 * src[b] + w10 * src[c] + w11 * src[d];
        dst[o + 1] = w00 * src[a + 1] + w01 * src[b + 1] + w10 * src[c + 1] + w11 * src[d + 1];
        dst[o + 2] = w00 * src[a + 2] + w01 * src[b + 2] + w10 * src[c + 2] + w11 * src[d + 2];
        o += 3;
      } else {
        for (let ch = 0; ch < depth; ch++) {
          dst[o++] = w00 * src[a + ch] + w01 * src[b + ch] + w10 * src[c + ch] + w11 * src[d + ch];
        }
      }
    }
  }
}
