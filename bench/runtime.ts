/**
 * Runtime benchmarks of the coordinator (issue: data-parallel runtime):
 *   - transport: a 6.6 MB weight + gradient round trip through a real worker process;
 *   - overhead: steps/s with fake-compute workers (15 ms per step) for 1, 2, 4, 8 workers, the
 *     scaling efficiency throughput(G) / (G · throughput(1)) and the exchange share of a step.
 * Run through `npm run bench` (bench/run.ts), which also measures augmentation and training.
 */
import { averageInto } from '../src/coordinator/optim/average.js';
import { createExchange, type RunExchange } from '../src/coordinator/exchange.js';
import { ExchangeArena, exchangeThreads } from '../src/coordinator/optim/kernels.js';
import { DEFAULTS } from '../src/config/config.js';
import { sgdStep } from '../src/coordinator/optim/sgd.js';
import { BulkFile, bulkDirectory } from '../src/protocol/bulk.js';
import { WorkerHandle } from '../src/coordinator/worker-handle.js';
import { freshState, train, type StepInfo } from '../src/coordinator/trainer.js';
import { AugmentPool } from '../src/data/augment-pool.js';
import pino from 'pino';
import { readFileSync } from 'node:fs';
import { runAgent } from '../src/coordinator/hosts/agent.js';
import { HostListener } from '../src/coordinator/hosts/remote.js';
import type { ReplicaClient } from '../src/coordinator/replica-client.js';
import type { ResolvedConfig } from '../src/config/config.js';

/** MiniGoogLeNet's trainable weights and BN statistics (32×32×3, 10 classes). */
export const MINIGOOGLENET_SIZES = { trainableSize: 1_652_826, statsSize: 3_424 };
const SIZES = { totalSize: MINIGOOGLENET_SIZES.trainableSize + MINIGOOGLENET_SIZES.statsSize, trainableSize: MINIGOOGLENET_SIZES.trainableSize };

function fakeWorker(rank: number, delayMs: number, exchange?: RunExchange): WorkerHandle {
  return new WorkerHandle({
    // As run.ts does: the run's weights region, the rank's reply region, replies read into the arena.
    shared: exchange?.shared,
    reply: exchange?.replies[rank],
    receive: exchange?.arena.receiver(rank, ['grads', 'stats']),
    // As run.ts sizes it: the larger of a batch and a validation chunk of 32×32×3 float images.
    requestBytes: exchange?.mapped ? 4 * Math.max(64, DEFAULTS.evalChunk) * 32 * 32 * 3 : undefined,
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
  /** 'mapped': the regions mapped (shm.ts); 'read/write': pread/pwrite. */
  regions: 'mapped' | 'read/write';
  payloadBytes: number;
  roundTrips: number;
  msPerRoundTrip: number;
  /** The round trip less the worker's own time (its fake gradients' fill): what the exchange costs. */
  msBeyondCompute: number;
  /** (weights sent + gradients received) bytes per second, in MB/s (10^6). */
  megabytesPerSecond: number;
}

/** Weights out, gradients back, through one worker process with zero compute, the regions `mapped` or read/written. */
export async function benchTransport(roundTrips = 30, map = true): Promise<TransportResult> {
  const total = MINIGOOGLENET_SIZES.trainableSize + MINIGOOGLENET_SIZES.statsSize;
  const exchange = createExchange(SIZES, 1, { map });
  const worker = fakeWorker(0, 0, exchange);
  await worker.start();
  // The weights where run.ts keeps them: in the arena, over the mapped region when it is mapped.
  const state = { version: 0, data: exchange.arena.place('weights', new Float32Array(total).fill(0.5)) };
  const shard = { x: new Float32Array(32 * 32 * 3), labels: new Uint8Array(1), dropoutSeed: 0 };
  try {
    for (let i = 0; i < 10; i++) {
      state.version++;
      await worker.computeGradients(shard, state);
    }
    const started = performance.now();
    let computeMs = 0;
    for (let i = 0; i < roundTrips; i++) {
      state.version++; // a new version: the weights travel every time
      computeMs += (await worker.computeGradients(shard, state)).computeMs;
    }
    const ms = (performance.now() - started) / roundTrips;
    const bytes = total * 4 + MINIGOOGLENET_SIZES.trainableSize * 4 + MINIGOOGLENET_SIZES.statsSize * 4;
    return {
      regions: exchange.mapped ? 'mapped' : 'read/write',
      payloadBytes: total * 4,
      roundTrips,
      msPerRoundTrip: ms,
      msBeyondCompute: ms - computeMs / roundTrips,
      megabytesPerSecond: bytes / 1e6 / (ms / 1000),
    };
  } finally {
    await worker.close();
    exchange.close();
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
  /** Mean ms of a step beyond the slowest worker's compute. */
  overheadMs: number;
  /** The median step's overhead: on a VM whose steps stall now and then (3–29 ms here), the mean's outliers apart. */
  overheadMedianMs: number;
  /** Where the per-element passes ran: the WebAssembly kernels on gradients read into the arena, or JavaScript. */
  exchange: Exchange;
  shardsReadyShare: number;
  /**
   * The share of the machine's CPU time its hypervisor gave to others while the row ran (/proc/stat's steal;
   * null where there is none): this VM's rows vary 2–3× between runs of the same build, and the slow ones
   * come with steal.
   */
  stolenShare: number | null;
}

/** Steal and total CPU time so far, in jiffies (/proc/stat's first line); null off Linux. */
function cpuTimes(): { steal: number; total: number } | null {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is inside user already.
    return fields.length >= 8 ? { steal: fields[7], total: fields.slice(0, 8).reduce((a, b) => a + b, 0) } : null;
  } catch {
    return null;
  }
}

/**
 * 'mapped': run.ts's exchange (the regions mapped in the arena, shm.ts, the update on the threads
 * exchangeThreads gives); 'mapped, 2 threads': the same with the update on two threads whatever the cores;
 * 'wasm': the same kernels with the
 * regions read and written (the exchange before mapping); 'js': the gradients in the channels' own
 * buffers, averaged and applied by average.ts and sgd.ts (before the kernels).
 */
export type Exchange = 'mapped' | 'mapped, 2 threads' | 'wasm' | 'js';

/**
 * Fake-compute workers (delayMs per step) trained through the real coordinator loop and pool. A run of
 * `warmupSteps` with one worker comes first and is not reported: the first run of a process (JIT, the pool's
 * and the update's threads, first-touch pages) was 0.5–1 ms per step slower than the same run repeated in it,
 * and a 70-epoch run spends all but its first seconds in the steady state the rows describe.
 */
export async function benchOverhead(workerCounts = [1, 2, 4, 8], delayMs = 15, steps = 40, exchange: Exchange = 'mapped', warmupSteps = 20): Promise<OverheadResult[]> {
  const batch = 64;
  const size = 32 * 32 * 3;
  // Enough images for `steps` steps at the largest G (before: 2,048 images, so 4 workers ran 8 steps and 8
  // workers 4, of which the first 3 are warm-up: their rows were one to five steps).
  const images = new Uint8Array(batch * Math.max(steps, warmupSteps) * Math.max(...workerCounts) * size);
  // (i · 7) mod 256: one period written, the rest doubled (a JavaScript loop over 157 MB took seconds).
  for (let i = 0; i < 256; i++) images[i] = (i * 7) & 255;
  for (let done = 256; done < images.length; done *= 2) images.copyWithin(done, 0, Math.min(done, images.length - done));
  const labels = Uint8Array.from({ length: images.length / size }, (_, i) => i % 10);
  const pool = new AugmentPool({ threads: 2, images, labels, mean: new Float32Array(size), height: 32, width: 32, depth: 3 });
  const out: OverheadResult[] = [];
  const run = async (g: number, stepCount: number): Promise<StepInfo[]> => {
    const total = MINIGOOGLENET_SIZES.trainableSize + MINIGOOGLENET_SIZES.statsSize;
    const mapped = exchange.startsWith('mapped');
    const threads = exchange === 'mapped' ? undefined : exchange === 'mapped, 2 threads' ? 2 : 1;
    const regions = exchange === 'js' ? undefined : createExchange(SIZES, g, { map: mapped, threads });
    if (mapped && !regions!.mapped) throw new Error(`the mapped exchange is not available here: ${regions!.mode}`);
    await regions?.arena.ready();
    const arena = regions?.arena;
    const workers = Array.from({ length: g }, (_, r) => fakeWorker(r, delayMs, regions));
    await Promise.all(workers.map((w) => w.start()));
    const infos: StepInfo[] = [];
    try {
      // Steps per epoch = trainCount / (64·G): size the epoch so every G runs `stepCount` steps.
      await train(
        { clients: workers, shards: pool, trainableSize: MINIGOOGLENET_SIZES.trainableSize, arena },
        {
          epochs: 1, batchSize: batch, lr: 0.01, momentum: 0.9, scaleLr: false, warmupEpochs: 5, seed: 1,
          trainCount: Math.min(labels.length, stepCount * batch * g), testCount: 0, testOffset: 0, evalChunk: 500, prefetch: 2,
        },
        freshState(new Float32Array(total), MINIGOOGLENET_SIZES.trainableSize),
        { onStep: (s) => infos.push(s) },
      );
    } finally {
      await Promise.all(workers.map((w) => w.close()));
      regions?.close();
    }
    return infos;
  };
  try {
    if (warmupSteps > 0) await run(1, warmupSteps);
    for (const g of workerCounts) {
      const before = cpuTimes();
      const infos = await run(g, steps);
      const after = cpuTimes();
      // The first steps include process warm-up (JIT, buffers): measure the rest.
      const steady = infos.slice(3);
      const ms = steady.reduce((s, i) => s + i.wallMs, 0) / steady.length;
      const share = steady.reduce((s, i) => s + (i.wallMs - i.computeMs) / i.wallMs, 0) / steady.length;
      out.push({
        workers: g,
        steps: steady.length,
        stepsPerSecond: 1000 / ms,
        imagesPerSecond: (1000 / ms) * batch * g,
        efficiency: 0,
        exchangeShare: share,
        msPerStep: ms,
        overheadMs: steady.reduce((s, i) => s + i.wallMs - i.computeMs, 0) / steady.length,
        overheadMedianMs: steady.map((i) => i.wallMs - i.computeMs).sort((a, b) => a - b)[steady.length >> 1],
        exchange,
        shardsReadyShare: steady.filter((i) => i.shardsReadyBeforeAsked).length / steady.length,
        stolenShare: before && after && after.total > before.total ? (after.steal - before.steal) / (after.total - before.total) : null,
      });
    }
  } finally {
    await pool.close();
  }
  // Efficiency against one worker with the same exchange.
  const base = out.find((r) => r.workers === 1)?.imagesPerSecond ?? out[0].imagesPerSecond / out[0].workers;
  for (const r of out) r.efficiency = r.imagesPerSecond / (r.workers * base);
  return out;
}

export interface HostsResult {
  setup: '1 host × 2 workers' | '2 hosts × 1 worker, loopback TCP';
  steps: number;
  msPerStep: number;
  /** Mean ms of a step beyond the slowest worker's compute, as benchOverhead's. */
  overheadMs: number;
}

/**
 * The exchange between hosts beside one host's: two fake workers (delayMs per step) on one host, then one
 * local and one behind a second host's agent (coordinator/hosts/agent.ts, in this process: its worker is a
 * process of its own) over loopback TCP, authenticated. The agent's weights, shard and gradients cross the
 * socket (6.6 MB each way per step) on top of the agent's own regions to its worker.
 */
export async function benchHosts(delayMs = 15, steps = 40): Promise<HostsResult[]> {
  const batch = 64;
  const size = 32 * 32 * 3;
  const images = new Uint8Array(batch * steps * 2 * size).map((_, i) => (i * 7) & 255);
  const labels = Uint8Array.from({ length: images.length / size }, (_, i) => i % 10);
  const pool = new AugmentPool({ threads: 2, images, labels, mean: new Float32Array(size), height: 32, width: 32, depth: 3 });
  const total = MINIGOOGLENET_SIZES.trainableSize + MINIGOOGLENET_SIZES.statsSize;
  const out: HostsResult[] = [];
  const measure = async (setup: HostsResult['setup'], clients: ReplicaClient[], regions: RunExchange) => {
    const infos: StepInfo[] = [];
    await train(
      { clients, shards: pool, trainableSize: MINIGOOGLENET_SIZES.trainableSize, arena: regions.arena },
      { epochs: 1, batchSize: batch, lr: 0.01, momentum: 0.9, scaleLr: false, warmupEpochs: 5, seed: 1, trainCount: steps * batch * 2, testCount: 0, testOffset: 0, evalChunk: 500, prefetch: 2 },
      freshState(new Float32Array(total), MINIGOOGLENET_SIZES.trainableSize),
      { onStep: (s) => infos.push(s) },
    );
    const steady = infos.slice(3);
    out.push({ setup, steps: steady.length, msPerStep: steady.reduce((s, i) => s + i.wallMs, 0) / steady.length, overheadMs: steady.reduce((s, i) => s + i.wallMs - i.computeMs, 0) / steady.length });
  };
  try {
    {
      const regions = createExchange(SIZES, 2);
      await regions.arena.ready();
      const workers = [fakeWorker(0, delayMs, regions), fakeWorker(1, delayMs, regions)];
      try {
        await Promise.all(workers.map((w) => w.start()));
        await measure('1 host × 2 workers', workers, regions);
      } finally {
        await Promise.all(workers.map((w) => w.close()));
        regions.close();
      }
    }
    {
      const regions = createExchange(SIZES, 2);
      await regions.arena.ready();
      const secret = Buffer.alloc(32, 7);
      const listener = await HostListener.open({
        host: '127.0.0.1', port: 0, secret, runId: 'bench', nodes: 2, workersPerHost: 1, layoutHash: 'fake',
        requestTimeoutMs: 60_000, firstRequestTimeoutMs: 60_000, rejoinTimeoutMs: 1_000, warn: (line) => console.warn(line),
      });
      const config = { workers: 1, gpus: [], backend: 'cpu', batchSize: batch, stepTimeoutMs: 60_000, firstStepTimeoutMs: 60_000 } as unknown as ResolvedConfig;
      const agent = runAgent({
        config,
        cluster: { contract: 'trainpool', nodes: 2, nodeRank: 1, master: { host: '127.0.0.1', port: listener.port }, read: [], restarts: null },
        secret,
        spec: { name: 'minigooglenet', width: 32, height: 32, depth: 3, classes: 10, seed: 1 },
        layoutHash: 'fake',
        sizes: SIZES,
        logger: pino({ level: 'warn' }),
        out: () => {},
        compute: { kind: 'fake', delayMs, ...MINIGOOGLENET_SIZES },
      });
      const local = fakeWorker(0, delayMs, regions);
      try {
        await local.start();
        await listener.ready(60_000);
        await measure('2 hosts × 1 worker, loopback TCP', [local, ...listener.ranks((rank) => regions.arena.receiver(rank, ['grads', 'stats']))], regions);
      } finally {
        await listener.close('bench over');
        await agent.catch(() => {});
        await local.close();
        regions.close();
      }
    }
  } finally {
    await pool.close();
  }
  return out;
}

export interface PassResult {
  pass: string;
  ms: number;
}

/**
 * The per-element passes of one step, each alone on MiniGoogLeNet-sized arrays, medians of `repeats`:
 * what the overhead of a step is made of (the rest is the two processes waking each other).
 */
export async function benchPasses(workers = [1, 2, 4, 8], repeats = 15): Promise<PassResult[]> {
  const { trainableSize: n, statsSize } = MINIGOOGLENET_SIZES;
  const total = n + statsSize;
  const median = (f: () => void) => {
    f();
    const times: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const t = performance.now();
      f();
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
  };
  const out: PassResult[] = [];
  const region = BulkFile.create(bulkDirectory(8 * total));
  try {
    const state = new Float32Array(total).fill(0.5);
    const bytes = new Uint8Array(state.buffer);
    const into = new Uint8Array(bytes.length);
    out.push({ pass: `region write, ${(bytes.length / 1e6).toFixed(1)} MB (weights out; gradients back)`, ms: median(() => region.write([bytes], 0)) });
    out.push({ pass: 'region read, the same (worker reads weights; coordinator reads gradients)', ms: median(() => region.readInto(into, 0)) });
    out.push({ pass: 'copy in memory, the same (Float32Array.set)', ms: median(() => into.set(bytes)) });
  } finally {
    region.close();
  }
  for (const g of workers) {
    const arena = ExchangeArena.forRun(total, g, 1);
    const threaded = ExchangeArena.forRun(total, g, Math.max(2, exchangeThreads()));
    const grads = Array.from({ length: g }, (_, r) => arena.adopt(Float32Array.from({ length: n }, (_, i) => Math.sin(i + r) * 1e-3)));
    const plain = grads.map((a) => a.slice());
    const weights = arena.adopt(new Float32Array(total).fill(0.5));
    const velocity = arena.tryAlloc(n)!;
    const w2 = weights.slice();
    const v2 = velocity.slice();
    const mean = new Float32Array(n);
    out.push({ pass: `mean of ${g} + momentum SGD + NaN check: JavaScript (average.ts, sgd.ts)`, ms: median(() => sgdStep(w2.subarray(0, n), averageInto(mean, plain), { velocity: v2 }, 0.005, 0.9)) });
    out.push({ pass: `mean of ${g} + momentum SGD + NaN check: WebAssembly SIMD, one pass (kernels.ts)`, ms: median(() => arena.meanSgd(weights.subarray(0, n), velocity, grads, 0.005, 0.9)) });
    // The same split over threads: one per core, at least two (kernels.ts; a run takes one per core, up to four).
    const tg = grads.map((a) => threaded.adopt(a));
    const tw = threaded.adopt(weights);
    const tv = threaded.adopt(velocity);
    await threaded.ready();
    out.push({ pass: `mean of ${g} + momentum SGD + NaN check: WebAssembly SIMD on ${threaded.threads} threads`, ms: median(() => threaded.meanSgd(tw.subarray(0, n), tv, tg, 0.005, 0.9)) });
    await threaded.close();
  }
  return out;
}
