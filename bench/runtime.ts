/**
 * Runtime benchmarks of the coordinator (issue: data-parallel runtime):
 *   - transport: a 6.6 MB weight + gradient round trip through a real worker process;
 *   - overhead: steps/s with fake-compute workers (15 ms per step) for 1, 2, 4, 8 workers, the
 *     scaling efficiency throughput(G) / (G · throughput(1)) and the exchange share of a step.
 * Run through `npm run bench` (bench/run.ts), which also measures augmentation and training.
 */
import { WorkerHandle } from '../src/coordinator/worker-handle.js';
import { freshState, train, type StepInfo } from '../src/coordinator/trainer.js';
import { AugmentPool } from '../src/data/augment-pool.js';

/** MiniGoogLeNet's trainable weights and BN statistics (32×32×3, 10 classes). */
export const MINIGOOGLENET_SIZES = { trainableSize: 1_652_826, statsSize: 3_424 };

function fakeWorker(rank: number, delayMs: number): WorkerHandle {
  return new WorkerHandle({
    config: {
      rank,
      model: { name: 'minigooglenet', width: 32, height: 32, depth: 3, classes: 10, seed: 1 },
      backend: 'cpu',
      gpu: null,
      compute: { kind: 'fake', delayMs, ...MINIGOOGLENET_SIZES },
      layoutHash: 'fake',
    },
  });
}

export interface TransportResult {
  payloadBytes: number;
  roundTrips: number;
  msPerRoundTrip: number;
  /** (weights sent + gradients received) bytes per second, in MB/s (10^6). */
  megabytesPerSecond: number;
}

/** Weights out, gradients back, through one worker process with zero compute. */
export async function benchTransport(roundTrips = 30): Promise<TransportResult> {
  const worker = fakeWorker(0, 0);
  await worker.start();
  const total = MINIGOOGLENET_SIZES.trainableSize + MINIGOOGLENET_SIZES.statsSize;
  const state = { version: 0, data: new Float32Array(total).fill(0.5) };
  const shard = { x: new Float32Array(32 * 32 * 3), labels: new Uint8Array(1), dropoutSeed: 0 };
  try {
    for (let i = 0; i < 3; i++) {
      state.version++;
      await worker.computeGradients(shard, state);
    }
    const started = performance.now();
    for (let i = 0; i < roundTrips; i++) {
      state.version++; // a new version: the weights travel every time
      await worker.computeGradients(shard, state);
    }
    const ms = (performance.now() - started) / roundTrips;
    const bytes = total * 4 + MINIGOOGLENET_SIZES.trainableSize * 4 + MINIGOOGLENET_SIZES.statsSize * 4;
    return { payloadBytes: total * 4, roundTrips, msPerRoundTrip: ms, megabytesPerSecond: bytes / 1e6 / (ms / 1000) };
  } finally {
    await worker.close();
  }
}

export interface OverheadResult {
  workers: number;
  steps: number;
  stepsPerSecond: number;
  imagesPerSecond: number;
  /** throughput(G) / (G · throughput(1)). */
  efficiency: number;
  /** Mean share of a step not spent in the slowest worker's compute. */
  exchangeShare: number;
  msPerStep: number;
  shardsReadyShare: number;
}

/** Fake-compute workers (delayMs per step) trained through the real coordinator loop and pool. */
export async function benchOverhead(workerCounts = [1, 2, 4, 8], delayMs = 15, steps = 40): Promise<OverheadResult[]> {
  const batch = 64;
  const size = 32 * 32 * 3;
  const images = new Uint8Array(batch * 8 * 4 * size).map((_, i) => (i * 7) & 255);
  const labels = Uint8Array.from({ length: images.length / size }, (_, i) => i % 10);
  const pool = new AugmentPool({ threads: 2, images, labels, mean: new Float32Array(size), height: 32, width: 32, depth: 3 });
  const out: OverheadResult[] = [];
  try {
    for (const g of workerCounts) {
      const workers = Array.from({ length: g }, (_, r) => fakeWorker(r, delayMs));
      await Promise.all(workers.map((w) => w.start()));
      const infos: StepInfo[] = [];
      const total = MINIGOOGLENET_SIZES.trainableSize + MINIGOOGLENET_SIZES.statsSize;
      try {
        // Steps per epoch = trainCount / (64·G): size the epoch so every G runs `steps` steps.
        await train(
          { clients: workers, shards: pool, trainableSize: MINIGOOGLENET_SIZES.trainableSize },
          {
            epochs: 1, batchSize: batch, lr: 0.01, momentum: 0.9, scaleLr: false, warmupEpochs: 5, seed: 1,
            trainCount: Math.min(labels.length, steps * batch * g), testCount: 0, testOffset: 0, evalChunk: 500, prefetch: 2,
          },
          freshState(new Float32Array(total), MINIGOOGLENET_SIZES.trainableSize),
          { onStep: (s) => infos.push(s) },
        );
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
      // The first steps include process warm-up (JIT, buffers): measure the rest.
      const steady = infos.slice(3);
      const ms = steady.reduce((s, i) => s + i.wallMs, 0) / steady.length;
      const exchange = steady.reduce((s, i) => s + (i.wallMs - i.computeMs) / i.wallMs, 0) / steady.length;
      out.push({
        workers: g,
        steps: steady.length,
        stepsPerSecond: 1000 / ms,
        imagesPerSecond: (1000 / ms) * batch * g,
        efficiency: 0,
        exchangeShare: exchange,
        msPerStep: ms,
        shardsReadyShare: steady.filter((i) => i.shardsReadyBeforeAsked).length / steady.length,
      });
    }
  } finally {
    await pool.close();
  }
  const base = out.find((r) => r.workers === 1)?.imagesPerSecond ?? out[0].imagesPerSecond / out[0].workers;
  for (const r of out) r.efficiency = r.imagesPerSecond / (r.workers * base);
  return out;
}
