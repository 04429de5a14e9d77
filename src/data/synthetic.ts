/**
 * A synthetic image set for tests and smoke runs: no files, deterministic, learnable in a few epochs.
 *
 * Each class k has a pattern: stripes at angle πk/classes with a period of 6, 8 or 10 pixels, plus a
 * Gaussian blob at angle 2πk/classes on a ring around the centre, mixed into the channels with weights
 * drawn per class from the seed. Each image shifts its class's pattern by up to 2 pixels each way,
 * scales its contrast and brightness, and adds noise of about 33 grey levels' standard deviation — enough
 * that no single pixel tells the classes apart, while a small convnet (or even a nearest-class-mean
 * classifier) does well above chance.
 *
 * Every image draws from its own stream, mixSeed(seed, Purpose.synthetic, split, index), so image i is
 * the same whatever the set's size: a run limited to 500 images sees the first 500 of the full set.
 */
import { TrainpoolError } from '../util/errors.js';
import { mixSeed, Purpose, Rng } from '../util/random.js';
import type { Dataset, ImageSet } from './dataset.js';

export interface SyntheticOptions {
  trainCount: number;
  testCount: number;
  height?: number;
  width?: number;
  depth?: number;
  classes?: number;
  seed: number;
}

const MAX_SHIFT = 2;
const PERIODS = [6, 8, 10];
/** Triangular noise of amplitude 80 has standard deviation 80/√6 ≈ 33 grey levels. */
const NOISE_AMPLITUDE = 80;
/** Streams: the class patterns, then the two splits. */
const STREAM_CLASSES = 0;
const STREAM_TRAIN = 1;
const STREAM_TEST = 2;

/** Throws USAGE for a size outside its rule; generates nothing. */
export function checkSyntheticOptions(options: SyntheticOptions): Required<SyntheticOptions> {
  const { trainCount, testCount, height = 32, width = 32, depth = 3, classes = 10, seed } = options;
  checkInteger('trainCount', trainCount, 1, 2 ** 24);
  checkInteger('testCount', testCount, 0, 2 ** 24); // 0: no evaluation, as --limit-test 0 allows
  checkInteger('height', height, 8, 1024);
  checkInteger('width', width, 8, 1024);
  checkInteger('depth', depth, 1, 4);
  checkInteger('classes', classes, 2, 256);
  return { trainCount, testCount, height, width, depth, classes, seed };
}

export function makeSynthetic(options: SyntheticOptions): Dataset {
  const { trainCount, testCount, height, width, depth, classes, seed } = checkSyntheticOptions(options);
  const patterns = new Patterns(height, width, depth, classes, seed);
  return {
    name: 'synthetic',
    height,
    width,
    depth,
    classes,
    classNames: Array.from({ length: classes }, (_, k) => `class ${k}`),
    train: makeSet(patterns, mixSeed(seed, Purpose.synthetic, STREAM_TRAIN), trainCount),
    test: makeSet(patterns, mixSeed(seed, Purpose.synthetic, STREAM_TEST), testCount),
  };
}

function makeSet(patterns: Patterns, splitSeed: number, count: number): ImageSet {
  const size = patterns.size;
  const images = new Uint8Array(count * size);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const rng = new Rng(mixSeed(splitSeed, i));
    const label = rng.int(patterns.classes);
    const template = patterns.get(label, rng.int(2 * MAX_SHIFT + 1) - MAX_SHIFT, rng.int(2 * MAX_SHIFT + 1) - MAX_SHIFT);
    const contrast = rng.uniform(0.5, 1);
    const brightness = 128 + rng.uniform(-30, 30);
    labels[i] = label;
    const o = i * size;
    for (let p = 0; p < size; p++) {
      // One 32-bit draw gives two 16-bit uniforms; their sum is triangular on (-1, 1).
      const u = rng.nextUint32();
      const noise = ((u & 0xffff) + (u >>> 16)) / 65536 - 1;
      const v = brightness + contrast * template[p] + NOISE_AMPLITUDE * noise;
      images[o + p] = v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
    }
  }
  return { images, labels, count };
}

/** Class patterns in grey levels around 0, HWC, computed once per (class, shift). */
class Patterns {
  readonly size: number;
  private readonly cache = new Map<number, Float32Array>();
  private readonly stripeWeights: Float32Array[];
  private readonly blobWeights: Float32Array[];

  constructor(
    readonly height: number,
    readonly width: number,
    readonly depth: number,
    readonly classes: number,
    seed: number,
  ) {
    this.size = height * width * depth;
    const rng = new Rng(mixSeed(seed, Purpose.synthetic, STREAM_CLASSES));
    this.stripeWeights = [];
    this.blobWeights = [];
    for (let k = 0; k < classes; k++) {
      this.stripeWeights.push(Float32Array.from({ length: depth }, () => rng.uniform(0.3, 1)));
      this.blobWeights.push(Float32Array.from({ length: depth }, () => (rng.next() < 0.5 ? -1 : 1) * rng.uniform(0.5, 1)));
    }
  }

  get(k: number, dx: number, dy: number): Float32Array {
    const key = (k * (2 * MAX_SHIFT + 1) + dx + MAX_SHIFT) * (2 * MAX_SHIFT + 1) + dy + MAX_SHIFT;
    let t = this.cache.get(key);
    if (t === undefined) {
      t = this.compute(k, dx, dy);
      this.cache.set(key, t);
    }
    return t;
  }

  private compute(k: number, dx: number, dy: number): Float32Array {
    const { height, width, depth, classes } = this;
    const out = new Float32Array(this.size);
    const angle = (Math.PI * k) / classes;
    const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
    const period = PERIODS[k % PERIODS.length];
    const side = Math.min(height, width);
    const ring = (2 * Math.PI * k) / classes;
    const cy = height / 2 + 0.25 * side * Math.sin(ring) + dy;
    const cx = width / 2 + 0.25 * side * Math.cos(ring) + dx;
    const sigma2 = 2 * (side / 8) ** 2;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const stripe = Math.cos((2 * Math.PI * ((x - dx) * cos + (y - dy) * sin)) / period);
        const blob = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / sigma2);
        for (let c = 0; c < depth; c++) {
          out[(y * width + x) * depth + c] = 50 * this.stripeWeights[k][c] * stripe + 80 * this.blobWeights[k][c] * blob;
        }
      }
    }
    return out;
  }
}

function checkInteger(name: string, value: number, low: number, high: number): void {
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new TrainpoolError('USAGE', `Synthetic data: ${name} must be an integer in [${low}, ${high}]. Received: ${name}=${value}`);
  }
}
