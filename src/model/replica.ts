/**
 * One model replica: what a worker process holds, and what the coordinator's tests run in-process to
 * compare against workers. It computes; it never applies gradients (the coordinator does).
 *
 * On webgpu its training steps are replayed (engine/replay/replay.ts): the first step of a batch size runs
 * eagerly through tfjs, then one probe step is recorded and checked, and every later step of that size
 * replays the recording, bit-identical to the eager step, without tfjs. A recording that cannot be made is
 * one line on stderr and eager steps from then on; TRAINPOOL_REPLAY=0 (or `replay: false`) turns replay off.
 * Once a step is recorded, the state lives in the recordings' WeightStage (engine/replay/weights.ts), a
 * buffer mapped for the CPU: setState copies the coordinator's weights there, once, and nowhere else.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { ReplayedStep, WeightStage, webgpuDevice } from '../engine/replay/replay.js';
import { releaseFreeWebgpuBuffers } from '../engine/tfjs-internals.js';
import { checkStateSize, layoutHash, layoutOf, readState, statsPart, trainablePart, writeState, type WeightLayout } from './flat.js';
import { batchStatistics, computeGradients, evaluateShard, type EvaluationSums, type Shard, type ShardGradients } from './gradients.js';
import { buildModel, dropoutLayers, type ModelSpec } from './minigooglenet.js';

/** What a worker computes with: a real replica, or a stand-in with the same shape (src/worker/fake.ts). */
export interface Compute {
  setState(state: Float32Array): void;
  /** `nextDropoutSeed`: the seed the next step will likely take (StepRequest's), for work done ahead. */
  computeGradients(shard: Shard, dropoutSeed: number, nextDropoutSeed?: number): Promise<ShardGradients>;
  evaluate(shard: Shard): Promise<EvaluationSums>;
  /** The shard's BN batch statistics in training mode, in the layout's statistics order (--precise-bn). */
  batchStatistics(shard: Shard): Promise<Float32Array>;
  dispose(): void;
}

export interface ReplicaOptions {
  /** Replay webgpu training steps (default: unless TRAINPOOL_REPLAY=0). */
  replay?: boolean;
  /**
   * Where replayed steps put their gradients, given their count (a worker's reply region: the read-back goes
   * there in one copy, and the reply carries them where they lie); undefined, or a view of another length,
   * for arrays of their own.
   */
  gradientsInto?: (values: number) => Float32Array | undefined;
}

export class Replica implements Compute {
  readonly model: tfl.LayersModel;
  readonly layout: WeightLayout;
  readonly layoutHash: string;
  private readonly replayWanted: boolean;
  private readonly gradientsInto: Float32Array | undefined;
  /** Recordings by batch size; null where recording failed (those sizes stay eager). */
  private readonly replays = new Map<number, ReplayedStep | null>();
  /**
   * The last state set, which the model's variables hold only while `stale` is false: here until a step is
   * recorded, then in `stage` (null here).
   */
  private state: Float32Array | null = null;
  private stage: WeightStage | null = null;
  private stale = false;
  /** Host time of the last setState's copy of the weights where replayed steps read them. */
  private stateMs = 0;

  constructor(
    readonly spec: ModelSpec,
    o: ReplicaOptions = {},
  ) {
    this.model = buildModel(spec);
    this.layout = layoutOf(this.model);
    this.layoutHash = layoutHash(this.layout);
    this.replayWanted = o.replay ?? process.env.TRAINPOOL_REPLAY !== '0';
    const into = o.gradientsInto?.(this.layout.trainableSize);
    this.gradientsInto = into?.length === this.layout.trainableSize ? into : undefined;
  }

  /** Trainable weights followed by BN statistics, as laid out by `layout`. */
  setState(state: Float32Array): void {
    // Checked here too: with recordings the variables get the state only later, when an eager step needs it.
    checkStateSize(this.layout, state);
    if (this.replays.size === 0) {
      writeState(this.model, this.layout, state);
      if (!this.replayWanted) return;
    }
    // A replayed step takes the weights as bytes: the variables get them only when an eager step needs them.
    const started = performance.now();
    if (this.stage) this.stage.write(0, state);
    else this.state = state.slice();
    this.stateMs = performance.now() - started;
    this.stale = this.replays.size > 0;
  }

  async getState(): Promise<Float32Array> {
    this.refresh();
    return readState(this.model, this.layout);
  }

  /** Whether steps of `batch` images replay a recording. */
  replaying(batch: number): boolean {
    return this.replays.get(batch) instanceof ReplayedStep;
  }

  /**
   * The last replayed step of `batch` images: its host time before the GPU (writing the shard, encoding where
   * not done ahead, submitting) in parts, how long it slept before asking for its results, the weights' copy
   * of the last setState, WebGPU calls, the bytes of the buffers it owns; null where none.
   */
  replayStats(batch: number): { encodeMs: number; phases: ReplayedStep['phases']; encodedAhead: boolean; masksAhead: boolean; quietMs: number; stateMs: number; calls: number; bytes: number } | null {
    const r = this.replays.get(batch);
    return r ? { encodeMs: r.encodeMs, phases: { ...r.phases }, encodedAhead: r.encodedAhead, masksAhead: r.masksAhead, quietMs: r.quietMs, stateMs: this.stateMs, calls: r.callsPerStep, bytes: r.bytes + (this.stage ? 2 * this.stage.bytes : 0) } : null;
  }

  async computeGradients(shard: Shard, dropoutSeed: number, nextDropoutSeed?: number): Promise<ShardGradients> {
    const replay = this.replays.get(shard.labels.length);
    if (replay && this.stage) {
      const into = this.gradientsInto;
      const { flat, loss, acc } = await replay.run({ x: shard.x, labels: shard.labels, dropoutSeed, nextDropoutSeed }, into);
      // With `into`, the read-back brought the gradients there and `flat` holds the statistics alone.
      const stats = into ? flat : statsPart(this.layout, flat);
      // An eager step moves the variables' BN statistics; so does this one, for what comes next.
      this.stage.write(this.layout.trainableSize, stats);
      return { grads: into ?? trainablePart(this.layout, flat), stats, loss, acc };
    }
    this.refresh();
    const eager = await computeGradients(this.model, this.layout, shard, dropoutSeed);
    // The step moved the variables' BN statistics; the state kept for replayed steps moves with them.
    if (this.stage) this.stage.write(this.layout.trainableSize, eager.stats);
    else if (this.state) statsPart(this.layout, this.state).set(eager.stats);
    if (replay === undefined && this.replayWanted && (this.state || this.stage) && tf.getBackend() === 'webgpu') await this.record(shard.labels.length);
    return eager;
  }

  async evaluate(shard: Shard): Promise<EvaluationSums> {
    this.refresh();
    return evaluateShard(this.model, shard);
  }

  async batchStatistics(shard: Shard): Promise<Float32Array> {
    this.refresh();
    return batchStatistics(this.model, this.layout, shard);
  }

  dispose(): void {
    for (const r of this.replays.values()) r?.dispose();
    this.replays.clear();
    this.stage?.destroy();
    this.stage = null;
    this.model.dispose();
  }

  /** Writes the last state into the model's variables where replayed steps (or a recording) left them behind. */
  private refresh(): void {
    if (!this.stale) return;
    const state = this.stage?.read() ?? this.state;
    if (!state) return;
    writeState(this.model, this.layout, state);
    this.stale = false;
  }

  private async record(batch: number): Promise<void> {
    const [, height, width, depth] = this.model.inputs[0].shape as number[];
    // The first recording makes the stage; later ones (other batch sizes) bind the same one.
    let stage: WeightStage | null = null;
    try {
      const device = webgpuDevice();
      stage = this.stage ?? new WeightStage(device, this.layout.entries);
      const step = await ReplayedStep.record({
        device,
        weights: stage,
        variables: this.layout.entries,
        batch,
        imageSize: height * width * depth,
        weightsSize: this.layout.totalSize,
        dropoutRates: dropoutLayers(this.model).map((l) => (l.getConfig() as { rate: number }).rate),
        eager: async ({ weights, x, labels, dropoutSeed }) => {
          writeState(this.model, this.layout, weights);
          const g = await computeGradients(this.model, this.layout, { x, labels }, dropoutSeed);
          return { flat: new Float32Array(g.grads.buffer, g.grads.byteOffset, this.layout.totalSize), loss: g.loss, acc: g.acc };
        },
      });
      this.replays.set(batch, step);
      if (!this.stage) {
        stage.write(0, this.state!);
        this.stage = stage;
        this.state = null;
      }
      // Steps of this size use the recording's buffers from now on; tfjs' pool gives its spare ones back.
      releaseFreeWebgpuBuffers(tf.backend());
    } catch (e) {
      process.stderr.write(`trainpool: webgpu steps of ${batch} images stay eager: recording them failed (${(e as Error).message})\n`);
      this.replays.set(batch, null);
      if (stage !== this.stage) stage?.destroy();
    }
    // The probe step wrote its own weights into the variables.
    this.stale = true;
  }
}
