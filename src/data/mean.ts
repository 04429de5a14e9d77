/**
 * Per-pixel mean subtraction, as the Keras tutorial does it:
 *
 *     mean = trainX.astype('float').mean(axis=0)   # float64, shape (h, w, c)
 *     trainX = trainX - mean
 *
 * Sums of bytes are exact in float64 (below 2^53 for any set that fits in memory), so the only rounding is
 * the division and the final cast to float32: the result equals numpy's to float32 precision. Differs from
 * numpy: the mean is returned as float32, the type it is subtracted in.
 */
import type { ImageSet } from './dataset.js';

/** The mean image over `set`, h×w×c, HWC. */
export function meanImage(set: ImageSet, height: number, width: number, depth: number): Float32Array {
  const size = height * width * depth;
  if (set.images.length !== set.count * size) {
    throw new Error(
      `meanImage: images must hold count × ${height}×${width}×${depth} = ${set.count * size} bytes. ` +
        `Received: ${set.images.length} bytes (this is a bug in the caller)`,
    );
  }
  if (set.count === 0) throw new Error('meanImage: the set must hold at least one image. Received: count=0');
  const sums = new Float64Array(size);
  for (let i = 0; i < set.count; i++) {
    const offset = i * size;
    for (let p = 0; p < size; p++) sums[p] += set.images[offset + p];
  }
  const mean = new Float32Array(size);
  for (let p = 0; p < size; p++) mean[p] = sums[p] / set.count;
  return mean;
}

/** images − mean, image by image, as float32; `out` (if given) must be images.length long. */
export function subtractMean(images: Uint8Array, mean: Float32Array, out = new Float32Array(images.length)): Float32Array {
  const size = mean.length;
  if (size === 0 || images.length % size !== 0) {
    throw new Error(
      `subtractMean: images must be whole images of the mean's ${size} values. Received: ${images.length} bytes`,
    );
  }
  if (out.length !== images.length) {
    throw new Error(`subtractMean: out must be ${images.length} long, as images. Received: out of length ${out.length}`);
  }
  for (let offset = 0; offset < images.length; offset += size) {
    for (let p = 0; p < size; p++) out[offset + p] = images[offset + p] - mean[p];
  }
  return out;
}
