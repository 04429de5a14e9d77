/**
 * Proof that the runtime is data parallelism, not just processes: real worker processes (cpu backend,
 * tiny model, synthetic data) against one process training on the concatenated batch.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { average } from '../src/coordinator/optim/average.js';
import { TrainingPlan } from '../src/coordinator/plan.js';
import { createSgdState, sgdStep } from '../src/coordinator/optim/sgd.js';
import { freshState, train, type TrainerOptions, type TrainingState } from '../src/coordinator/trainer.js';
import type { ReplicaClient, StepRequest, StepResult, VersionedState } from '../src/coordinator/replica-client.js';
import { WorkerHandle } from '../src/coordinator/worker-handle.js';
import { makeSynthetic } from '../src/data/synthetic.js';
import { meanImage } from '../src/data/mean.js';
import type { ModelSpec } from '../src/model/minigooglenet.js';
import { Replica } from '../src/model/replica.js';
import { DirectShardMaker, InProcessClient } from './helpers/in-process.js';
import { useCpu } from './helpers/cpu.js';

beforeAll(useCpu);

const data = makeSynthetic({ trainCount: 48, testCount: 8, height: 16, width: 16, depth: 3, classes: 4, seed: 9 });
const mean = meanImage(data.train, 16, 16, 3);
const source = {
  images: new Uint8Array([...data.train.images, ...data.test.images]),
  labels: new Uint8Array([...data.train.labels, ...data.test.labels]),
  mean,
  height: 16,
  width: 16,
  depth: 3,
};
/**
 * Without BatchNormalization, 0..255 inputs saturate the softmax at the first step and Keras' clipping
 * zeroes the gradient; a sixteenth of the range keeps the plain model's gradients alive.
 */
const dim = { ...source, images: source.images.map((v) => v >> 4), mean: mean.map((v) => v / 16) };
const withBn: ModelSpec = { name: 'tiny', width: 16, height: 16, depth: 3, classes: 4, seed: 21 };
const plain: ModelSpec = { ...withBn, batchNorm: false };

function options(workers: number, batchSize: number, o: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    epochs: 1, batchSize, lr: 0.05, momentum: 0.9, scaleLr: false, warmupEpochs: 5, seed: 4,
    trainCount: 3 * batchSize * workers, testCount: 8, testOffset: 48, evalChunk: 8, prefetch: 1, ...o,
  };
}

async function initialState(spec: ModelSpec): Promise<TrainingState> {
  const r = new Replica(spec);
  const weights = await r.getState();
  const trainableSize = r.layout.trainableSize;
  r.dispose();
  return freshState(weights, trainableSize);
}

const started: WorkerHandle[] = [];
async function workers(spec: ModelSpec, count: number): Promise<WorkerHandle[]> {
  const hash = new Replica(spec);
  const layoutHash = hash.layoutHash;
  hash.dispose();
  const ws = Array.from(
    { length: count },
    (_, rank) =>
      new WorkerHandle({ config: { rank, model: spec, backend: 'cpu', gpu: null, compute: { kind: 'model' }, layoutHash } }),
  );
  started.push(...ws);
  await Promise.all(ws.map((w) => w.start()));
  return ws;
}
afterAll(async () => {
  await Promise.all(started.map((w) => w.close()));
});

/** Records what each worker returned, step by step. */
class Recording implements ReplicaClient {
  readonly results: StepResult[] = [];
  constructor(readonly inner: ReplicaClient) {}
  get rank() {
    return this.inner.rank;
  }
  async computeGradients(r: StepRequest, s: VersionedState) {
    const res = await this.inner.computeGradients(r, s);
    this.results.push({ ...res, grads: res.grads.slice(), stats: res.stats.slice() });
    return res;
  }
  evaluate(shard: Parameters<ReplicaClient['evaluate']>[0], s: VersionedState) {
    return this.inner.evaluate(shard, s);
  }
  batchStatistics(shard: Parameters<ReplicaClient['batchStatistics']>[0], s: VersionedState) {
    return this.inner.batchStatistics(shard, s);
  }
  close() {
    return this.inner.close();
  }
}

const relative = (a: Float32Array, b: Float32Array) => {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
};

describe('data parallelism across worker processes', () => {
  it('G workers on shards of b equal one process on the concatenated batch of G·b (no BN, no dropout)', async () => {
    const G = 2;
    const b = 4;
    const o = options(G, b);
    const shards = new DirectShardMaker(dim);
    const start = await initialState(plain);
    const recorders = (await workers(plain, G)).map((w) => new Recording(w));
    const { state } = await train({ clients: recorders, shards, trainableSize: start.sgd.velocity.length }, o, {
      ...start,
      weights: start.weights.slice(),
      sgd: createSgdState(start.sgd.velocity.length),
    });

    // The same three steps in this process, one replica, batches of G·b made of the same shards.
    const plan = new TrainingPlan({ seed: o.seed, trainCount: o.trainCount, batchSize: b, workers: G });
    const single = new Replica(plain);
    const weights = start.weights.slice();
    const sgd = createSgdState(start.sgd.velocity.length);
    for (let step = 0; step < plan.steps; step++) {
      const parts = await Promise.all(
        [0, 1].map((r) => shards.makeShard({ indices: plan.shard(0, step, r).indices, seed: plan.shard(0, step, r).augmentSeed, augment: true })),
      );
      const x = new Float32Array([...parts[0].x, ...parts[1].x]);
      const labels = new Uint8Array([...parts[0].labels, ...parts[1].labels]);
      single.setState(weights);
      const g = await single.computeGradients({ x, labels }, 0);
      expect(Math.max(...g.grads.map(Math.abs))).toBeGreaterThan(1e-4); // a live gradient, not zeros
      // The averaged gradient of the workers is the gradient of the whole batch.
      const averaged = average(recorders.map((rec) => rec.results[step].grads));
      expect(relative(averaged, g.grads)).toBeLessThan(1e-5);
      sgdStep(weights, g.grads, sgd, o.lr, o.momentum);
    }
    expect(relative(state.weights, weights)).toBeLessThan(1e-5);
    // And the workers did train on different data: their own gradients differ.
    expect(relative(recorders[0].results[0].grads, recorders[1].results[0].grads)).toBeGreaterThan(1e-3);
    single.dispose();
  });

  it('one worker process trains exactly as the same training in-process, and repeats itself', async () => {
    const o = options(1, 8);
    const start = await initialState(withBn);
    const run = async (client: ReplicaClient) =>
      (
        await train({ clients: [client], shards: new DirectShardMaker(source), trainableSize: start.sgd.velocity.length }, o, {
          ...start,
          weights: start.weights.slice(),
          sgd: createSgdState(start.sgd.velocity.length),
        })
      ).state;
    const [worker] = await workers(withBn, 1);
    const viaProcess = await run(worker);
    const inProcess = await run(new InProcessClient(0, new Replica(withBn)));
    expect(viaProcess.weights).toEqual(inProcess.weights);
    expect(viaProcess.history[0].val_loss).toBe(inProcess.history[0].val_loss);
    // Same seed, same worker count: the same weights, run after run.
    expect((await run(worker)).weights).toEqual(viaProcess.weights);
  });

  it('averages the replicas’ BN statistics and leaves every replica with the same state', async () => {
    const G = 2;
    const o = options(G, 4);
    const start = await initialState(withBn);
    const recorders = (await workers(withBn, G)).map((w) => new Recording(w));
    const { state } = await train({ clients: recorders, shards: new DirectShardMaker(source), trainableSize: start.sgd.velocity.length }, o, start);
    const trainable = start.sgd.velocity.length;
    const stats = state.weights.subarray(trainable);
    const last = recorders.map((r) => r.results.at(-1)!.stats);
    expect(stats).toEqual(average(last));
    expect(relative(last[0], last[1])).toBeGreaterThan(1e-4); // each replica moved them its own way
    // Evaluating one shard on every replica (and on an in-process copy of the coordinator's state)
    // gives the same answer: the replicas hold identical weights and statistics.
    const shard = { x: (await new DirectShardMaker(source).makeShard({ indices: Uint32Array.of(48, 49, 50), seed: 0, augment: false })).x, labels: Uint8Array.of(0, 1, 2) };
    const current = { version: 1_000, data: state.weights };
    const answers = await Promise.all(recorders.map((r) => r.evaluate(shard, current)));
    const reference = new Replica(withBn);
    reference.setState(state.weights);
    const expected = await reference.evaluate(shard);
    for (const a of answers) expect(a.lossSum).toBeCloseTo(expected.lossSum, 5);
    expect(answers[1].lossSum).toBe(answers[0].lossSum);
    reference.dispose();
  });
});
