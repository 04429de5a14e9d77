/**
 * The coordinator ↔ host protocol: what host 0's coordinator and another host's bin/train (its agent,
 * coordinator/hosts/agent.ts) say over their TCP connection once the handshake (handshake.ts) has
 * authenticated it. Frames as between coordinator and worker (frame.ts), attachments inline: no region is
 * shared between machines.
 *
 * The weights cross once per host and version (`state`); each rank's request names the version it is for,
 * and the agent hands it to that rank's worker like a local coordinator would. Replies carry each rank's
 * gradients separately, so the coordinator averages exactly what one host with all the workers would.
 *
 * A host with the same data set as host 0 (the same fingerprint in hostReady) builds its ranks' shards
 * itself: host 0 sends it the training mean once (`dataset`), and each request carries the shard's image
 * indices and augmentation seed (a few hundred bytes) instead of its images. A host without one gets the
 * images.
 */
import type { BackendName } from '../engine/backend.js';

/** Bumped whenever a message here changes shape; hostReady with another is refused. */
export const HOSTS_PROTOCOL_VERSION = 1;

export type RankRequestKind = 'computeGradients' | 'evaluate' | 'batchStatistics';

// ── coordinator → host ────────────────────────────────────────────────────────────────────────────
export interface StateMessage {
  type: 'state';
  version: number;
  data: Float32Array;
}

export interface RankRequestMessage {
  type: 'rankRequest';
  id: number;
  rank: number;
  kind: RankRequestKind;
  /** The state version the request is for: sent before it on the same connection. */
  version: number;
  /** The shard's images and labels; or, to a host that builds its shards, what to build it from. */
  x?: Float32Array;
  labels?: Uint8Array;
  indices?: Uint32Array;
  augmentSeed?: number;
  augment?: boolean;
  dropoutSeed: number;
  /** StepRequest's hint: the rank's next step's seed. */
  nextDropoutSeed?: number;
}

/** To a host that builds its own shards, before any request: the per-pixel mean every shard subtracts. */
export interface DatasetMessage {
  type: 'dataset';
  mean: Float32Array;
}

export interface HostShutdownMessage {
  type: 'hostShutdown';
  /** Why, for the host's last line: the run finished, or failed. */
  reason: string;
}

/** Either way, every second (coordinator/hosts/heartbeat.ts): a silent link is a lost one. */
export interface HeartbeatMessage {
  type: 'heartbeat';
}

export type ToHost = StateMessage | DatasetMessage | RankRequestMessage | HostShutdownMessage | HeartbeatMessage;

// ── host → coordinator ────────────────────────────────────────────────────────────────────────────
export interface HostReadyMessage {
  type: 'hostReady';
  protocolVersion: number;
  nodeRank: number;
  /** Its workers' global ranks, in order, and what each runs on. */
  workers: { rank: number; backend: BackendName; device: string }[];
  /** The model's weight layout, as its workers built it: the coordinator's must be the same. */
  layoutHash: string;
  /** data/pool-source.ts datasetFingerprint of its data set, where it has one to build shards from. */
  dataFingerprint?: string;
  /** --host-reduce: it answers a step's computeGradients requests with one ranksReduced. */
  reduce?: boolean;
}

/**
 * --host-reduce: a step's computeGradients requests to this host, answered at once with the mean of its
 * workers' gradients and BN statistics (averaged in rank order), and each rank's loss, accuracy and time.
 */
export interface RanksReducedMessage {
  type: 'ranksReduced';
  ids: number[];
  ranks: number[];
  loss: number[];
  acc: number[];
  computeMs: number[];
  grads: Float32Array;
  stats: Float32Array;
}

export interface RankRepliedMessage {
  type: 'rankReplied';
  id: number;
  rank: number;
  grads?: Float32Array;
  stats?: Float32Array;
  loss?: number;
  acc?: number;
  computeMs?: number;
  lossSum?: number;
  correct?: number;
  count?: number;
}

export interface RankFailedMessage {
  type: 'rankFailed';
  id: number;
  rank: number;
  message: string;
}

export type FromHost = HostReadyMessage | RankRepliedMessage | RankFailedMessage | RanksReducedMessage | HeartbeatMessage;

const isObject = (m: unknown): m is Record<string, unknown> => typeof m === 'object' && m !== null;
const num = (m: Record<string, unknown>, k: string) => typeof m[k] === 'number';

/** `raw` as a message to a host, or an error naming what is wrong with it. */
export function asToHost(raw: unknown): ToHost {
  if (!isObject(raw)) throw new Error('a host message must be an object');
  switch (raw.type) {
    case 'state':
      if (num(raw, 'version') && raw.data instanceof Float32Array) return raw as unknown as StateMessage;
      break;
    case 'rankRequest': {
      const images = raw.x instanceof Float32Array && raw.labels instanceof Uint8Array;
      const request = raw.indices instanceof Uint32Array && num(raw, 'augmentSeed') && typeof raw.augment === 'boolean';
      if (num(raw, 'id') && num(raw, 'rank') && num(raw, 'version') && num(raw, 'dropoutSeed') && (raw.nextDropoutSeed === undefined || num(raw, 'nextDropoutSeed')) && images !== request && ['computeGradients', 'evaluate', 'batchStatistics'].includes(raw.kind as string)) {
        return raw as unknown as RankRequestMessage;
      }
      break;
    }
    case 'dataset':
      if (raw.mean instanceof Float32Array) return raw as unknown as DatasetMessage;
      break;
    case 'hostShutdown':
      if (typeof raw.reason === 'string') return raw as unknown as HostShutdownMessage;
      break;
    case 'heartbeat':
      return { type: 'heartbeat' };
  }
  throw new Error(`not a message to a host: ${JSON.stringify(raw.type)}`);
}

/** `raw` as a message from a host, or an error naming what is wrong with it. */
export function asFromHost(raw: unknown): FromHost {
  if (!isObject(raw)) throw new Error('a host message must be an object');
  switch (raw.type) {
    case 'hostReady':
      if (num(raw, 'protocolVersion') && num(raw, 'nodeRank') && Array.isArray(raw.workers) && typeof raw.layoutHash === 'string') return raw as unknown as HostReadyMessage;
      break;
    case 'rankReplied':
      if (num(raw, 'id') && num(raw, 'rank')) return raw as unknown as RankRepliedMessage;
      break;
    case 'rankFailed':
      if (num(raw, 'id') && num(raw, 'rank') && typeof raw.message === 'string') return raw as unknown as RankFailedMessage;
      break;
    case 'ranksReduced': {
      const lists = ['ids', 'ranks', 'loss', 'acc', 'computeMs'].map((k) => raw[k]);
      const n = Array.isArray(raw.ids) ? raw.ids.length : -1;
      if (n > 0 && lists.every((l) => Array.isArray(l) && l.length === n && l.every((v) => typeof v === 'number')) && raw.grads instanceof Float32Array && raw.stats instanceof Float32Array) {
        return raw as unknown as RanksReducedMessage;
      }
      break;
    }
    case 'heartbeat':
      return { type: 'heartbeat' };
  }
  throw new Error(`not a message from a host: ${JSON.stringify(raw.type)}`);
}
