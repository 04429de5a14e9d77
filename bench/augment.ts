/**
 * Augmentation throughput, in images per second, on CIFAR-shaped data (32×32×3):
 *
 *   npx tsx bench/augment.ts [seconds]
 *
 * prints applyTransform alone on this thread, then the AugmentPool with 1 and 2 threads building
 * 64-image training shards (mean subtraction + shift + flip, the result transferred back). The two
 * numbers answer different questions: the first is the kernel's speed, the second what the coordinator
 * can feed its workers. With more threads than free cores the pool's numbers stop growing.
 */
import { pathToFileURL } from 'node:url';
import { AugmentPool } from '../src/data/augment-pool.js';
import { applyTransform, drawTransform, TUTORIAL_AUGMENT } from '../src/data/augment.js';
import { mixSeed, Purpose, Rng } from '../src/util/random.js';

const HEIGHT = 32;
const WIDTH = 32;
const DEPTH = 3;
const SIZE = HEIGHT * WIDTH * DEPTH;
const DATASET_IMAGES = 10_000;

export interface BenchAugmentOptions {
  /** Pool threads. */
  threads: number;
  /** Images per shard. */
  images: number;
  seconds: number;
}

export interface BenchResult {
  imagesPerSec: number;
}

function syntheticSource() {
  const rng = new Rng(mixSeed(1, Purpose.synthetic));
  const images = new Uint8Array(DATASET_IMAGES * SIZE);
  for (let k = 0; k < images.length; k++) images[k] = rng.nextUint32() & 255;
  const labels = Uint8Array.from({ length: DATASET_IMAGES }, (_, k) => k % 10);
  const mean = new Float32Array(SIZE).fill(127.5);
  return { images, labels, mean, height: HEIGHT, width: WIDTH, depth: DEPTH };
}

/** applyTransform alone, on this thread, over `images` pre-drawn transforms and pre-centred images. */
export function benchApplyTransform({ images, seconds }: Omit<BenchAugmentOptions, 'threads'>): BenchResult {
  const rng = new Rng(mixSeed(2, Purpose.augment));
  const src = new Float32Array(images * SIZE);
  for (let k = 0; k < src.length; k++) src[k] = rng.uniform(-128, 128);
  const dst = new Float32Array(images * SIZE);
  const transforms = Array.from({ length: images }, () => drawTransform(rng, HEIGHT, WIDTH, TUTORIAL_AUGMENT));
  const pass = () => {
    for (let k = 0; k < images; k++) applyTransform(src, k * SIZE, dst, k * SIZE, HEIGHT, WIDTH, DEPTH, transforms[k]);
  };
  for (let warm = 0; warm < 20; warm++) pass();
  let done = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    pass();
    done += images;
  }
  return { imagesPerSec: done / ((performance.now() - start) / 1000) };
}

/** The pool building `images`-image training shards, two requests in flight per thread. */
export async function benchAugment({ threads, images, seconds }: BenchAugmentOptions): Promise<BenchResult> {
  const source = syntheticSource();
  const pool = new AugmentPool({ threads, ...source });
  let step = 0;
  const nextRequest = () => {
    step++;
    const base = (step * images) % (DATASET_IMAGES - images);
    return { indices: Uint32Array.from({ length: images }, (_, k) => base + k), seed: mixSeed(3, Purpose.augment, step), augment: true };
  };
  try {
    // Thread start-up (loading the task module) is not part of the steady state.
    await Promise.all(Array.from({ length: threads }, () => pool.makeShard(nextRequest())));
    let done = 0;
    const start = performance.now();
    const deadline = start + seconds * 1000;
    const lane = async () => {
      while (performance.now() < deadline) {
        const { labels } = await pool.makeShard(nextRequest());
        done += labels.length;
      }
    };
    await Promise.all(Array.from({ length: 2 * threads }, lane));
    return { imagesPerSec: done / ((performance.now() - start) / 1000) };
  } finally {
    await pool.close();
  }
}

async function main(seconds: number): Promise<void> {
  const fmt = (r: BenchResult) => `${Math.round(r.imagesPerSec).toLocaleString('en-US')} images/s`;
  console.log(`applyTransform alone, 1 thread: ${fmt(benchApplyTransform({ images: 64, seconds }))}`);
  for (const threads of [1, 2]) {
    console.log(`AugmentPool, ${threads} thread(s), 64-image shards: ${fmt(await benchAugment({ threads, images: 64, seconds }))}`);
  }
}

// No top-level await: bench/run.ts may load this module through a CommonJS path.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(Number(process.argv[2] ?? 3)).catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
