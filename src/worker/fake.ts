/**
 * A stand-in for a model replica that returns known gradients after a fixed delay, so coordinator tests
 * run in milliseconds and the transport benchmark measures the protocol rather than tfjs.
 *
 * The values depend on the data sent and the state last set, so tests can tell whether each worker got
 * its own shard and the current weights:
 *   grads[i] = (mean(x) + state[0]) · (i mod 4096 + 1) · 1e-6
 *   stats[j] = mean(x) + j · 1e-3  (a step's, and the batch statistics of --precise-bn)
 *   loss = |mean(x)|,  acc = fraction of even labels
 */
import type { EvaluationSums, Shard, ShardGradients } from '../model/gradients.js';
import type { Compute } from '../model/replica.js';

export interface FakeComputeOptions {
  delayMs: number;
  trainableSize: number;
  statsSize: number;
  /** Never answer the n-th computeGradients call (1-based): a hung worker, for supervisor tests. */
  hangAtRequest?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The gradients repeat with this period: one period is computed and the rest copied (copyWithin, a memcpy),
 * so filling MiniGoogLeNet's 1.65 M values costs about what a GPU worker's read-back does (~0.5 ms here)
 * rather than a JavaScript loop's 2.5–6 ms, which the transport benchmark would otherwise count as transport.
 */
export const FAKE_GRADIENT_PERIOD = 4096;

function meanOf(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  return x.length ? s / x.length : 0;
}

export class FakeCompute implements Compute {
  private first = 0;
  // Reused between steps, like a worker's real output would be if tfjs allowed it, so a transport
  // benchmark measures the transport rather than allocation.
  private readonly grads: Float32Array;
  private readonly stats: Float32Array;

  /**
   * `gradientsInto`: where to write the gradients, when the worker's reply region is mapped (the view its
   * reply's first attachment occupies): the reply then carries them without a copy, as a GPU worker's
   * read-back into that region would.
   */
  constructor(
    private readonly o: FakeComputeOptions,
    gradientsInto?: Float32Array,
  ) {
    this.grads = gradientsInto?.length === o.trainableSize ? gradientsInto : new Float32Array(o.trainableSize);
    this.stats = new Float32Array(o.statsSize);
  }

  setState(state: Float32Array): void {
    if (state.length !== this.o.trainableSize + this.o.statsSize) {
      throw new Error(`weights must have ${this.o.trainableSize + this.o.statsSize} values for this model. Received: ${state.length}`);
    }
    this.first = state[0] ?? 0;
  }

  private requests = 0;

  async computeGradients(shard: Shard): Promise<ShardGradients> {
    if (++this.requests === this.o.hangAtRequest) await new Promise(() => {});
    // No timer for zero compute: Node's shortest is ~1 ms, which the transport benchmark would count.
    if (this.o.delayMs > 0) await sleep(this.o.delayMs);
    const m = meanOf(shard.x);
    const scale = (m + this.first) * 1e-6;
    const { grads, stats } = this;
    const head = Math.min(FAKE_GRADIENT_PERIOD, grads.length);
    for (let i = 0; i < head; i++) grads[i] = scale * (i + 1);
    // Doubling copies: log2(n / period) memcpys of the values already written.
    for (let done = head; done < grads.length; ) {
      const n = Math.min(done, grads.length - done);
      grads.copyWithin(done, 0, n);
      done += n;
    }
    for (let j = 0; j < stats.length; j++) stats[j] = m + j * 1e-3;
    let even = 0;
    for (const l of shard.labels) if (l % 2 === 0) even++;
    return { grads, stats, loss: Math.abs(m), acc: shard.labels.length ? even / shard.labels.length : 0 };
  }

  async evaluate(shard: Shard): Promise<EvaluationSums> {
    await sleep(this.o.delayMs);
    let even = 0;
    for (const l of shard.labels) if (l % 2 === 0) even++;
    return { lossSum: Math.abs(meanOf(shard.x)) * shard.labels.length, correct: even, count: shard.labels.length };
  }

  async batchStatistics(shard: Shard): Promise<Float32Array> {
    await sleep(this.o.delayMs);
    const m = meanOf(shard.x);
    return Float32Array.from({ length: this.o.statsSize }, (_, j) => m + j * 1e-3);
  }

  dispose(): void {}
}
