import { describe, expect, it } from 'vitest';
import { meanImage, subtractMean } from '../src/data/mean.js';

// Three 1×2×2 images (HWC: pixel 0 channels 0,1 then pixel 1 channels 0,1).
const images = Uint8Array.from([
  0, 10, 255, 1, //
  3, 20, 255, 0, //
  6, 31, 254, 0,
]);
const set = { images, labels: new Uint8Array(3), count: 3 };

describe('meanImage', () => {
  it('averages each position over the images: (0+3+6)/3 = 3, (10+20+31)/3 = 20.333…, (255+255+254)/3 = 254.666…', () => {
    const mean = meanImage(set, 1, 2, 2);
    expect(mean).toBeInstanceOf(Float32Array);
    expect(Array.from(mean)).toEqual([3, Math.fround(61 / 3), Math.fround(764 / 3), Math.fround(1 / 3)]);
  });

  it('sums in float64: 100,000 copies of 255 and one 0 give 255·100000/100001 (a float32 sum drifts to 255.34)', () => {
    const count = 100_001;
    const many = new Uint8Array(count).fill(255);
    many[count - 1] = 0;
    const mean = meanImage({ images: many, labels: new Uint8Array(count), count }, 1, 1, 1);
    expect(mean[0]).toBe(Math.fround((255 * 100_000) / 100_001));
    expect(mean[0]).toBeLessThan(255);
  });

  it('rejects a byte count that is not count × h × w × c, saying it is a bug', () => {
    expect(() => meanImage(set, 2, 2, 2)).toThrow(
      'meanImage: images must hold count × 2×2×2 = 24 bytes. Received: 12 bytes (this is a bug in the caller)',
    );
  });

  it('rejects an empty set', () => {
    expect(() => meanImage({ images: new Uint8Array(0), labels: new Uint8Array(0), count: 0 }, 1, 1, 1)).toThrow(
      'meanImage: the set must hold at least one image. Received: count=0',
    );
  });
});

describe('subtractMean', () => {
  const mean = Float32Array.from([3, 20.5, 254.5, 0.25]);

  it('subtracts the mean from every image into a new float32 array', () => {
    const out = subtractMean(images, mean);
    expect(Array.from(out)).toEqual([-3, -10.5, 0.5, 0.75, 0, -0.5, 0.5, -0.25, 3, 10.5, -0.5, -0.25]);
  });

  it('writes into the out array given, and returns it', () => {
    const out = new Float32Array(12).fill(99);
    expect(subtractMean(images.subarray(4, 8), mean, out.subarray(0, 4))).toEqual(Float32Array.from([0, -0.5, 0.5, -0.25]));
    expect(Array.from(out.subarray(0, 5))).toEqual([0, -0.5, 0.5, -0.25, 99]);
  });

  it('rejects images that are not whole multiples of the mean, and an out of the wrong length', () => {
    expect(() => subtractMean(images.subarray(0, 6), mean)).toThrow(
      "subtractMean: images must be whole images of the mean's 4 values. Received: 6 bytes",
    );
    expect(() => subtractMean(images, mean, new Float32Array(8))).toThrow(
      'subtractMean: out must be 12 long, as images. Received: out of length 8',
    );
  });
});
