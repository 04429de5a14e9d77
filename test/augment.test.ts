import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { applyTransform, drawTransform, TUTORIAL_AUGMENT, type Transform } from '../src/data/augment.js';
import { makeShard } from '../src/data/shard.js';
import { isTrainpoolError } from '../src/util/errors.js';
import { mixSeed, Rng } from '../src/util/random.js';

interface FixtureCase extends Transform {
  height: number;
  width: number;
  depth: number;
  input: string;
  expected: string;
}

const fixture = JSON.parse(readFileSync(new URL('./fixtures/augment/keras-shift-flip.json', import.meta.url), 'utf8')) as { cases: FixtureCase[] };

function decodeFloat32(base64: string): Float32Array {
  const bytes = Buffer.from(base64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Applies t to a single-channel image written as rows of numbers; returns rows. */
function shift2d(image: number[][], t: Transform): number[][] {
  const height = image.length;
  const width = image[0].length;
  const dst = new Float32Array(height * width);
  applyTransform(Float32Array.from(image.flat()), 0, dst, 0, height, width, 1, t);
  return Array.from({ length: height }, (_, i) => Array.from(dst.subarray(i * width, (i + 1) * width)));
}

const NINE = [
  [1, 2, 3],
  [4, 5, 6],
  [7, 8, 9],
];

describe('applyTransform against Keras (scipy fixtures)', () => {
  test('the fixture file covers integer, fractional, out-of-image, flipped and non-square cases', () => {
    const cases = fixture.cases;
    expect(cases.length).toBeGreaterThanOrEqual(15);
    expect(cases.some((c) => c.flip)).toBe(true);
    expect(cases.some((c) => !Number.isInteger(c.rows) || !Number.isInteger(c.cols))).toBe(true);
    expect(cases.some((c) => Math.abs(c.rows) > c.height || Math.abs(c.cols) > c.width)).toBe(true);
    expect(cases.some((c) => c.height !== c.width)).toBe(true);
  });

  test.each(fixture.cases.map((c) => [`${c.height}x${c.width}x${c.depth} rows=${c.rows} cols=${c.cols} flip=${c.flip}`, c] as const))(
    '%s matches Keras within 1e-4',
    (_name, c) => {
      const src = Float32Array.from(Buffer.from(c.input, 'base64'));
      const expected = decodeFloat32(c.expected);
      const dst = new Float32Array(src.length);
      applyTransform(src, 0, dst, 0, c.height, c.width, c.depth, c);
      let worst = 0;
      for (let k = 0; k < dst.length; k++) worst = Math.max(worst, Math.abs(dst[k] - expected[k]));
      expect(worst).toBeLessThanOrEqual(1e-4);
    },
  );
});

describe('applyTransform, worked by hand on a 3×3 image', () => {
  test('shifting by +1 row moves the content up and repeats the last row', () => {
    expect(shift2d(NINE, { rows: 1, cols: 0, flip: false })).toEqual([
      [4, 5, 6],
      [7, 8, 9],
      [7, 8, 9],
    ]);
  });

  test('shifting by -1 row moves the content down and repeats the first row', () => {
    expect(shift2d(NINE, { rows: -1, cols: 0, flip: false })).toEqual([
      [1, 2, 3],
      [1, 2, 3],
      [4, 5, 6],
    ]);
  });

  test('shifting by +1 column moves the content left and repeats the last column', () => {
    expect(shift2d(NINE, { rows: 0, cols: 1, flip: false })).toEqual([
      [2, 3, 3],
      [5, 6, 6],
      [8, 9, 9],
    ]);
  });

  test('flip only mirrors the columns', () => {
    expect(shift2d(NINE, { rows: 0, cols: 0, flip: true })).toEqual([
      [3, 2, 1],
      [6, 5, 4],
      [9, 8, 7],
    ]);
  });

  test('the flip comes after the shift', () => {
    // Shift left by one: [2,3,3] per row; then mirror: [3,3,2].
    expect(shift2d(NINE, { rows: 0, cols: 1, flip: true })).toEqual([
      [3, 3, 2],
      [6, 6, 5],
      [9, 9, 8],
    ]);
  });

  test('a half-pixel column shift averages neighbours, the last column has none to its right', () => {
    expect(shift2d(NINE, { rows: 0, cols: 0.5, flip: false })).toEqual([
      [1.5, 2.5, 3],
      [4.5, 5.5, 6],
      [7.5, 8.5, 9],
    ]);
  });

  test('a half-pixel row shift upwards from outside the top edge reads the first row', () => {
    expect(shift2d(NINE, { rows: -0.5, cols: 0, flip: false })).toEqual([
      [1, 2, 3],
      [2.5, 3.5, 4.5],
      [5.5, 6.5, 7.5],
    ]);
  });

  test('a quarter-pixel shift on both axes weighs the four neighbours 9:3:3:1', () => {
    // Output (0,0) samples (0.25, 0.25): 0.5625·1 + 0.1875·2 + 0.1875·4 + 0.0625·5 = 2.
    expect(shift2d(NINE, { rows: 0.25, cols: 0.25, flip: false })[0][0]).toBeCloseTo(2, 6);
  });

  test('a shift beyond the image fills everything with the nearest edge pixel', () => {
    expect(shift2d(NINE, { rows: 5, cols: -7, flip: false })).toEqual([
      [7, 7, 7],
      [7, 7, 7],
      [7, 7, 7],
    ]);
  });

  test('channels are shifted alike and never mixed', () => {
    // 1×3×2: channel 0 is 1,2,3 and channel 1 is 10,20,30; shift left by one column.
    const src = Float32Array.of(1, 10, 2, 20, 3, 30);
    const dst = new Float32Array(6);
    applyTransform(src, 0, dst, 0, 1, 3, 2, { rows: 0, cols: 1, flip: false });
    expect(Array.from(dst)).toEqual([2, 20, 3, 30, 3, 30]);
  });

  test('offsets select the image inside larger buffers and nothing else is written', () => {
    const src = new Float32Array(4 + 9).fill(-1);
    src.set(NINE.flat(), 4);
    const dst = new Float32Array(2 + 9 + 2).fill(-7);
    applyTransform(src, 4, dst, 2, 3, 3, 1, { rows: 0, cols: 0, flip: true });
    expect(Array.from(dst)).toEqual([-7, -7, 3, 2, 1, 6, 5, 4, 9, 8, 7, -7, -7]);
  });

  test('a source too short for the image is refused with the sizes in the message', () => {
    const call = () => applyTransform(new Float32Array(8), 0, new Float32Array(9), 0, 3, 3, 1, { rows: 0, cols: 0, flip: false });
    expect(call).toThrow('applyTransform: src must hold 9 values from srcOffset. Received: srcOffset=0, src.length=8');
  });

  test('any depth is the same per-channel transform (the generic loop beside the unrolled RGB one)', () => {
    // A 3×4 image of depth 2 (and of depth 4) against each channel transformed alone as depth 1.
    const t: Transform = { rows: 0.4, cols: -1.3, flip: true };
    for (const depth of [2, 4]) {
      const src = Float32Array.from({ length: 3 * 4 * depth }, (_, k) => Math.sin(k) * 100);
      const dst = new Float32Array(src.length);
      applyTransform(src, 0, dst, 0, 3, 4, depth, t);
      for (let ch = 0; ch < depth; ch++) {
        const plane = src.filter((_, k) => k % depth === ch);
        const want = new Float32Array(plane.length);
        applyTransform(plane, 0, want, 0, 3, 4, 1, t);
        expect(Array.from(dst.filter((_, k) => k % depth === ch)), `depth ${depth}, channel ${ch}`).toEqual(Array.from(want));
      }
    }
  });

  test.each([
    [0, 3, 1], [3, 0, 1], [3, 3, 0], [-3, 3, 1], [3, -3, 1], [3, 3, -1], [2.5, 3, 1], [3, 2.5, 1], [3, 3, 1.5],
  ])('an image of %s×%s×%s is refused, with the shape in the message', (h, w, d) => {
    const call = () => applyTransform(new Float32Array(64), 0, new Float32Array(64), 0, h, w, d, { rows: 0, cols: 0, flip: false });
    expect(call).toThrow(`applyTransform: height, width and depth must be positive integers. Received: ${h}×${w}×${d}`);
  });

  test.each([
    ['src', -1, 0], ['src', 0.5, 0], ['src', 1, 0], ['dst', 0, -1], ['dst', 0, 0.5], ['dst', 0, 1],
  ])('%s offsets must be whole, not negative, and leave room for the image (src offset %s, dst offset %s)', (which, srcOffset, dstOffset) => {
    const call = () => applyTransform(new Float32Array(9), srcOffset as number, new Float32Array(9), dstOffset as number, 3, 3, 1, { rows: 0, cols: 0, flip: false });
    const [offset, length] = which === 'src' ? [srcOffset, 9] : [dstOffset, 9];
    expect(call).toThrow(`applyTransform: ${which} must hold 9 values from ${which}Offset. Received: ${which}Offset=${offset}, ${which}.length=${length}`);
    // exactly enough room is enough
    expect(() => applyTransform(new Float32Array(10), 1, new Float32Array(10), 1, 3, 3, 1, { rows: 0, cols: 0, flip: false })).not.toThrow();
  });

  test('a non-finite shift is refused', () => {
    const call = () => applyTransform(new Float32Array(9), 0, new Float32Array(9), 0, 3, 3, 1, { rows: NaN, cols: 0, flip: false });
    expect(call).toThrow('applyTransform: the shift must be finite. Received: rows=NaN, cols=0');
  });
});

describe('drawTransform', () => {
  const draws = (seed: number, n: number, opts = TUTORIAL_AUGMENT) => {
    const rng = new Rng(seed);
    return Array.from({ length: n }, () => drawTransform(rng, 32, 24, opts));
  };

  test('shifts stay within ±0.1 of the height and width, and cover most of that range', () => {
    const ts = draws(7, 10_000);
    const rows = ts.map((t) => t.rows);
    const cols = ts.map((t) => t.cols);
    expect(Math.max(...rows.map(Math.abs))).toBeLessThanOrEqual(3.2);
    expect(Math.max(...cols.map(Math.abs))).toBeLessThanOrEqual(2.4);
    expect(Math.min(...rows)).toBeLessThan(-3.1);
    expect(Math.max(...rows)).toBeGreaterThan(3.1);
    expect(Math.min(...cols)).toBeLessThan(-2.3);
    expect(Math.max(...cols)).toBeGreaterThan(2.3);
  });

  test('about half of 10,000 draws flip (binomial sd 0.005, allowed ±0.02)', () => {
    const flips = draws(11, 10_000).filter((t) => t.flip).length / 10_000;
    expect(Math.abs(flips - 0.5)).toBeLessThan(0.02);
  });

  test('the same seed draws the same transforms', () => {
    expect(draws(3, 50)).toEqual(draws(3, 50));
    expect(draws(4, 50)).not.toEqual(draws(3, 50));
  });

  test('with flips off nothing flips and the shifts are those of the same seed with flips on', () => {
    const on = draws(5, 200);
    const off = draws(5, 200, { ...TUTORIAL_AUGMENT, horizontalFlip: false });
    expect(off.some((t) => t.flip)).toBe(false);
    expect(off.map((t) => [t.rows, t.cols])).toEqual(on.map((t) => [t.rows, t.cols]));
  });

  test('a shift range is a fraction in [0, 1): 0 is allowed, 1 and negatives are not, for either axis', () => {
    expect(() => drawTransform(new Rng(1), 32, 32, { ...TUTORIAL_AUGMENT, heightShiftRange: 0, widthShiftRange: 0 })).not.toThrow();
    expect(() => drawTransform(new Rng(1), 32, 32, { ...TUTORIAL_AUGMENT, heightShiftRange: 0.999 })).not.toThrow();
    expect(() => drawTransform(new Rng(1), 32, 32, { ...TUTORIAL_AUGMENT, heightShiftRange: 1 })).toThrow('Augmentation option `heightShiftRange` must be a fraction in [0, 1). Received: heightShiftRange=1');
    expect(() => drawTransform(new Rng(1), 32, 32, { ...TUTORIAL_AUGMENT, widthShiftRange: -0.1 })).toThrow('Received: widthShiftRange=-0.1');
    expect(() => drawTransform(new Rng(1), 32, 32, { ...TUTORIAL_AUGMENT, widthShiftRange: Number.NaN })).toThrow('Received: widthShiftRange=NaN');
  });

  test('a shift range of 1 or more is refused with a USAGE error naming the option', () => {
    let caught: unknown;
    try {
      drawTransform(new Rng(1), 32, 32, { ...TUTORIAL_AUGMENT, widthShiftRange: 2 });
    } catch (e) {
      caught = e;
    }
    expect(isTrainpoolError(caught, 'USAGE')).toBe(true);
    expect((caught as Error).message).toBe('Augmentation option `widthShiftRange` must be a fraction in [0, 1). Received: widthShiftRange=2');
  });
});

describe('makeShard', () => {
  const height = 4;
  const width = 5;
  const depth = 3;
  const size = height * width * depth;
  const count = 10;
  const images = Uint8Array.from({ length: count * size }, (_, k) => (k * 31 + 7) % 256);
  const labels = Uint8Array.from({ length: count }, (_, k) => (k * 3) % 10);
  const mean = Float32Array.from({ length: size }, (_, k) => 100 + k / 3);
  const source = { images, labels, mean, height, width, depth };
  const indices = Uint32Array.of(3, 9, 0, 3, 7);

  test('without augmentation each image is its bytes minus the mean, in float32', () => {
    const { x, labels: y } = makeShard({ ...source, indices, seed: 1, augment: false });
    expect(Array.from(y)).toEqual([9, 7, 0, 9, 1]);
    expect(x.length).toBe(indices.length * size);
    for (let k = 0; k < indices.length; k++) {
      for (let p = 0; p < size; p++) {
        expect(x[k * size + p]).toBe(Math.fround(images[indices[k] * size + p] - mean[p]));
      }
    }
  });

  test('with augmentation image k is the centred image under the transform drawn from mixSeed(seed, k)', () => {
    const seed = 12345;
    const { x } = makeShard({ ...source, indices, seed, augment: true });
    const { x: centred } = makeShard({ ...source, indices, seed, augment: false });
    const expected = new Float32Array(x.length);
    for (let k = 0; k < indices.length; k++) {
      const t = drawTransform(new Rng(mixSeed(seed, k)), height, width, TUTORIAL_AUGMENT);
      applyTransform(centred, k * size, expected, k * size, height, width, depth, t);
    }
    expect(x).toEqual(expected);
  });

  test('the same request gives identical bytes; another seed gives others', () => {
    const a = makeShard({ ...source, indices, seed: 99, augment: true });
    const b = makeShard({ ...source, indices, seed: 99, augment: true });
    const c = makeShard({ ...source, indices, seed: 100, augment: true });
    expect(Buffer.from(a.x.buffer).equals(Buffer.from(b.x.buffer))).toBe(true);
    expect(Buffer.from(a.x.buffer).equals(Buffer.from(c.x.buffer))).toBe(false);
  });

  test('the same image twice in a shard is augmented differently, by its position', () => {
    const { x } = makeShard({ ...source, indices, seed: 99, augment: true });
    expect(x.subarray(0, size)).not.toEqual(x.subarray(3 * size, 4 * size));
  });

  test('a prefix of a shard regenerates byte for byte', () => {
    const whole = makeShard({ ...source, indices, seed: 5, augment: true });
    const prefix = makeShard({ ...source, indices: indices.subarray(0, 2), seed: 5, augment: true });
    expect(prefix.x).toEqual(whole.x.subarray(0, 2 * size));
    expect(prefix.labels).toEqual(whole.labels.subarray(0, 2));
  });

  test('an empty index list gives an empty shard', () => {
    const { x, labels: y } = makeShard({ ...source, indices: new Uint32Array(0), seed: 1, augment: true });
    expect(x.length).toBe(0);
    expect(y.length).toBe(0);
  });

  test('an index past the last image is refused with DATA_INVALID', () => {
    expect(() => makeShard({ ...source, indices: Uint32Array.of(1, 10), seed: 1, augment: true })).toThrow(
      'Shard index must be below the image count 10. Received: indices[1]=10',
    );
  });

  test('images that do not match labels × height × width × depth are refused', () => {
    expect(() => makeShard({ ...source, images: images.subarray(1), indices, seed: 1, augment: false })).toThrow(
      'The images must hold labels×height×width×depth = 10×60 bytes. Received: 599',
    );
  });

  test('a mean image of the wrong size is refused', () => {
    expect(() => makeShard({ ...source, mean: new Float32Array(59), indices, seed: 1, augment: false })).toThrow(
      'The mean image must hold height×width×depth = 60 values. Received: 59',
    );
  });
});
