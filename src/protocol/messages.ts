/**
 * The coordinator ↔ worker protocol: every message either side can send, as tagged unions. Requests are
 * imperative, replies past tense. Both sides switch on `type` with an exhaustive `never` default, so a
 * message added here and not handled there is a compile error.
 *
 * Big arrays (weights, gradients, images) are top-level typed-array fields: the frame codec carries them
 * as raw attachments (frame.ts), never as per-tensor objects or JSON.
 */
import type { BackendName } from '../engine/backend.js';
import type { ModelSpec } from '../model/minigooglenet.js';

/** Bumped whenever a message changes shape; the handshake refuses a mismatch. */
export const PROTOCOL_VERSION = 3;

/** What a worker computes with: the real model, or a stand-in for tests and transport benchmarks. */
export type ComputeSpec =
  | { kind: 'model' }
  /** Known gradients after `delayMs` (src/worker/fake.ts); no model is built, no backend loaded. */
  | {
      kind: 'fake';
      delayMs: number;
      trainableSize: number;
      statsSize: number;
      /** This process never answers its n-th step request (1-based): a hung worker, for tests. */
      hangAtRequest?: number;
      /** This process takes this long to answer init (a backend slow to load), for start-up timeout tests. */
      startDelayMs?: number;
      /** This process fails init with this error code (a GPU it cannot select, say), for supervisor tests. */
      failInitCode?: string;
    };

/** The GPU a worker owns. */
export interface WorkerGpu {
  /** Its index among the machine's GPUs (nvidia-smi's, PCI order). */
  index: number;
  name: string;
  pciBusId?: string;
  /**
   * The machine has other GPUs, which the worker must not see: it was started with Mesa's device-select
   * tag for `pciBusId` and checks that Dawn shows it this GPU alone (engine/gpu-selection.ts).
   */
  exclusive: boolean;
}

export interface WorkerConfig {
  rank: number;
  model: ModelSpec;
  backend: BackendName;
  /** The GPU this worker owns, or null for a CPU worker. */
  gpu: WorkerGpu | null;
  compute: ComputeSpec;
  /** Expected by the coordinator; the worker checks its own model against it before saying ready. */
  layoutHash: string;
}

// ── coordinator → worker ──────────────────────────────────────────────────────────────────────────
export interface InitMessage {
  type: 'init';
  protocolVersion: number;
  config: WorkerConfig;
}

/**
 * One training step on one shard. `state` (weights followed by BN statistics) is attached only when the
 * worker's copy is out of date, which in synchronous SGD is every step.
 */
export interface ComputeGradientsMessage {
  type: 'computeGradients';
  id: number;
  /** count × H × W × D float32, mean-subtracted and augmented by the coordinator. */
  x: Float32Array;
  labels: Uint8Array;
  dropoutSeed: number;
  /** The rank's next step's seed, as far as the coordinator knows it (StepRequest). */
  nextDropoutSeed?: number;
  state?: Float32Array;
}

export interface EvaluateMessage {
  type: 'evaluate';
  id: number;
  x: Float32Array;
  labels: Uint8Array;
  state?: Float32Array;
}

/** The BN batch statistics of one training batch (--precise-bn): a forward pass in training mode, no gradient. */
export interface BatchStatisticsMessage {
  type: 'batchStatistics';
  id: number;
  /** count × H × W × D float32, mean-subtracted and augmented like a step's shard. */
  x: Float32Array;
  labels: Uint8Array;
  state?: Float32Array;
}

export interface ShutdownMessage {
  type: 'shutdown';
}

export type ToWorker = InitMessage | ComputeGradientsMessage | EvaluateMessage | BatchStatisticsMessage | ShutdownMessage;

// ── worker → coordinator ──────────────────────────────────────────────────────────────────────────
export interface ReadyMessage {
  type: 'ready';
  protocolVersion: number;
  rank: number;
  pid: number;
  backend: BackendName;
  device: string;
  layoutHash: string;
}

export interface GradientsComputedMessage {
  type: 'gradientsComputed';
  id: number;
  grads: Float32Array;
  stats: Float32Array;
  loss: number;
  acc: number;
  /** Time the worker spent on the step itself, for the coordinator's overhead accounting. */
  computeMs: number;
}

export interface EvaluatedMessage {
  type: 'evaluated';
  id: number;
  lossSum: number;
  correct: number;
  count: number;
}

export interface BatchStatisticsComputedMessage {
  type: 'batchStatisticsComputed';
  id: number;
  /** Per BN layer, the batch's mean and biased variance, in the layout's statistics order. */
  stats: Float32Array;
}

export interface FailedMessage {
  type: 'failed';
  /** The request that failed; absent when the failure was not tied to one (e.g. during init). */
  id?: number;
  message: string;
  code?: string;
  stack?: string;
}

export type FromWorker = ReadyMessage | GradientsComputedMessage | EvaluatedMessage | BatchStatisticsComputedMessage | FailedMessage;

const TO_WORKER = new Set<ToWorker['type']>(['init', 'computeGradients', 'evaluate', 'batchStatistics', 'shutdown']);
const FROM_WORKER = new Set<FromWorker['type']>(['ready', 'gradientsComputed', 'evaluated', 'batchStatisticsComputed', 'failed']);

/** Narrows a decoded frame; anything else is a protocol error naming what arrived. */
export function asToWorker(m: Record<string, unknown>): ToWorker {
  if (!TO_WORKER.has(m.type as ToWorker['type'])) throw new Error(`unexpected message to a worker: ${JSON.stringify(m.type)}`);
  return m as unknown as ToWorker;
}

export function asFromWorker(m: Record<string, unknown>): FromWorker {
  if (!FROM_WORKER.has(m.type as FromWorker['type'])) throw new Error(`unexpected message from a worker: ${JSON.stringify(m.type)}`);
  return m as unknown as FromWorker;
}
