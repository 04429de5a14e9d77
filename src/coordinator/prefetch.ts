/**
 * Keeps the augmentation pool `depth` steps ahead of the workers, so a GPU never waits for a shard
 * while the pool keeps up. Records, per step, whether the shards were ready before they were asked for:
 * the evidence that augmentation is off the critical path.
 */
import type { Shard, ShardRequest } from '../data/shard.js';
import type { TrainingPlan } from './plan.js';

/** Anything that builds shards: the piscina AugmentPool, or makeShard in-process. */
export interface ShardMaker {
  makeShard(request: ShardRequest): Promise<Shard>;
  /** Shards it made that nobody reads any more: their memory may be written again (AugmentPool.recycle). */
  recycle?(shards: Shard[]): void;
}

interface Pending {
  shards: Promise<Shard[]>;
  ready: boolean;
}

export interface TakenStep {
  shards: Shard[];
  /** True when every shard of the step was built before the trainer asked for it. */
  readyBeforeAsked: boolean;
  waitedMs: number;
}

export class ShardPrefetcher {
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly plan: TrainingPlan,
    /** Who builds rank r's shards (trainer.ts makerFor: the pool, or a host that builds its own). */
    private readonly maker: (rank: number) => ShardMaker,
    private readonly depth: number,
    private readonly lastEpoch: number,
    /** Whether training shards are augmented (--no-augment: only mean-subtracted). */
    private readonly augment: boolean,
  ) {}

  /** The shards of (epoch, step) for every rank (asked for now if they were not yet). */
  async take(epoch: number, step: number): Promise<TakenStep> {
    const g = epoch * this.plan.steps + step;
    this.request(g);
    const p = this.pending.get(g)!;
    this.pending.delete(g);
    this.taken = Math.max(this.taken, g);
    const readyBeforeAsked = p.ready;
    const started = performance.now();
    const shards = await p.shards;
    return { shards, readyBeforeAsked, waitedMs: performance.now() - started };
  }

  /**
   * Asks for the `depth` steps after (epoch, step). The trainer calls it once that step's requests are out,
   * so that the pool's threads build them beside the workers' compute rather than while the workers wake.
   */
  ahead(epoch: number, step: number): void {
    if (this.cleared) return;
    const g = epoch * this.plan.steps + step;
    for (let k = g + 1; k <= g + this.depth; k++) this.request(k);
  }

  /** The shards of (epoch, step) if they were asked for and not taken yet: the trainer stages them (ReplicaClient.stage). */
  peek(epoch: number, step: number): Promise<Shard[]> | undefined {
    return this.pending.get(epoch * this.plan.steps + step)?.shards;
  }

  private cleared = false;
  /**
   * The last step taken: `ahead` runs a turn of the event loop after a step's requests, and with workers that
   * answer within that turn (in-process clients) the trainer may have taken later steps by then. Those must
   * not be built again.
   */
  private taken = -1;

  /** Lets go of requests not taken (the run stopped); their results are discarded when they arrive. */
  clear(): void {
    this.cleared = true;
    for (const p of this.pending.values()) p.shards.catch(() => {});
    this.pending.clear();
  }

  private request(g: number): void {
    const steps = this.plan.steps;
    const epoch = Math.floor(g / steps);
    if (epoch > this.lastEpoch || g <= this.taken || this.pending.has(g)) return;
    const step = g % steps;
    const ranks = Array.from({ length: this.plan.o.workers }, (_, r) => this.plan.shard(epoch, step, r));
    const entry: Pending = {
      shards: Promise.all(ranks.map((s, r) => this.maker(r).makeShard({ indices: s.indices, seed: s.augmentSeed, augment: this.augment }))),
      ready: false,
    };
    entry.shards.then(
      () => (entry.ready = true),
      () => {},
    );
    this.pending.set(g, entry);
  }
}
