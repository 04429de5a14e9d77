/**
 * What the trainer talks to for each rank: one replica that computes gradients and evaluation sums from
 * the coordinator's state. A worker process behind its supervisor (supervisor.ts, worker-handle.ts) in a
 * run; an in-process stand-in in tests. The trainer never sees processes, pipes or retries.
 */
import type { EvaluationSums, Shard, ShardGradients } from '../model/gradients.js';
import type { ShardRequest } from '../data/shard.js';

/** The coordinator's state, versioned so that a worker is sent weights only when its copy is stale. */
export interface VersionedState {
  version: number;
  data: Float32Array;
}

export interface StepRequest extends Shard {
  dropoutSeed: number;
  /**
   * The seed this rank's next step will take unless the run stops or changes first: a webgpu worker draws
   * those dropout masks while the GPU runs this step (engine/replay/replay.ts). Only a hint; a wrong one
   * costs the draw.
   */
  nextDropoutSeed?: number;
}

export interface StepResult extends ShardGradients {
  computeMs: number;
}

export interface ReplicaClient {
  readonly rank: number;
  computeGradients(request: StepRequest, state: VersionedState): Promise<StepResult>;
  evaluate(shard: Shard, state: VersionedState): Promise<EvaluationSums>;
  /** One training batch's BN statistics (--precise-bn), in the layout's statistics order. */
  batchStatistics(shard: Shard, state: VersionedState): Promise<Float32Array>;
  /**
   * Set where the replica's side builds its own shards (another host with the same data set,
   * coordinator/hosts/): the trainer then hands it this stand-in, which carries only the request, instead of
   * building the shard itself.
   */
  deferShard?(request: ShardRequest): Shard;
  /**
   * The shard of this rank's next request, handed over as soon as it is built (the current request is
   * still computing): a worker process's handle writes it where the worker will read it, so the next
   * request does not copy it after the update (worker-handle.ts). Only a hint: the next request carries
   * its shard in any case.
   */
  stage?(shard: Shard): void;
  close(): Promise<void>;
}
