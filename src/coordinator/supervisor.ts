/**
 * Keeps one rank alive: when its worker process exits, crashes or stops answering, a replacement is
 * started on the same GPU, handed the current weights and BN statistics with the retried request, and
 * the failed request is run again. Because every input of a step (weights, shard, dropout seed) is a
 * function of the coordinator's state and (seed, epoch, step, rank), the retried step returns what the
 * lost one would have, and the run ends exactly as if nothing had happened.
 *
 * A rank that fails `maxConsecutiveFailures` times in a row (a GPU that is gone, a backend that cannot
 * load) stops the run with the worker, its GPU and the last error, instead of respawning forever.
 */
import type { Logger } from 'pino';
import { DEFAULTS } from '../config/config.js';
import type { EvaluationSums, Shard } from '../model/gradients.js';
import { isTrainpoolError, TrainpoolError } from '../util/errors.js';
import type { ReplicaClient, StepRequest, StepResult, VersionedState } from './replica-client.js';
import { WorkerError, WorkerHandle, type WorkerHandleOptions } from './worker-handle.js';

export interface SupervisorOptions {
  worker: WorkerHandleOptions;
  logger?: Logger;
  maxConsecutiveFailures?: number;
  /**
   * Fault injection for tests: SIGKILL this rank's process right after sending its n-th step request
   * (1-based, counted over the whole run). See TRAINPOOL_CHAOS in run.ts.
   */
  killAtSteps?: ReadonlySet<number>;
  /** Fault injection for tests: replace the gradients of the n-th step with NaN, as a diverging replica would. */
  poisonAtSteps?: ReadonlySet<number>;
  /** Fault injection for tests: SIGKILL this rank's process right after sending its n-th validation chunk. */
  killAtEvaluations?: ReadonlySet<number>;
}

export class SupervisedWorker implements ReplicaClient {
  readonly rank: number;
  private current: WorkerHandle | null = null;
  private failuresInARow = 0;
  private stepsSent = 0;
  private evaluationsSent = 0;
  /** Replacements started so far (for logs and tests). */
  restarts = 0;

  constructor(private readonly o: SupervisorOptions) {
    this.rank = o.worker.config.rank;
  }

  /** Starts the first process (with the same retry rule as a replacement). */
  async start(): Promise<WorkerHandle> {
    return this.ensure();
  }

  get worker(): WorkerHandle | null {
    return this.current;
  }

  async computeGradients(request: StepRequest, state: VersionedState): Promise<StepResult> {
    const n = ++this.stepsSent;
    const result = await this.withRetry('computeGradients', this.chaosKill(this.o.killAtSteps, n, 'step', (w) => w.computeGradients(request, state)));
    if (this.o.poisonAtSteps?.has(n)) {
      this.o.logger?.warn({ worker: this.rank, step: n }, 'chaos: poisoning the gradients with NaN');
      result.grads.fill(Number.NaN);
    }
    return result;
  }

  stage(shard: Shard): void {
    this.current?.stage(shard);
  }

  evaluate(shard: Shard, state: VersionedState): Promise<EvaluationSums> {
    const n = ++this.evaluationsSent;
    return this.withRetry('evaluate', this.chaosKill(this.o.killAtEvaluations, n, 'validation', (w) => w.evaluate(shard, state)));
  }

  batchStatistics(shard: Shard, state: VersionedState): Promise<Float32Array> {
    return this.withRetry('batchStatistics', (w) => w.batchStatistics(shard, state));
  }

  /**
   * `send`, and where `at` holds `n` (TRAINPOOL_CHAOS), the worker SIGKILLed right after the first attempt is
   * sent: a crash mid-request, which the retry must make invisible.
   */
  private chaosKill<T>(at: ReadonlySet<number> | undefined, n: number, what: 'step' | 'validation', send: (w: WorkerHandle) => Promise<T>) {
    let attempt = 0;
    return (w: WorkerHandle): Promise<T> => {
      const pending = send(w);
      if (attempt++ === 0 && at?.has(n)) {
        this.o.logger?.warn({ worker: this.rank, [what === 'step' ? 'step' : 'chunk']: n, pid: w.pid }, `chaos: killing the worker mid-${what}`);
        w.kill('SIGKILL');
      }
      return pending;
    };
  }

  async close(): Promise<void> {
    await this.current?.close();
  }

  private async withRetry<T>(what: string, run: (w: WorkerHandle) => Promise<T>): Promise<T> {
    for (;;) {
      const w = await this.ensure();
      try {
        const result = await run(w);
        this.failuresInARow = 0;
        return result;
      } catch (e) {
        this.recordFailure(e, what);
      }
    }
  }

  /** A ready process for this rank, starting (and retrying) one if needed. */
  private async ensure(): Promise<WorkerHandle> {
    while (!this.current || this.current.state === 'failed' || this.current.state === 'stopped') {
      if (this.current) {
        await this.current.close();
        this.restarts++;
      }
      const w = new WorkerHandle(this.o.worker);
      this.current = w;
      try {
        await w.start();
        this.o.logger?.info({ worker: this.rank, pid: w.pid, restarts: this.restarts }, 'worker ready');
      } catch (e) {
        this.recordFailure(e, 'start');
      }
    }
    return this.current;
  }

  private recordFailure(e: unknown, what: string): void {
    // Only a worker's failure is retried; anything else (a bug here, bad input) propagates at once.
    if (!(e instanceof WorkerError) && !isTrainpoolError(e, 'WORKER_FAILED')) throw e;
    // A worker that cannot see its GPU alone will not on the next try either: the machine needs fixing.
    if (e instanceof WorkerError && e.workerCode === 'GPU_SELECTION') throw new TrainpoolError('GPU_SELECTION', e.message);
    this.failuresInARow++;
    const limit = this.o.maxConsecutiveFailures ?? DEFAULTS.maxConsecutiveFailures;
    this.o.logger?.warn({ worker: this.rank, attempt: this.failuresInARow, during: what, err: (e as Error).message }, 'worker failed');
    if (this.failuresInARow >= limit) {
      const gpu = this.o.worker.config.gpu === null ? 'CPU' : `GPU ${this.o.worker.config.gpu.index}`;
      throw new WorkerError(
        `worker ${this.rank} (${gpu}) failed ${this.failuresInARow} times in a row, giving up; last error: ${(e as Error).message}`,
      );
    }
  }
}
