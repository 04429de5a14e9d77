import { describe, expect, it, vi } from 'vitest';
import { ExchangeArena } from '../src/coordinator/optim/kernels.js';
import { TrainingPlan, stepsPerEpoch, validationChunks } from '../src/coordinator/plan.js';
import { freshState, train, type StepInfo, type TrainerOptions, type TrainingState } from '../src/coordinator/trainer.js';
import type { ShardGradients } from '../src/model/gradients.js';
import type { Compute } from '../src/model/replica.js';
import { FakeCompute } from '../src/worker/fake.js';
import { DirectShardMaker, InProcessClient } from './helpers/in-process.js';

const H = 4, W = 4, D = 1;
const TRAINABLE = 6, STATS = 2;

/** 40 training + 10 test images; image i is filled with the value i, label i % 10. */
function source(train = 40, test = 10) {
  const n = train + test;
  const images = new Uint8Array(n * H * W * D);
  for (let i = 0; i < n; i++) images.fill(i, i * H * W * D, (i + 1) * H * W * D);
  const labels = Uint8Array.from({ length: n }, (_, i) => i % 10);
  return { images, labels, mean: new Float32Array(H * W * D), height: H, width: W, depth: D };
}

function options(o: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    epochs: 2, batchSize: 4, lr: 0.1, momentum: 0.9, scaleLr: false, warmupEpochs: 5, seed: 1,
    trainCount: 40, testCount: 10, testOffset: 40, evalChunk: 3, prefetch: 2, ...o,
  };
}

function initial(): TrainingState {
  return freshState(new Float32Array(TRAINABLE + STATS).fill(0.5), TRAINABLE);
}

const fakes = (g: number, delayMs = 0) =>
  Array.from({ length: g }, (_, r) => new InProcessClient(r, new FakeCompute({ delayMs, trainableSize: TRAINABLE, statsSize: STATS })));

describe('training plan', () => {
  it('drops the incomplete last global batch, as Keras steps_per_epoch = N // batch does', () => {
    expect(stepsPerEpoch({ trainCount: 50_000, batchSize: 64, workers: 4 })).toBe(195);
    expect(stepsPerEpoch({ trainCount: 50_000, batchSize: 64, workers: 1 })).toBe(781);
  });

  it('gives each rank its own images, none twice in an epoch, reshuffled the next epoch', () => {
    const plan = new TrainingPlan({ seed: 3, trainCount: 40, batchSize: 4, workers: 2 });
    const seen = new Set<number>();
    for (let s = 0; s < plan.steps; s++) for (let r = 0; r < 2; r++) for (const i of plan.shard(0, s, r).indices) seen.add(i);
    expect(seen.size).toBe(40);
    expect(Array.from(plan.shard(1, 0, 0).indices)).not.toEqual(Array.from(plan.shard(0, 0, 0).indices));
    expect(plan.shard(0, 0, 0).augmentSeed).not.toBe(plan.shard(0, 0, 1).augmentSeed);
    expect(plan.shard(0, 0, 0).dropoutSeed).not.toBe(plan.shard(0, 1, 0).dropoutSeed);
  });

  it("tells each rank, with every step, the dropout seed of its next step, across epochs", async () => {
    const seen: [number, number | undefined][][] = [[], []];
    const clients = [0, 1].map((r) => {
      const fake = new FakeCompute({ delayMs: 0, trainableSize: TRAINABLE, statsSize: STATS });
      const compute: Compute = {
        setState: (s) => fake.setState(s),
        computeGradients: (shard, seed, next) => (seen[r].push([seed, next]), fake.computeGradients(shard)),
        evaluate: (shard) => fake.evaluate(shard),
        batchStatistics: (shard) => fake.batchStatistics(shard),
        dispose: () => fake.dispose(),
      };
      return new InProcessClient(r, compute);
    });
    const o = options({ epochs: 2 });
    await train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, o, initial(), {});
    const plan = new TrainingPlan({ seed: o.seed, trainCount: 40, batchSize: 4, workers: 2 });
    for (const r of [0, 1]) {
      expect(seen[r].map(([seed]) => seed)).toEqual([0, 1].flatMap((e) => Array.from({ length: plan.steps }, (_, s) => plan.shard(e, s, r).dropoutSeed)));
      // Each hint is the seed the rank's next request carries (the last one's, of an epoch that never comes, is unused).
      expect(seen[r].slice(0, -1).map(([, next]) => next)).toEqual(seen[r].slice(1).map(([seed]) => seed));
      expect(seen[r].at(-1)![1]).toBe(plan.dropoutSeed(2, 0, r));
    }
  });

  it('hands each rank its next step’s shard while this step computes, to be written ahead (ReplicaClient.stage)', async () => {
    // Per rank, in order: ['staged', x] when the trainer hands a shard over, ['sent', x] with each request.
    const events: ['staged' | 'sent', Float32Array][][] = [[], []];
    const clients = fakes(2, 5).map((c, r) =>
      Object.assign(c, {
        stage: (shard: { x: Float32Array }) => events[r].push(['staged', shard.x]),
        computeGradients: ((compute) => (req: Parameters<typeof compute>[0], state: Parameters<typeof compute>[1]) => (events[r].push(['sent', req.x]), compute(req, state)))(c.computeGradients.bind(c)),
      }),
    );
    const o = options({ epochs: 2, testCount: 0 });
    await train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, o, initial(), {});
    const plan = new TrainingPlan({ seed: o.seed, trainCount: 40, batchSize: 4, workers: 2 });
    for (const r of [0, 1]) {
      const sent = events[r].filter(([what]) => what === 'sent');
      expect(sent).toHaveLength(2 * plan.steps);
      // Every request but the run's first carries the shard staged right before it, across the epoch boundary:
      // each staged while the previous request computed (after it was sent).
      const kinds = events[r].map(([what]) => what);
      expect(kinds).toEqual(['sent', ...Array.from({ length: 2 * plan.steps - 1 }, () => ['staged', 'sent']).flat()]);
      for (let i = 1; i < events[r].length; i += 2) expect(events[r][i + 1][1], `rank ${r}, request ${(i + 1) / 2}`).toBe(events[r][i][1]);
    }
  });

  it('takes a training set of exactly one global batch: one step per epoch', () => {
    expect(new TrainingPlan({ seed: 1, trainCount: 128, batchSize: 64, workers: 2 }).steps).toBe(1);
  });

  it('refuses a training set smaller than one global batch', () => {
    expect(() => new TrainingPlan({ seed: 1, trainCount: 100, batchSize: 64, workers: 2 })).toThrow(
      'the training set (100 images) must hold at least one global batch of 64 × 2 workers = 128 images',
    );
  });

  it('splits validation into contiguous per-worker ranges cut into chunks', () => {
    expect(validationChunks(10, 3, 2)).toEqual([[[0, 2], [2, 3]], [[3, 5], [5, 6]], [[6, 8], [8, 10]]]);
  });
});

describe('trainer with fake workers', () => {
  it('applies SGD to the average of the workers’ gradients and adopts their averaged BN statistics', async () => {
    const maker = new DirectShardMaker(source());
    const o = options({ epochs: 1 });
    const plan = new TrainingPlan({ seed: o.seed, trainCount: 40, batchSize: 4, workers: 2 });
    const steps: StepInfo[] = [];
    const { state } = await train({ clients: fakes(2), shards: maker, trainableSize: TRAINABLE }, o, initial(), {
      onStep: (s) => steps.push(s),
    });
    // Replay by hand: shard means are the mean image value (no augmentation effect on constant images).
    let w0 = 0.5;
    const w = new Float64Array(TRAINABLE).fill(0.5);
    const v = new Float64Array(TRAINABLE);
    let lastMeans = [0, 0];
    for (let s = 0; s < plan.steps; s++) {
      const means = [0, 1].map((r) => plan.shard(0, s, r).indices.reduce((a, i) => a + i, 0) / 4);
      const g = (means[0] + means[1]) / 2 + w0;
      for (let i = 0; i < TRAINABLE; i++) {
        v[i] = 0.9 * v[i] - 0.1 * g * (i + 1) * 1e-6;
        w[i] += v[i];
      }
      w0 = w[0];
      lastMeans = means;
    }
    for (let i = 0; i < TRAINABLE; i++) expect(state.weights[i]).toBeCloseTo(w[i], 6);
    const m = (lastMeans[0] + lastMeans[1]) / 2;
    expect(state.weights[TRAINABLE]).toBeCloseTo(m, 5);
    expect(state.weights[TRAINABLE + 1]).toBeCloseTo(m + 1e-3, 5);
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5]);
    expect(steps[0].images).toBe(8);
  });

  it('reports epoch loss and accuracy as the mean over steps, and validation over the whole test set', async () => {
    const maker = new DirectShardMaker(source());
    const steps: StepInfo[] = [];
    const { state } = await train({ clients: fakes(3), shards: maker, trainableSize: TRAINABLE }, options({ batchSize: 4 }), initial(), {
      onStep: (s) => steps.push(s),
    });
    // By hand from the plan: a fake step's loss is its shard's mean value (image i holds i), its accuracy
    // the fraction of even labels (label i % 10); the workers' mean per step, then the mean over the steps.
    const plan = new TrainingPlan({ seed: 1, trainCount: 40, batchSize: 4, workers: 3 });
    expect(plan.steps).toBe(3);
    for (const epoch of [0, 1]) {
      const perStep = Array.from({ length: plan.steps }, (_, step) => {
        const shards = [0, 1, 2].map((r) => Array.from(plan.shard(epoch, step, r).indices));
        const loss = shards.reduce((a, ix) => a + ix.reduce((b, i) => b + i, 0) / 4, 0) / 3;
        const acc = shards.reduce((a, ix) => a + ix.filter((i) => i % 2 === 0).length / 4, 0) / 3;
        return { loss, acc };
      });
      const record = state.history[epoch];
      expect(record.loss, `epoch ${epoch + 1} loss`).toBeCloseTo(perStep.reduce((a, p) => a + p.loss, 0) / plan.steps, 9);
      expect(record.acc, `epoch ${epoch + 1} acc`).toBeCloseTo(perStep.reduce((a, p) => a + p.acc, 0) / plan.steps, 9);
      // The progress line's figures are the running mean over the steps so far.
      const shown = steps.filter((s) => s.epoch === epoch + 1);
      expect(shown[0].loss).toBeCloseTo(perStep[0].loss, 9);
      expect(shown[1].loss).toBeCloseTo((perStep[0].loss + perStep[1].loss) / 2, 9);
      expect(shown[2].acc).toBeCloseTo((perStep[0].acc + perStep[1].acc + perStep[2].acc) / 3, 9);
      expect(shown.map((s) => [s.step, s.steps, s.images])).toEqual([[1, 3, 12], [2, 3, 12], [3, 3, 12]]);
    }
    expect(state.history.map((r) => r.epoch)).toEqual([1, 2]);
    const [first] = state.history;
    // Test images 40..49 have labels 0..9: half even.
    expect(first.val_acc).toBe(0.5);
    // Fake val loss per image is its mean value: (40 + … + 49) / 10.
    expect(first.val_loss).toBeCloseTo(44.5, 5);
    expect(first.lr).toBe(0.1);
    expect(state.history[1].lr).toBeCloseTo(0.05, 12);
  });

  it('with no test set, records no validation (NaN) and asks the workers for none', async () => {
    const maker = new DirectShardMaker(source(40, 0));
    const clients = fakes(2);
    const evaluate = clients.map((c) => vi.spyOn(c, 'evaluate'));
    const { state } = await train({ clients, shards: maker, trainableSize: TRAINABLE }, options({ testCount: 0, epochs: 1 }), initial());
    expect(state.history[0].val_loss).toBeNaN();
    expect(state.history[0].val_acc).toBeNaN();
    for (const e of evaluate) expect(e).not.toHaveBeenCalled();
  });

  it('augments training shards only: validation images are the test set as it is', async () => {
    const maker = new DirectShardMaker(source());
    const made = vi.spyOn(maker, 'makeShard');
    const result = await train({ clients: fakes(2), shards: maker, trainableSize: TRAINABLE }, options({ epochs: 1 }), initial());
    expect(result.stopped).toBe('completed');
    const requests = made.mock.calls.map(([r]) => r);
    const validation = requests.filter((r) => r.indices[0] >= 40);
    expect(validation.length).toBeGreaterThan(0);
    expect(validation.every((r) => r.augment === false)).toBe(true);
    expect(requests.filter((r) => r.indices[0] < 40).every((r) => r.augment !== false)).toBe(true);
  });

  it('hands a step’s failure to onStepFailed with the state after the last step done, unchanged by the failed one', async () => {
    const clients = fakes(2);
    const failAt = 3; // the 4th step of the run
    let asked = 0;
    const real = clients[1].computeGradients.bind(clients[1]);
    vi.spyOn(clients[1], 'computeGradients').mockImplementation(async (r, st) => {
      if (asked++ === failAt) throw new Error('host 1 left the run');
      return real(r, st);
    });
    const seen: { step: number; weights: number[]; error: string }[] = [];
    const done: number[][] = [];
    const run = train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options(), initial(), {
      onStep: () => done.push([]),
      onStepFailed: (state, e) => seen.push({ step: state.step, weights: Array.from(state.weights), error: (e as Error).message }),
    });
    await expect(run).rejects.toThrow('host 1 left the run');
    expect(done).toHaveLength(failAt);
    expect(seen).toHaveLength(1);
    expect(seen[0].step).toBe(failAt);
    expect(seen[0].error).toBe('host 1 left the run');
    // The same weights as a run stopped by request after those steps.
    let n = 0;
    const stopped = await train({ clients: fakes(2), shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options(), initial(), { shouldStop: () => n++ === failAt });
    expect(stopped.state.step).toBe(failAt);
    expect(seen[0].weights).toEqual(Array.from(stopped.state.weights));
  });

  it('hands a client that builds its own shards a stand-in with the request, for training and validation alike', async () => {
    const maker = new DirectShardMaker(source());
    const made = vi.spyOn(maker, 'makeShard');
    const clients = fakes(2);
    const stand = { x: new Float32Array(4 * H * W * D).fill(7), labels: new Uint8Array(4) };
    const requests: { indices: number[]; augment: boolean }[] = [];
    Object.assign(clients[1], { deferShard: (r: { indices: Uint32Array; augment: boolean }) => (requests.push({ indices: Array.from(r.indices), augment: r.augment }), stand) });
    const got = vi.spyOn(clients[1], 'computeGradients');
    await train({ clients, shards: maker, trainableSize: TRAINABLE }, options({ epochs: 1 }), initial());
    // Rank 1's shards were never built here: every request it got was the stand-in.
    expect(got.mock.calls.every(([r]) => r.x === stand.x)).toBe(true);
    expect(requests.filter((r) => r.augment).length).toBe(got.mock.calls.length);
    expect(requests.some((r) => !r.augment && r.indices[0] >= 40)).toBe(true); // its validation chunks
    const plan = new TrainingPlan({ seed: 1, trainCount: 40, batchSize: 4, workers: 2 });
    expect(made.mock.calls.every(([r]) => !Array.from(plan.shard(0, 0, 1).indices).every((v, i) => r.indices[i] === v))).toBe(true);
  });

  it('sends weights only when a worker’s copy is stale', async () => {
    const clients = fakes(2);
    const o = options();
    await train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, o, initial());
    // Each of the 5 × 2 steps changes the weights. Validation needs the weights of the epoch's last step
    // (sent with its first chunk only, not with every chunk: + 2), and the first step of epoch 2 starts
    // from exactly those weights, so it is sent none (− 1).
    expect(clients[0].statesReceived).toBe(5 * 2 + 2 - 1);
  });

  it('ends with the same weights for the same seed and different ones for another', async () => {
    const run = async (seed: number) =>
      (await train({ clients: fakes(2), shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options({ seed }), initial()))
        .state.weights;
    const a = await run(1);
    expect(await run(1)).toEqual(a);
    expect(await run(2)).not.toEqual(a);
  });

  it('never waits for shards when the pool is faster than the workers', async () => {
    const steps: StepInfo[] = [];
    // Shards made at once (no timer) against workers taking a 15 ms timer each: an order, not a race of clocks.
    await train({ clients: fakes(2, 15), shards: new DirectShardMaker(source(), 0), trainableSize: TRAINABLE }, options(), initial(), {
      onStep: (s) => steps.push(s),
    });
    // The first step's shards are requested when it starts; every later one was built in advance.
    expect(steps.slice(1).every((s) => s.shardsReadyBeforeAsked)).toBe(true);
  });

  it('asks for the next steps\u2019 shards only once a step\u2019s requests are out, so the pool works beside the workers', async () => {
    const G = 2;
    const events: string[] = [];
    // Workers that take a while, as real ones do: ones that answer within the same turn of the event loop
    // leave no turn for the pool beside them (that each shard is still built once: 'builds every training
    // shard once' below, with such workers).
    const clients = fakes(G, 2);
    for (const c of clients) {
      const compute = c.computeGradients.bind(c);
      c.computeGradients = (r, state) => (events.push('compute'), compute(r, state));
    }
    const direct = new DirectShardMaker(source());
    const shards = { makeShard: (r: Parameters<DirectShardMaker['makeShard']>[0]) => (events.push('shard'), direct.makeShard(r)) };
    await train({ clients, shards, trainableSize: TRAINABLE }, options({ testCount: 0, prefetch: 2 }), initial());
    // Requests go out in step order: the n-th of each kind belongs to step ⌊n / G⌋.
    const at = (kind: string) => events.flatMap((e, i) => (e === kind ? [i] : []));
    const [made, computed] = [at('shard'), at('compute')];
    const steps = computed.length / G;
    expect(steps).toBe(2 * stepsPerEpoch({ trainCount: 40, batchSize: 4, workers: G }));
    expect(made).toHaveLength(computed.length);
    // Before the first step's requests, only its own shards; step k's (k ≥ 1) asked for once the requests
    // of step k − 2 are out (prefetch 2: two steps ahead), never before the run's first.
    expect(made.filter((i) => i < computed[0])).toHaveLength(G);
    for (let k = 1; k < steps; k++) expect(made[k * G], `step ${k + 1}`).toBeGreaterThan(computed[Math.max(0, k - 2) * G + G - 1]);
    // And still two steps ahead: step k's shards were asked for before step k − 1's requests went out.
    for (let k = 2; k < steps; k++) expect(made[k * G], `step ${k + 1}`).toBeLessThan(computed[(k - 1) * G]);
  });

  it('does wait when the pool is slower than the workers (the check can fail)', async () => {
    const steps: StepInfo[] = [];
    await train({ clients: fakes(2, 0), shards: new DirectShardMaker(source(), 10), trainableSize: TRAINABLE }, options({ prefetch: 0 }), initial(), {
      onStep: (s) => steps.push(s),
    });
    expect(steps.filter((s) => !s.shardsReadyBeforeAsked).length).toBeGreaterThan(5);
  });

  it('stops at once on a non-finite loss, like Keras’ TerminateOnNaN', async () => {
    const nan = new FakeCompute({ delayMs: 0, trainableSize: TRAINABLE, statsSize: STATS });
    let calls = 0;
    const inner = nan.computeGradients.bind(nan);
    nan.computeGradients = async (s): Promise<ShardGradients> => ({ ...(await inner(s)), loss: ++calls === 3 ? Number.NaN : 1 });
    const clients = [new InProcessClient(0, nan)];
    await expect(
      train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options(), initial()),
    ).rejects.toThrow('loss became NaN at epoch 1, step 3: training stopped (TerminateOnNaN)');
  });

  it('stops on a non-finite update with a finite loss, and both stops carry the NON_FINITE_LOSS code', async () => {
    const bad = new FakeCompute({ delayMs: 0, trainableSize: TRAINABLE, statsSize: STATS });
    let calls = 0;
    const inner = bad.computeGradients.bind(bad);
    bad.computeGradients = async (s): Promise<ShardGradients> => {
      const g = await inner(s);
      return ++calls === 2 ? { ...g, grads: new Float32Array(TRAINABLE).fill(Number.POSITIVE_INFINITY) } : g;
    };
    const run = (c: FakeCompute) => train({ clients: [new InProcessClient(0, c)], shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options(), initial());
    const e = await run(bad).then(() => null, (err: unknown) => err as Error & { code?: string });
    expect(e?.message).toBe('the weight update became NaN or infinite at epoch 1, step 2: training stopped (TerminateOnNaN)');
    expect(e?.code).toBe('NON_FINITE_LOSS');
    const nan = new FakeCompute({ delayMs: 0, trainableSize: TRAINABLE, statsSize: STATS });
    const innerNan = nan.computeGradients.bind(nan);
    nan.computeGradients = async (s): Promise<ShardGradients> => ({ ...(await innerNan(s)), loss: Number.POSITIVE_INFINITY });
    const e2 = await run(nan).then(() => null, (err: unknown) => err as Error & { code?: string });
    expect([e2?.code, e2?.message.split(' at ')[0]]).toEqual(['NON_FINITE_LOSS', 'loss became Infinity']);
  });

  it('hands each training shard back to its maker once, after every worker answered its step', async () => {
    const G = 2;
    const events: string[] = [];
    const clients = fakes(G);
    for (const c of clients) {
      const compute = c.computeGradients.bind(c);
      c.computeGradients = async (r, state) => {
        const out = await compute(r, state);
        events.push('answered');
        return out;
      };
    }
    const direct = new DirectShardMaker(source());
    const made = new Set<Float32Array>();
    const recycled: Float32Array[] = [];
    const shards = {
      makeShard: async (r: Parameters<DirectShardMaker['makeShard']>[0]) => {
        const shard = await direct.makeShard(r);
        made.add(shard.x);
        return shard;
      },
      recycle: (done: { x: Float32Array }[]) => {
        for (const { x } of done) recycled.push(x), events.push('recycled');
      },
    };
    await train({ clients, shards, trainableSize: TRAINABLE }, options({ testCount: 0 }), initial());
    const steps = 2 * stepsPerEpoch({ trainCount: 40, batchSize: 4, workers: G });
    expect(recycled).toHaveLength(steps * G);
    expect(new Set(recycled).size).toBe(recycled.length);
    expect(recycled.every((x) => made.has(x))).toBe(true);
    // Per step: both answers, then both shards back.
    expect(events).toEqual(Array.from({ length: steps }, () => ['answered', 'answered', 'recycled', 'recycled']).flat());
  });

  it('builds every training shard once, and none for an epoch after the last', async () => {
    // fakes(2) answer at once, before the trainer's turn that asks for the next steps' shards: by then it has
    // taken later steps, which must not be built again.
    const maker = new DirectShardMaker(source());
    const o = options({ epochs: 2, prefetch: 3 });
    await train({ clients: fakes(2), shards: maker, trainableSize: TRAINABLE }, o, initial());
    const steps = stepsPerEpoch({ trainCount: 40, batchSize: 4, workers: 2 });
    const validationShards = validationChunks(10, 2, o.evalChunk).flat().length;
    expect(maker.made).toBe(o.epochs * steps * 2 + o.epochs * validationShards);
  });

  it('times steps and epochs on the clock: wall time of the step, the slowest worker, the epoch in seconds', async () => {
    // Only performance.now is faked: each worker moves it by its compute time, nothing else does.
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      vi.advanceTimersByTime(1000);
      const clients = [3, 7].map((ms, r) => {
        const c = new FakeCompute({ delayMs: 0, trainableSize: TRAINABLE, statsSize: STATS });
        const inner = c.computeGradients.bind(c);
        c.computeGradients = async (s): Promise<ShardGradients> => {
          vi.advanceTimersByTime(ms);
          return inner(s);
        };
        // Each worker reports its own compute time, as a worker process does.
        const client = new InProcessClient(r, c);
        const step = client.computeGradients.bind(client);
        client.computeGradients = async (req, st) => ({ ...(await step(req, st)), computeMs: ms });
        return client;
      });
      const steps: StepInfo[] = [];
      const { state } = await train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options(), initial(), {
        onStep: (s) => steps.push(s),
      });
      expect(steps.map((s) => [s.wallMs, s.computeMs])).toEqual(steps.map(() => [10, 7]));
      expect(state.history.map((r) => r.seconds)).toEqual([0.05, 0.05]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('trains to the same bits whether the gradients arrive in the exchange arena (WebAssembly) or not', async () => {
    const run = async (arena?: ExchangeArena) => {
      const clients = fakes(3).map((c) => {
        if (!arena) return c;
        // As a worker handle's receiver does: each rank's reply lands in its slots of the arena.
        const step = c.computeGradients.bind(c);
        c.computeGradients = async (req, st) => {
          const r = await step(req, st);
          const grads = arena.slot(`${c.rank}:grads`, r.grads.length)!;
          const stats = arena.slot(`${c.rank}:stats`, r.stats.length)!;
          grads.set(r.grads);
          stats.set(r.stats);
          return { ...r, grads, stats };
        };
        return c;
      });
      return (await train({ clients, shards: new DirectShardMaker(source()), trainableSize: TRAINABLE, arena }, options({ batchSize: 4 }), initial())).state;
    };
    const arena = new ExchangeArena(2 * (TRAINABLE + STATS) + 3 * (TRAINABLE + STATS + 8), 3);
    const inArena = await run(arena);
    const plain = await run();
    expect(arena.holds(inArena.weights) && arena.holds(inArena.sgd.velocity)).toBe(true);
    const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
    expect(bits(inArena.weights)).toEqual(bits(plain.weights));
    expect(bits(inArena.sgd.velocity)).toEqual(bits(plain.sgd.velocity));
    expect(inArena.weights.some((w) => w !== 0.5)).toBe(true);
  });

  it('stops at a step boundary when asked', async () => {
    let steps = 0;
    const result = await train({ clients: fakes(1), shards: new DirectShardMaker(source()), trainableSize: TRAINABLE }, options(), initial(), {
      onStep: () => steps++,
      shouldStop: () => steps >= 3,
    });
    expect(result.stopped).toBe('requested');
    expect(steps).toBe(3);
    expect(result.state.epoch).toBe(0);
  });

  it('continues a run stopped mid-epoch to exactly the uninterrupted result', async () => {
    const deps = () => ({ clients: fakes(2), shards: new DirectShardMaker(source()), trainableSize: TRAINABLE });
    const whole = (await train(deps(), options(), initial())).state;
    let steps = 0;
    const stopped = await train(deps(), options(), initial(), { onStep: () => steps++, shouldStop: () => steps >= 7 });
    expect(stopped.state).toMatchObject({ epoch: 1, step: 2 });
    const resumed = (await train(deps(), options(), stopped.state)).state;
    expect(resumed.weights).toEqual(whole.weights);
    expect(resumed.sgd.velocity).toEqual(whole.sgd.velocity);
    const strip = (h: typeof whole.history) => h.map(({ seconds: _, ...r }) => r);
    expect(strip(resumed.history)).toEqual(strip(whole.history));
  });
});
