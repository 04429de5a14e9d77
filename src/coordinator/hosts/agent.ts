/**
 * bin/train on a host other than host 0: no coordinator, no outputs. It starts this host's
 * workers as host 0 starts its own (one process per GPU, supervised: a crashed worker is replaced and its
 * request run again), connects to host 0's coordinator, proves it holds the run's secret
 * (protocol/handshake.ts), and then runs what the coordinator asks of its ranks until it is told the run is
 * over or the connection to host 0 is gone: either way it stops its workers and returns. With a data set
 * (the same as host 0's: their fingerprints must match) it builds its ranks' shards itself, in an
 * augmentation pool of its own, from the training mean host 0 sends and each request's indices and seed.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { Cluster } from '../../config/cluster.js';
import { DEFAULTS, type ResolvedConfig } from '../../config/config.js';
import type { ModelSpec } from '../../model/minigooglenet.js';
import { Channel } from '../../protocol/channel.js';
import { connectPeer } from '../../protocol/handshake.js';
import { asToHost, HOSTS_PROTOCOL_VERSION, type RankRequestMessage, type ToHost } from '../../protocol/hosts.js';
import type { ComputeSpec } from '../../protocol/messages.js';
import { TrainpoolError } from '../../util/errors.js';
import type { StepResult, VersionedState } from '../replica-client.js';
import { createExchange } from '../exchange.js';
import { average } from '../optim/average.js';
import { AugmentPool } from '../../data/augment-pool.js';
import type { Dataset } from '../../data/dataset.js';
import { datasetFingerprint, poolSource } from '../../data/pool-source.js';
import type { Shard } from '../../model/gradients.js';
import { SupervisedWorker } from '../supervisor.js';
import { workerGpu } from '../worker-gpu.js';
import { heartbeat } from './heartbeat.js';
import { tlsReason } from './remote.js';

export interface AgentOptions {
  config: ResolvedConfig;
  cluster: Cluster;
  secret: Buffer;
  spec: ModelSpec;
  layoutHash: string;
  /** The model's state and its trainable prefix, in values: the sizes of this host's regions. */
  sizes: { totalSize: number; trainableSize: number };
  logger: Logger;
  out(line: string): void;
  /** How long to keep trying to reach host 0 (it may start after this host). */
  connectTimeoutMs?: number;
  /** What the workers compute: the model (a run), or fake gradients (bench/runtime.ts's exchange between hosts). */
  compute?: ComputeSpec;
  /** TLS: the certificate authority host 0's certificate must chain to (TRAINPOOL_TLS_CA, or its certificate itself). */
  tls?: { ca: Buffer };
  /** The data set to build this host's shards from; without one, host 0 sends the shards. */
  data?: Dataset;
  /** Threads of this host's augmentation pool. */
  augmentThreads?: number;
  /** --host-reduce: answer a step with the mean of this host's workers' gradients, one message for all of them. */
  reduce?: boolean;
}

/**
 * Serves this host's ranks until host 0 ends the run; resolves with the reason it gave. Rejects when host 0 is
 * lost without ending it (its connection closed or silent): a failure, so that a launcher that restarts failed
 * hosts starts this one again, and the new one rejoins while host 0 waits for it (--rejoin-timeout).
 */
export async function runAgent(o: AgentOptions): Promise<string> {
  const { config, cluster } = o;
  const master = cluster.master!;
  const lost = (what: string) => new TrainpoolError('WORKER_FAILED', `host 0 at ${master.host}:${master.port} ${what} without ending the run: this host's ranks stopped`);
  const G = config.workers;
  const first = cluster.nodeRank * G;
  const socket = await dial(master.host, master.port, o.connectTimeoutMs ?? DEFAULTS.workerStartTimeoutS * 1000, o.tls);
  await connectPeer(socket, { secret: o.secret, nodeRank: cluster.nodeRank }).catch((e: Error) => {
    // Host 0 hangs up on a proof it cannot check: the secrets differ (or it is not a trainpool run).
    throw new TrainpoolError('LAUNCH', `host 0 at ${master.host}:${master.port} did not let this host in (${e.message}): TRAINPOOL_SECRET_FILE must hold the same secret on every host`);
  });
  o.out(`joined the run at ${master.host}:${master.port}`);
  // The regions to this host's workers, mapped as host 0 maps its own (exchange.ts): the weights published
  // once for all of them, each worker's gradients read where it wrote them and sent on from there.
  const exchange = createExchange(o.sizes, G, { threads: 1 });
  const workers = Array.from(
    { length: G },
    (_, l) =>
      new SupervisedWorker({
        logger: o.logger,
        worker: {
          shared: exchange.shared,
          reply: exchange.replies[l],
          receive: exchange.arena.receiver(l, ['grads', 'stats']),
          config: { rank: first + l, model: o.spec, backend: config.backend, gpu: config.gpus.length ? workerGpu(config.gpus[l]) : null, compute: o.compute ?? { kind: 'model' }, layoutHash: o.layoutHash },
          requestBytes: 4 * Math.max(config.batchSize, DEFAULTS.evalChunk) * o.spec.height * o.spec.width * o.spec.depth,
          requestTimeoutMs: config.stepTimeoutMs,
          firstRequestTimeoutMs: config.firstStepTimeoutMs,
          onStderr: (r, line) => line.trim() && o.logger.warn({ worker: r, stderr: line }, 'worker stderr'),
        },
      }),
  );
  // A holder, not a `let`: the pool is made in a message handler, which TypeScript's narrowing does not see.
  const own: { pool?: AugmentPool } = {};
  try {
    const ready = (await Promise.all(workers.map((w) => w.start()))).map((w) => w.info!);
    const dataFingerprint = o.data ? datasetFingerprint(o.data) : undefined;
    o.out(`workers: ${G} (${ready.map((r) => `[${r.rank}] ${r.backend}: ${r.device}`).join('; ')})`);
    return await new Promise<string>((resolve, reject) => {
      let state: VersionedState | null = null;
      // --host-reduce: a step's replies, by state version, until every worker of this host has answered.
      const gathered = new Map<number, { m: RankRequestMessage; reply: StepResult }[]>();
      const reduced = async (m: RankRequestMessage, reply: StepResult) => {
        const step = gathered.get(m.version) ?? [];
        gathered.set(m.version, step);
        step.push({ m, reply });
        if (step.length < G) return;
        gathered.delete(m.version);
        step.sort((a, b) => a.m.rank - b.m.rank);
        await channel.send({
          type: 'ranksReduced',
          ids: step.map((s) => s.m.id),
          ranks: step.map((s) => s.m.rank),
          loss: step.map((s) => s.reply.loss),
          acc: step.map((s) => s.reply.acc),
          computeMs: step.map((s) => s.reply.computeMs),
          // The coordinator's own mean (float64 sums in rank order, rounded once).
          grads: average(step.map((s) => s.reply.grads)),
          stats: average(step.map((s) => s.reply.stats)),
        });
      };
      const serve = async (m: RankRequestMessage) => {
        const w = workers[m.rank - first];
        try {
          if (!w) throw new Error(`rank ${m.rank} is not on this host (${first}–${first + G - 1}): this is a bug`);
          if (!state || state.version !== m.version) throw new Error(`state ${m.version} was not sent before its request (have ${state?.version ?? 'none'}): this is a bug`);
          if (m.indices && !own.pool) throw new Error('host 0 asked for a shard built here before sending the training mean: this is a bug');
          const pool = m.indices ? own.pool! : null;
          const shard: Shard = pool ? await pool.makeShard({ indices: m.indices!, seed: m.augmentSeed!, augment: m.augment! }) : { x: m.x!, labels: m.labels! };
          const step = m.kind === 'computeGradients' ? await w.computeGradients({ ...shard, dropoutSeed: m.dropoutSeed, nextDropoutSeed: m.nextDropoutSeed }, state) : null;
          const reply = step ?? (m.kind === 'evaluate' ? await w.evaluate(shard, state) : { stats: await w.batchStatistics(shard, state) });
          pool?.recycle([shard]); // answered: the worker read it (AugmentPool.recycle)
          if (step && o.reduce) return await reduced(m, step);
          await channel.send({ type: 'rankReplied', id: m.id, rank: m.rank, ...reply });
        } catch (e) {
          await channel.send({ type: 'rankFailed', id: m.id, rank: m.rank, message: (e as Error).message }).catch(() => {});
        }
      };
      const channel = new Channel(socket, {
        message: (raw) => {
          let m: ToHost;
          try {
            m = asToHost(raw);
          } catch (e) {
            socket.destroy();
            return reject(new TrainpoolError('PROTOCOL', `host 0 sent ${(e as Error).message}`));
          }
          switch (m.type) {
            case 'state':
              // Kept as it came: each frame has a buffer of its own (protocol/frame.ts).
              state = { version: m.version, data: m.data };
              return;
            case 'dataset': {
              const data = o.data;
              if (!data) return reject(new TrainpoolError('PROTOCOL', 'host 0 sent a training mean to a host without a data set: this is a bug'));
              own.pool = new AugmentPool({ threads: o.augmentThreads ?? 2, ...poolSource(data), mean: m.mean, height: data.height, width: data.width, depth: data.depth });
              return;
            }
            case 'rankRequest':
              return void serve(m);
            case 'hostShutdown':
              socket.end();
              return resolve(m.reason);
            case 'heartbeat':
              return;
            default: {
              const never: never = m;
              throw new Error(`unhandled host message ${JSON.stringify(never)}: this is a bug`);
            }
          }
        },
        close: (e) => reject(lost(`closed the connection${e ? ` (${e.message})` : ''}`)),
      });
      socket.resume();
      heartbeat(
        socket,
        () => void channel.send({ type: 'heartbeat' }).catch(() => {}),
        (ms) => {
          socket.destroy();
          reject(lost(`went silent for ${(ms / 1000).toFixed(1)} s`));
        },
      );
      void channel.send({
        type: 'hostReady',
        protocolVersion: HOSTS_PROTOCOL_VERSION,
        nodeRank: cluster.nodeRank,
        layoutHash: o.layoutHash,
        workers: ready.map((r) => ({ rank: r.rank, backend: r.backend, device: r.device })),
        ...(dataFingerprint ? { dataFingerprint } : {}),
        ...(o.reduce ? { reduce: true } : {}),
      });
    });
  } finally {
    socket.destroy();
    await Promise.all(workers.map((w) => w.close()));
    exchange.close();
    await own.pool?.close();
  }
}

/** A connection to `host:port`, retried while nothing listens there yet (host 0 starting), up to `timeoutMs`. */
export async function dial(host: string, port: number, timeoutMs: number, secure?: { ca: Buffer }): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const connected = () => {
          s.off('error', reject);
          s.setNoDelay(true); // a frame's tail must not wait for host 0's delayed ACK (Nagle)
          resolve(s);
        };
        // With TLS, host 0's certificate must chain to the CA and name the address dialled (an IP in its
        // subjectAltName, or a DNS name).
        const s: net.Socket = secure
          ? tls.connect({ host, port, ca: secure.ca, servername: net.isIP(host) ? undefined : host, minVersion: 'TLSv1.3' }, connected)
          : net.connect(port, host, connected);
        s.once('error', reject);
      });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // OpenSSL's verification codes (DEPTH_ZERO_SELF_SIGNED_CERT, …), Node's ERR_TLS_* and ERR_SSL_*.
      if (secure && code && (!code.startsWith('E') || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL'))) {
        throw new TrainpoolError('LAUNCH', `host 0 at ${host}:${port} showed a TLS certificate this host does not accept (TRAINPOOL_TLS_CA): ${tlsReason(e as Error)}`);
      }
      if (Date.now() > deadline || !['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT'].includes(code ?? '')) {
        throw new TrainpoolError('LAUNCH', `host 0 at ${host}:${port} could not be reached within ${timeoutMs / 1000} s: ${code ?? (e as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
