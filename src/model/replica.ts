/**
 * One model replica: what a worker process holds, and what the coordinator's tests run in-process to
 * compare against workers. It computes; it never applies gradients (the coordinator does).
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import { layoutHash, layoutOf, readState, writeState, type WeightLayout } from './flat.js';
import { computeGradients, evaluateShard, type EvaluationSums, type Shard, type ShardGradients } from './gradients.js';
import { buildModel, type ModelSpec } from './minigooglenet.js';

/** What a worker computes with: a real replica, or a stand-in with the same shape (src/worker/fake.ts). */
export interface Compute {
  setState(state: Float32Array): void;
  computeGradients(shard: Shard, dropoutSeed: number): Promise<ShardGradients>;
  evaluate(shard: Shard): Promise<EvaluationSums>;
  dispose(): void;
}

export class Replica implements Compute {
  readonly model: tfl.LayersModel;
  readonly layout: WeightLayout;
  readonly layoutHash: string;

  constructor(readonly spec: ModelSpec) {
    this.model = buildModel(spec);
    this.layout = layoutOf(this.model);
    this.layoutHash = layoutHash(this.layout);
  }

  /** Trainable weights followed by BN statistics, as laid out by `layout`. */
  setState(state: Float32Array): void {
    writeState(this.model, this.layout, state);
  }

  getState(): Promise<Float32Array> {
    return readState(this.model, this.layout);
  }

  computeGradients(shard: Shard, dropoutSeed: number): Promise<ShardGradients> {
    return computeGradients(this.model, this.layout, shard, dropoutSeed);
  }

  evaluate(shard: Shard): Promise<EvaluationSums> {
    return evaluateShard(this.model, shard);
  }

  dispose(): void {
    this.model.dispose();
  }
}
