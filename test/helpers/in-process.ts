/**
 * In-process stand-ins for the coordinator's collaborators: a ReplicaClient around any Compute (a real
 * Replica or FakeCompute) that honours state versions like a worker process, and a ShardMaker that
 * calls makeShard directly instead of through the thread pool.
 */
import type { ShardMaker } from '../../src/coordinator/prefetch.js';
import type { ReplicaClient, StepRequest, StepResult, VersionedState } from '../../src/coordinator/replica-client.js';
import { makeShard, type Shard, type ShardRequest, type ShardSource } from '../../src/data/shard.js';
import type { EvaluationSums } from '../../src/model/gradients.js';
import type { Compute } from '../../src/model/replica.js';

export class InProcessClient implements ReplicaClient {
  private version = -1;
  statesReceived = 0;
  requests = 0;

  constructor(
    readonly rank: number,
    readonly compute: Compute,
  ) {}

  private sync(state: VersionedState): void {
    if (state.version === this.version) return;
    this.version = state.version;
    // A worker process receives a copy; so does this stand-in.
    this.compute.setState(state.data.slice());
    this.statesReceived++;
  }

  async computeGradients(r: StepRequest, state: VersionedState): Promise<StepResult> {
    this.requests++;
    this.sync(state);
    const started = performance.now();
    const g = await this.compute.computeGradients({ x: r.x, labels: r.labels }, r.dropoutSeed, r.nextDropoutSeed);
    return { ...g, computeMs: performance.now() - started };
  }

  async evaluate(shard: { x: Float32Array; labels: Uint8Array }, state: VersionedState): Promise<EvaluationSums> {
    this.sync(state);
    return this.compute.evaluate(shard);
  }

  async batchStatistics(shard: { x: Float32Array; labels: Uint8Array }, state: VersionedState): Promise<Float32Array> {
    this.sync(state);
    return this.compute.batchStatistics(shard);
  }

  async close(): Promise<void> {
    this.compute.dispose();
  }
}

export class DirectShardMaker implements ShardMaker {
  made = 0;
  constructor(
    readonly source: ShardSource,
    private readonly delayMs = 0,
  ) {}

  async makeShard(r: ShardRequest): Promise<Shard> {
    if (this.delayMs) await new Promise((res) => setTimeout(res, this.delayMs));
    const s = makeShard({ ...this.source, ...r });
    this.made++;
    return s;
  }
}
