/**
 * Synchronous data-parallel SGD: the epoch/step loop of the coordinator.
 *
 * Each step: every worker computes the gradient of its own shard of `batchSize` images from the same
 * weights; the coordinator averages the gradients (so the update is that of one global batch of
 * batchSize × G), applies Keras momentum SGD, averages the replicas' BN moving statistics, and the
 * result is the state every worker starts the next step from.
 */
import { ExchangeArena } from './optim/kernels.js';
import type { Shard } from '../data/shard.js';
import { ShardPrefetcher, type ShardMaker } from './prefetch.js';
import { checkStatisticsBatches, statisticsBatches, TrainingPlan, validationChunks } from './plan.js';
import { learningRate } from './optim/schedule.js';
import { createSgdState, type SgdState } from './optim/sgd.js';
import type { ReplicaClient, StepResult, VersionedState } from './replica-client.js';
import { statsPart, trainablePart } from '../model/flat.js';
import { TrainpoolError } from '../util/errors.js';

export interface TrainerOptions {
  epochs: number;
  /** Images per worker per step. */
  batchSize: number;
  lr: number;
  momentum: number;
  scaleLr: boolean;
  warmupEpochs: number;
  seed: number;
  trainCount: number;
  testCount: number;
  /** Index of the first validation image in the shard maker's source (train and test share one). */
  testOffset: number;
  /** Validation images per evaluate message. */
  evalChunk: number;
  /** How many steps ahead the augmentation pool works. */
  prefetch: number;
  /**
   * --precise-bn: before each validation, the BN moving statistics are replaced by the mean of this many
   * training batches' statistics under the current weights (fvcore's PreciseBN), built as the training
   * shards are (augmented unless `augment` is false); 0 keeps Keras' moving
   * averages alone.
   */
  preciseBn?: number;
  /** Augment training shards (shift and flip, the default); false: --no-augment. */
  augment?: boolean;
}

/** One vocabulary everywhere: logs, history JSON and CSV, plot legend. */
export interface EpochRecord {
  /** 1-based, as Keras prints it. */
  epoch: number;
  loss: number;
  acc: number;
  val_loss: number;
  val_acc: number;
  lr: number;
  seconds: number;
}

export interface StepInfo {
  epoch: number;
  step: number;
  steps: number;
  loss: number;
  acc: number;
  images: number;
  wallMs: number;
  /** The slowest worker's own compute time: the rest of wallMs is exchange and coordinator work. */
  computeMs: number;
  shardsReadyBeforeAsked: boolean;
  shardWaitMs: number;
}

/** Everything needed to continue training from a step boundary (what a checkpoint holds). */
export interface TrainingState {
  /** Epochs completed. */
  epoch: number;
  /** Steps completed in the unfinished epoch `epoch` (0 at an epoch boundary). */
  step: number;
  /** Sums of the unfinished epoch's step losses and accuracies, so its record comes out whole. */
  partial: { lossSum: number; accSum: number };
  /** Trainable weights followed by BN statistics. */
  weights: Float32Array;
  sgd: SgdState;
  history: EpochRecord[];
}

/** The state before the first step: given weights, zero velocity, no history. */
export function freshState(weights: Float32Array, trainableSize: number): TrainingState {
  return { epoch: 0, step: 0, partial: { lossSum: 0, accSum: 0 }, weights, sgd: createSgdState(trainableSize), history: [] };
}

export interface TrainerHooks {
  onStep?(info: StepInfo): void;
  /** Called after validation with the epoch's record and the state at its end (for checkpoints). */
  onEpoch?(record: EpochRecord, state: TrainingState): void | Promise<void>;
  /** Polled between steps; returning true stops the run at the next step boundary. */
  shouldStop?(): boolean;
  /**
   * Called when a step's requests fail, with the state after the last step that completed (the failed one
   * changed nothing yet), before the error propagates: the caller may checkpoint it (a host lost for good).
   */
  onStepFailed?(state: TrainingState, error: unknown): void;
}

export interface TrainerDeps {
  clients: ReplicaClient[];
  shards: ShardMaker;
  /** Length of the trainable prefix of `weights`. */
  trainableSize: number;
  /**
   * Where the per-element passes run (optim/kernels.ts): the caller's, whose slots the workers' gradients
   * arrive in, or else one the trainer makes for the weights and velocity alone.
   */
  arena?: ExchangeArena;
}

export interface TrainResult {
  state: TrainingState;
  /** Why the loop ended. */
  stopped: 'completed' | 'requested';
}

export async function train(deps: TrainerDeps, o: TrainerOptions, start: TrainingState, hooks: TrainerHooks = {}): Promise<TrainResult> {
  const { clients, shards, trainableSize } = deps;
  const G = clients.length;
  const plan = new TrainingPlan({ seed: o.seed, trainCount: o.trainCount, batchSize: o.batchSize, workers: G });
  // The weights and velocity move into the arena, where the kernels update them in place (and where the
  // caller may have mapped the region the workers read the weights from: coordinator/exchange.ts).
  const arena = deps.arena ?? new ExchangeArena(start.weights.length + trainableSize, G);
  const weights = arena.place('weights', start.weights);
  const state: TrainingState = { ...start, partial: { ...start.partial }, history: [...start.history], weights, sgd: { velocity: arena.place('velocity', start.sgd.velocity) } };
  const trainable = trainablePart(deps, weights);
  const stats = statsPart(deps, weights);
  // The version tells each client whether its worker already holds these weights.
  const current: VersionedState = { version: 0, data: weights };
  const preciseBn = stats.length > 0 ? (o.preciseBn ?? 0) : 0;
  if (preciseBn > 0) checkStatisticsBatches({ trainCount: o.trainCount, batchSize: o.batchSize }, preciseBn);
  const augment = o.augment ?? true;
  // Rank r's shards: built here by the pool, or (a host that builds its own) a stand-in carrying the request.
  const makers: ShardMaker[] = clients.map((c) => (c.deferShard ? { makeShard: async (request) => c.deferShard!(request) } : shards));
  const prefetcher = new ShardPrefetcher(plan, (r) => makers[r], o.prefetch, o.epochs - 1, augment);

  try {
    for (let epoch = state.epoch; epoch < o.epochs; epoch++) {
      const epochStarted = performance.now();
      // 1. Learning rate for this epoch (poly decay, optionally scaled and warmed up).
      const lr = learningRate(epoch, { lr: o.lr, epochs: o.epochs, workers: G, scaleLr: o.scaleLr, warmupEpochs: o.warmupEpochs });
      // A run resumed mid-epoch continues the epoch's sums where they stopped.
      for (let step = state.step; step < plan.steps; step++) {
        if (hooks.shouldStop?.()) return { state, stopped: 'requested' };
        const stepStarted = performance.now();
        // 2. This step's shards, built ahead by the augmentation pool.
        const taken = await prefetcher.take(epoch, step);
        // 3. Every worker computes its shard's gradient; stale workers get the weights with the request, and
        //    the next step's dropout seed, whose masks a webgpu worker draws while its GPU runs this one.
        const [nextEpoch, nextStep] = step + 1 < plan.steps ? [epoch, step + 1] : [epoch + 1, 0];
        const computing = Promise.all(
          clients.map((c, r) =>
            c.computeGradients({ ...taken.shards[r], dropoutSeed: plan.dropoutSeed(epoch, step, r), nextDropoutSeed: plan.dropoutSeed(nextEpoch, nextStep, r) }, current),
          ),
        );
        // The next steps' shards, asked for once this step's requests are on their way (a turn of the event
        // loop: the clients write them asynchronously); the next step's handed to the clients as soon as they
        // are built, to be written where the workers will read them while this step computes.
        setImmediate(() => {
          prefetcher.ahead(epoch, step);
          prefetcher.peek(nextEpoch, nextStep)?.then(
            (next) => next.forEach((shard, r) => clients[r].stage?.(shard)),
            () => {},
          );
        });
        const results: StepResult[] = await computing.catch((e: unknown) => {
          hooks.onStepFailed?.(state, e);
          throw e;
        });
        // 4. Stop on divergence (Keras' TerminateOnNaN) before a checkpoint could see it.
        const loss = results.reduce((s, r) => s + r.loss, 0) / G;
        const acc = results.reduce((s, r) => s + r.acc, 0) / G;
        const diverged = (what: string) =>
          new TrainpoolError('NON_FINITE_LOSS', `${what} at epoch ${epoch + 1}, step ${step + 1}: training stopped (TerminateOnNaN)`);
        if (!Number.isFinite(loss)) throw diverged(`loss became ${loss}`);
        // 5–6. The mean of the replicas' gradients (in rank order: deterministic) and Keras momentum SGD on
        //    it, in one pass. A NaN update stops too: wasm's clip turns NaN probabilities into 1e-7, so NaN
        //    weights can report a finite loss. The replicas' averaged BN statistics become everyone's.
        const updated = arena.meanSgd(trainable, state.sgd.velocity, results.map((r) => r.grads), lr, o.momentum);
        if (!updated) throw diverged('the weight update became NaN or infinite');
        if (stats.length) arena.mean(stats, results.map((r) => r.stats));
        current.version++;
        // Every worker answered: nobody reads this step's shards again, and later ones may use their memory.
        taken.shards.forEach((shard, r) => makers[r].recycle?.([shard]));
        // 7. Metrics: Keras reports the mean over the epoch's batches.
        state.partial.lossSum += loss;
        state.partial.accSum += acc;
        state.step = step + 1;
        hooks.onStep?.({
          epoch: epoch + 1,
          step: step + 1,
          steps: plan.steps,
          loss: state.partial.lossSum / (step + 1),
          acc: state.partial.accSum / (step + 1),
          images: o.batchSize * G,
          wallMs: performance.now() - stepStarted,
          computeMs: Math.max(...results.map((r) => r.computeMs)),
          shardsReadyBeforeAsked: taken.readyBeforeAsked,
          shardWaitMs: taken.waitedMs,
        });
      }
      // 8. With --precise-bn, the statistics the validation and the checkpoint see are recomputed first.
      if (preciseBn > 0) {
        stats.set(await recomputeStatistics(clients, makers, current, { ...o, augment, epoch, count: preciseBn, size: stats.length }));
        current.version++;
      }
      // 9. Validation on the whole test set, split across the workers, in inference mode.
      const val = await validate(clients, makers, current, o);
      // 10. The epoch's record, then the caller's hook (log line, history, checkpoint).
      const record: EpochRecord = {
        epoch: epoch + 1,
        loss: state.partial.lossSum / plan.steps,
        acc: state.partial.accSum / plan.steps,
        val_loss: val.loss,
        val_acc: val.acc,
        lr,
        seconds: (performance.now() - epochStarted) / 1000,
      };
      state.epoch = epoch + 1;
      state.step = 0;
      state.partial = { lossSum: 0, accSum: 0 };
      state.history.push(record);
      await hooks.onEpoch?.(record, state);
    }
    return { state, stopped: 'completed' };
  } finally {
    prefetcher.clear();
  }
}

/**
 * PreciseBN (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", section 3; fvcore's update_bn_stats):
 * the mean, over `count` training batches, of each BN layer's batch mean and batch variance under the
 * current weights. Keras' moving averages (momentum 0.99) still carry much of their start and of early
 * weights after a short run; these describe the weights being validated and exported.
 *
 * Batch b goes to worker b mod G; each worker takes its batches one after another while the next is being
 * augmented. The sum runs in batch order in float64, so the result does not depend on which worker
 * answered first, nor (but for a replaced worker's re-sent batch, which gives the same numbers) on G.
 */
async function recomputeStatistics(
  clients: ReplicaClient[],
  makers: ShardMaker[],
  current: VersionedState,
  o: TrainerOptions & { augment: boolean; epoch: number; count: number; size: number },
): Promise<Float64Array> {
  const batches = statisticsBatches(o, o.epoch, o.count);
  const perBatch: Float32Array[] = new Array(batches.length);
  await Promise.all(
    clients.map(async (client, r) => {
      const make = (b: number) => makers[r].makeShard({ indices: batches[b].indices, seed: batches[b].augmentSeed, augment: o.augment });
      let next = r < batches.length ? make(r) : null;
      for (let b = r; b < batches.length; b += clients.length) {
        const shard = await next!;
        next = b + clients.length < batches.length ? make(b + clients.length) : null;
        const stats = await client.batchStatistics(shard, current);
        if (stats.length !== o.size) throw new Error(`worker ${r} sent ${stats.length} batch statistics where the model has ${o.size}: this is a bug`);
        // Copied: a worker's reply may lie in a region its next reply overwrites.
        perBatch[b] = stats.slice();
      }
    }),
  );
  const mean = new Float64Array(o.size);
  for (const stats of perBatch) for (let j = 0; j < mean.length; j++) mean[j] += stats[j];
  for (let j = 0; j < mean.length; j++) mean[j] /= perBatch.length;
  return mean;
}

async function validate(
  clients: ReplicaClient[],
  makers: ShardMaker[],
  current: VersionedState,
  o: TrainerOptions,
): Promise<{ loss: number; acc: number }> {
  if (o.testCount === 0) return { loss: Number.NaN, acc: Number.NaN };
  const plan = validationChunks(o.testCount, clients.length, o.evalChunk);
  const chunk = (r: number, [from, to]: [number, number]): Promise<Shard> => {
    const indices = new Uint32Array(to - from);
    for (let i = 0; i < indices.length; i++) indices[i] = o.testOffset + from + i;
    return makers[r].makeShard({ indices, seed: 0, augment: false });
  };
  const perWorker = await Promise.all(
    clients.map(async (client, r) => {
      let lossSum = 0;
      let correct = 0;
      let count = 0;
      // Build the next chunk while the worker evaluates this one.
      let next = plan[r].length ? chunk(r, plan[r][0]) : null;
      for (let k = 0; k < plan[r].length; k++) {
        const shard = await next!;
        next = k + 1 < plan[r].length ? chunk(r, plan[r][k + 1]) : null;
        const sums = await client.evaluate(shard, current);
        lossSum += sums.lossSum;
        correct += sums.correct;
        count += sums.count;
      }
      return { lossSum, correct, count };
    }),
  );
  const total = perWorker.reduce((a, b) => ({ lossSum: a.lossSum + b.lossSum, correct: a.correct + b.correct, count: a.count + b.count }));
  return { loss: total.lossSum / total.count, acc: total.correct / total.count };
}
