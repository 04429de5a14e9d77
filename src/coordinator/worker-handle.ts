/**
 * The coordinator's handle on one worker process (the child itself is src/worker/): it spawns the
 * process with its GPU pinned, talks to it over a socket pair on fd 3, and tracks its state.
 *
 * Processes rather than threads because CUDA reads CUDA_VISIBLE_DEVICES once per process, and native
 * add-ons (Dawn, libtensorflow) loaded in worker threads share one process environment.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { EvaluationSums, Shard } from '../model/gradients.js';
import { BulkFile, bulkDirectory, RegionSink, RegionSource, SharedState } from '../protocol/bulk.js';
import { Channel } from '../protocol/channel.js';
import {
  asFromWorker,
  PROTOCOL_VERSION,
  type FromWorker,
  type ReadyMessage,
  type ToWorker,
  type WorkerConfig,
} from '../protocol/messages.js';
import { DEFAULTS } from '../config/config.js';
import { selectionEnv } from '../engine/gpu-selection.js';
import { isTrainpoolError, TrainpoolError } from '../util/errors.js';
import type { ReplicaClient, StepRequest, StepResult, VersionedState } from './replica-client.js';

export type WorkerState = 'starting' | 'ready' | 'busy' | 'stopping' | 'stopped' | 'failed';

export interface WorkerHandleOptions {
  config: WorkerConfig;
  /** Milliseconds for start-up (process start, backend, model build, handshake). */
  startTimeoutMs?: number;
  /** Milliseconds a request may take before the worker counts as hung; 0 disables. */
  requestTimeoutMs?: number;
  /**
   * The same for a process's first request, which pays for shader compilation (webgpu) and lazy kernel
   * setup; defaults to requestTimeoutMs.
   */
  firstRequestTimeoutMs?: number;
  /** Each line the worker writes to stderr, for the coordinator's log. */
  onStderr?: (rank: number, line: string) => void;
  /** Extra environment for the child (tests). */
  env?: NodeJS.ProcessEnv;
  /**
   * The weights region every worker of the run reads (see protocol/bulk.ts); created per worker when
   * absent, which costs one extra copy of the weights per worker and step.
   */
  shared?: SharedState;
  /**
   * The region the worker writes its replies to, owned by the caller and kept for the rank across worker
   * replacements (coordinator/exchange.ts maps it over the rank's gradient slot); created per worker when
   * absent.
   */
  reply?: BulkFile;
  /**
   * The largest attachments of one request in bytes (a shard's images): the request region is reserved
   * and mapped for them where the shared-memory addon is built (protocol/shm.ts), so a shard is a memcpy
   * here and a view in the worker. Absent: read/write.
   */
  requestBytes?: number;
  /**
   * Where large attachments of the worker's replies are read to, by field (the trainer's exchange arena,
   * optim/kernels.ts); the channel's own buffers for the fields it answers undefined for.
   */
  receive?: (field: string, bytes: number) => Uint8Array<ArrayBuffer> | undefined;
}

/** File descriptors of the worker's bulk regions, as it inherits them: request, reply, shared state. */
export const WORKER_BULK_FDS = [4, 5, 6] as const;

interface PendingRequest {
  id: number;
  resolve: (m: FromWorker) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

const WORKER_ENTRY = fileURLToPath(new URL('../worker/main.ts', import.meta.url));
// Workers run the TypeScript sources through tsx's loader, resolved from this package, not the cwd.
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const STDERR_KEEP = 20;

export class WorkerError extends TrainpoolError {
  /** `workerCode`: the code of the worker's own error, when it reported one. */
  constructor(
    message: string,
    readonly workerCode?: string,
  ) {
    super('WORKER_FAILED', message);
  }
}

export class WorkerHandle implements ReplicaClient {
  readonly rank: number;
  private child: ChildProcess | null = null;
  private channel: Channel | null = null;
  private _state: WorkerState = 'starting';
  private sentVersion = -1;
  private nextId = 1;
  private pending: PendingRequest | null = null;
  private readonly stderrTail: string[] = [];
  private exited: Promise<void> = Promise.resolve();
  private readonly shared: SharedState;
  private readonly regions: { request: BulkFile; reply: BulkFile };
  /** Where requests' large attachments go: the request region, or the shared weights. */
  private readonly requestSink: RegionSink;
  info: ReadyMessage | null = null;
  /** How many times the weights were attached to a request (for tests and the benchmark). */
  statesSent = 0;

  constructor(private readonly o: WorkerHandleOptions) {
    this.rank = o.config.rank;
    const dir = bulkDirectory(64 << 20);
    // A request's region holds up to requestBytes (a shard's images), allocated now: mapped where the addon
    // is built, else written with zeros (bulk.ts createReserved), so a filling /dev/shm cannot fail a shard.
    const request = o.requestBytes ? BulkFile.createReserved(dir, o.requestBytes) : BulkFile.create(dir);
    this.regions = { request, reply: o.reply ?? BulkFile.create(dir) };
    if (o.requestBytes) request.reserveAndMap(o.requestBytes);
    this.shared = o.shared ?? new SharedState(BulkFile.create(dir));
    this.requestSink = new RegionSink(request, this.shared);
  }

  get state(): WorkerState {
    return this._state;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the process and completes the handshake. */
  async start(): Promise<ReadyMessage> {
    const { config } = this.o;
    let env: NodeJS.ProcessEnv = { ...process.env, ...this.o.env };
    if (config.gpu !== null) {
      // Pin the GPU in the process environment: libtensorflow (CUDA) reads it once, at load, and numbers
      // GPUs fastest first unless told to use nvidia-smi's (PCI) order.
      env.CUDA_VISIBLE_DEVICES = String(config.gpu.index);
      env.CUDA_DEVICE_ORDER = 'PCI_BUS_ID';
      // Vulkan (webgpu) ignores CUDA's variables: Mesa's device-select layer hides the other GPUs.
      if (config.gpu.exclusive && config.gpu.pciBusId) env = selectionEnv(env, config.gpu.pciBusId);
    }
    env.TRAINPOOL_BULK_FDS = WORKER_BULK_FDS.join(',');
    const child = spawn(process.execPath, ['--import', TSX_LOADER, WORKER_ENTRY], {
      // fd 3: the message pipe; 4, 5, 6: the bulk regions (request, reply, shared weights).
      stdio: ['ignore', 'inherit', 'pipe', 'pipe', this.regions.request.fd, this.regions.reply.fd, this.shared.file.fd],
      env,
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('exit', (code, signal) => this.onExit(code, signal));
    child.once('error', (e) => this.fail(new WorkerError(`${this.describe()} could not start: ${e.message}`)));
    let partial = '';
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.onStderrLine(line);
    });
    this.channel = new Channel(
      child.stdio[3] as net.Socket,
      { message: (m) => this.onMessage(m), close: () => {} },
      { out: this.requestSink, in: new RegionSource({ 0: this.regions.reply }, this.o.receive) },
    );
    const ready = await this.request({ type: 'init', protocolVersion: PROTOCOL_VERSION, config }, this.o.startTimeoutMs ?? DEFAULTS.workerStartTimeoutS * 1000);
    if (ready.type !== 'ready') throw this.unexpected(ready, 'ready');
    if (ready.protocolVersion !== PROTOCOL_VERSION) {
      throw this.fail(new WorkerError(`${this.describe()} speaks protocol ${ready.protocolVersion}; the coordinator speaks ${PROTOCOL_VERSION}`));
    }
    if (ready.layoutHash !== config.layoutHash) {
      throw this.fail(
        new WorkerError(`${this.describe()} built a model whose weight layout ${ready.layoutHash} differs from the coordinator's ${config.layoutHash}`),
      );
    }
    this.info = ready;
    this._state = 'ready';
    return ready;
  }

  async computeGradients(r: StepRequest, state: VersionedState): Promise<StepResult> {
    const m = await this.request({
      type: 'computeGradients',
      id: this.nextId++,
      x: r.x,
      labels: r.labels,
      dropoutSeed: r.dropoutSeed,
      nextDropoutSeed: r.nextDropoutSeed,
      state: this.stateToSend(state),
    });
    if (m.type !== 'gradientsComputed') throw this.unexpected(m, 'gradientsComputed');
    return { grads: m.grads, stats: m.stats, loss: m.loss, acc: m.acc, computeMs: m.computeMs };
  }

  /**
   * Writes the images of this worker's next request into its request region now, while it computes the
   * current one (RegionSink.stage): that request then carries them without a copy. A hint: a request
   * with other images writes them as usual.
   */
  stage(shard: Shard): void {
    if (this._state === 'ready' || this._state === 'busy') this.requestSink.stage(shard.x);
  }

  /** Requests whose images were written ahead (stage). */
  get stagedRequests(): number {
    return this.requestSink.stagedHits;
  }

  async evaluate(shard: Shard, state: VersionedState): Promise<EvaluationSums> {
    const m = await this.request({ type: 'evaluate', id: this.nextId++, x: shard.x, labels: shard.labels, state: this.stateToSend(state) });
    if (m.type !== 'evaluated') throw this.unexpected(m, 'evaluated');
    return { lossSum: m.lossSum, correct: m.correct, count: m.count };
  }

  async batchStatistics(shard: Shard, state: VersionedState): Promise<Float32Array> {
    const m = await this.request({ type: 'batchStatistics', id: this.nextId++, x: shard.x, labels: shard.labels, state: this.stateToSend(state) });
    if (m.type !== 'batchStatisticsComputed') throw this.unexpected(m, 'batchStatisticsComputed');
    return m.stats;
  }

  /** Asks the worker to exit; kills it if it has not after `graceMs`. Never throws. */
  async close(graceMs = 5_000): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) {
      this._state = this._state === 'failed' ? 'failed' : 'stopped';
      this.releaseRegions();
      return;
    }
    this._state = 'stopping';
    this.channel?.send({ type: 'shutdown' } satisfies ToWorker).catch(() => {});
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
    this.releaseRegions();
  }

  private released = false;

  private releaseRegions(): void {
    if (this.released) return;
    this.released = true;
    for (const f of [this.regions.request, ...(this.o.reply ? [] : [this.regions.reply]), ...(this.o.shared ? [] : [this.shared.file])]) {
      f.close();
    }
  }

  /** Kills the process at once (tests inject failures with this). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child?.kill(signal);
  }

  private stateToSend(state: VersionedState): Float32Array | undefined {
    if (state.version === this.sentVersion) return undefined;
    this.sentVersion = state.version;
    this.statesSent++;
    this.shared.publish(state.version, state.data);
    return state.data;
  }

  private answered = 0;

  private defaultTimeout(): number {
    const steady = this.o.requestTimeoutMs ?? 0;
    return this.answered === 0 ? (this.o.firstRequestTimeoutMs ?? steady) : steady;
  }

  private request(message: ToWorker, timeoutMs = this.defaultTimeout()): Promise<FromWorker> {
    if (this._state === 'failed' || this._state === 'stopped' || this._state === 'stopping') {
      return Promise.reject(new WorkerError(`${this.describe()} cannot take a request in state ${this._state}`));
    }
    if (this.pending) {
      return Promise.reject(new Error(`${this.describe()} got a request while another is pending: this is a bug`));
    }
    const id = 'id' in message ? message.id : 0;
    if (this._state === 'ready') this._state = 'busy';
    return new Promise<FromWorker>((resolve, reject) => {
      const p: PendingRequest = { id, resolve, reject };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          const err = new WorkerError(
            message.type === 'init'
              ? `${this.describe()} did not start within ${timeoutMs / 1000} s (process, backend, model and handshake)`
              : `${this.describe()} did not answer ${message.type} within ${timeoutMs} ms`,
          );
          this.fail(err);
          this.child?.kill('SIGKILL');
        }, timeoutMs);
      }
      this.pending = p;
      this.channel!.send(message).catch((e: Error) =>
        // A region the coordinator cannot write is not the worker's fault: replacing it cannot help.
        this.fail(isTrainpoolError(e, 'OUTPUT') ? e : new WorkerError(`${this.describe()}: sending ${message.type} failed: ${e.message}`)),
      );
    });
  }

  private onMessage(raw: Record<string, unknown>): void {
    let m: FromWorker;
    try {
      m = asFromWorker(raw);
    } catch (e) {
      this.fail(new WorkerError(`${this.describe()}: ${(e as Error).message}`));
      return;
    }
    switch (m.type) {
      case 'failed': {
        const detail = m.code ? ` [${m.code}]` : '';
        this.fail(new WorkerError(`${this.describe()} failed: ${m.message}${detail}`, m.code));
        return;
      }
      case 'ready':
      case 'gradientsComputed':
      case 'evaluated':
      case 'batchStatisticsComputed':
        this.answer(m, m.type === 'ready' ? 0 : m.id);
        return;
      default: {
        const never: never = m;
        this.fail(new Error(`${this.describe()} sent ${JSON.stringify((never as FromWorker).type)}, which the coordinator does not handle: this is a bug`));
      }
    }
  }

  /** Settles the pending request with its reply `m` (request `id`; the handshake's is 0). */
  private answer(m: FromWorker, id: number): void {
    const p = this.pending;
    if (!p || p.id !== id) {
      this.fail(new WorkerError(`${this.describe()} answered request ${id} while ${p ? `waiting for ${p.id}` : 'nothing was asked'}`));
      return;
    }
    this.pending = null;
    if (p.timer) clearTimeout(p.timer);
    if (this._state === 'busy') this._state = 'ready';
    if (m.type !== 'ready') this.answered++;
    p.resolve(m);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    const expected = this._state === 'stopping';
    if (expected) {
      this._state = 'stopped';
      return;
    }
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    this.fail(new WorkerError(`${this.describe()} ${how} while ${this._state}${this.stderrSuffix()}`));
  }

  private onStderrLine(line: string): void {
    this.stderrTail.push(line);
    if (this.stderrTail.length > STDERR_KEEP) this.stderrTail.shift();
    this.o.onStderr?.(this.rank, line);
  }

  /** Moves to `failed`, rejects the pending request with `error`, returns it for throwing. */
  private fail(error: Error): Error {
    if (this._state !== 'failed') this._state = 'failed';
    const p = this.pending;
    this.pending = null;
    if (p) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(error);
    }
    return error;
  }

  private unexpected(m: FromWorker, wanted: string): Error {
    return this.fail(new WorkerError(`${this.describe()} answered ${m.type} where ${wanted} was expected`));
  }

  private stderrSuffix(): string {
    const last = this.stderrTail.filter((l) => l.trim()).slice(-1)[0];
    return last ? `; last stderr: ${last.trim()}` : '';
  }

  describe(): string {
    const gpu = this.o.config.gpu === null ? 'CPU' : `GPU ${this.o.config.gpu.index}`;
    return `worker ${this.rank} (${gpu}${this.child?.pid ? `, pid ${this.child.pid}` : ''})`;
  }
}
