/**
 * Host 0's side of a run on several hosts: it listens for the other hosts' bin/train (their agents,
 * agent.ts), authenticates each connection (protocol/handshake.ts) before decoding a byte of it, and gives
 * the trainer one ReplicaClient per remote rank, so that the training loop is the same whether a rank's
 * worker is a local process or one on another machine.
 *
 * The weights go to each host once per version (the first of its ranks to ask sends them); every rank's
 * gradients come back on their own and are copied into that rank's slot of the exchange arena, where the
 * update reads local ranks' gradients: the mean over N hosts × G workers is the one a single host with
 * N × G workers computes, in the same rank order, to the bit.
 *
 * A host that is lost (its connection closed, or silent past the heartbeat's limit, heartbeat.ts) may be
 * replaced by the launcher: a new bin/train with the same host rank that joins within `rejoinTimeoutMs`
 * takes its place, gets the current weights and runs the lost requests again — every input of a step is a
 * function of the coordinator's state, so the run ends as if nothing had happened. Otherwise its ranks'
 * requests fail and the run stops with a checkpoint.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { EvaluationSums, Shard } from '../../model/gradients.js';
import type { ShardRequest } from '../../data/shard.js';
import { Channel } from '../../protocol/channel.js';
import { acceptPeer } from '../../protocol/handshake.js';
import { asFromHost, HOSTS_PROTOCOL_VERSION, type FromHost, type HostReadyMessage, type RankRequestKind, type ToHost } from '../../protocol/hosts.js';
import { TrainpoolError } from '../../util/errors.js';
import type { ReplicaClient, StepRequest, StepResult, VersionedState } from '../replica-client.js';
import { heartbeat } from './heartbeat.js';

/** A request's dropout seeds: a step's, and the hint for the rank's next (StepRequest). */
type Seeds = Pick<StepRequest, 'dropoutSeed' | 'nextDropoutSeed'>;
/** What an evaluation or a statistics pass sends: it draws no dropout. */
const NO_DROPOUT: Seeds = { dropoutSeed: 0 };

export interface ListenOptions {
  /** Where to listen: the address host 0 is known by when it is a loopback one, else every interface. */
  host: string;
  port: number;
  secret: Buffer;
  runId: string;
  /** Hosts in the run, host 0 included. */
  nodes: number;
  workersPerHost: number;
  layoutHash: string;
  /**
   * Milliseconds a host may take to answer a rank's request (its first one: `firstRequestTimeoutMs`) before
   * it counts as lost: a link that goes down without closing gives no socket error. 0 disables.
   */
  requestTimeoutMs: number;
  firstRequestTimeoutMs: number;
  /** How long a lost host's ranks wait for its replacement (--rejoin-timeout). */
  rejoinTimeoutMs: number;
  /** The heartbeat's period and the silence after which a host counts as lost (tests shorten them). */
  heartbeat?: { intervalMs: number; silentMs: number };
  /** How long a connection may take to authenticate (handshake.ts; default 10 s). */
  handshakeTimeoutMs?: number;
  /** TLS (TRAINPOOL_TLS_CERT/KEY): host 0's certificate and key; the handshake then runs inside it. */
  tls?: { cert: Buffer; key: Buffer };
  /** Host 0's data set (its fingerprint) and training mean: a host with the same data builds its own shards. */
  data?: { fingerprint: string; mean: Float32Array };
  /** --host-reduce: every host answers a step with its workers' mean gradient (hostReady must agree). */
  hostReduce?: boolean;
  /** One line per refused connection or lost host; the run goes on for the others while it can. */
  warn(line: string): void;
}

/** A host that left the run (its connection closed or broke, or it broke the protocol). */
export class HostLostError extends TrainpoolError {
  constructor(message: string) {
    super('WORKER_FAILED', message);
  }
}

/** OpenSSL's reason for a TLS failure in a few words ("wrong version number"), not its multi-line dump. */
export function tlsReason(e: Error & { reason?: string }): string {
  return e.reason ?? e.message.split('\n')[0].trim();
}

/** `address:port` of the other end, an IPv4 peer as such (listening on '::', it comes as ::ffff:a.b.c.d). */
function peerAddress(socket: net.Socket): string {
  return `${(socket.remoteAddress ?? '?').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '')}:${socket.remotePort}`;
}

/**
 * Connections authenticating at once, at most: each holds a socket for up to the handshake's timeout, so a
 * flood of connections that never prove anything must not take the process's file descriptors.
 */
export const MAX_AUTHENTICATING = 32;

/** The 16 bytes of the run's id the handshake binds its proofs to. */
export function runIdBytes(runId: string): Buffer {
  return createHash('sha256').update(runId).digest().subarray(0, 16);
}

export class HostListener {
  private readonly hosts = new Map<number, RemoteHost>();
  private readonly sockets = new Set<net.Socket>();
  private readonly waiting: (() => void)[] = [];
  /** Who waits for host k's replacement. */
  private readonly rejoining = new Map<number, (() => void)[]>();
  private closed = false;
  private authenticating = 0;
  private turnedAway = 0;

  private constructor(
    private readonly server: net.Server,
    private readonly o: ListenOptions,
  ) {
    const take = (socket: net.Socket) => {
      // A frame's tail would otherwise wait for the peer's delayed ACK (Nagle): up to 40 ms a step.
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      void this.admit(socket);
    };
    if (o.tls) {
      server.on('secureConnection', take);
      // Plain bytes, an old client, garbage: refused by TLS itself, before the handshake sees a byte.
      server.on('tlsClientError', (e: Error & { reason?: string }, socket: tls.TLSSocket) => o.warn(`refused a connection from ${peerAddress(socket)}: its TLS handshake failed (${tlsReason(e)})`));
    } else server.on('connection', take);
  }

  static async open(o: ListenOptions): Promise<HostListener> {
    // TLS 1.3 only: every host runs this same build, so nothing older has to be spoken.
    const server = o.tls ? tls.createServer({ cert: o.tls.cert, key: o.tls.key, minVersion: 'TLSv1.3' }) : net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new TrainpoolError('LAUNCH', `host 0 cannot listen on ${o.host}:${o.port} (TRAINPOOL_MASTER_PORT) for the other hosts: ${e.code ?? e.message}`)),
      );
      server.listen(o.port, o.host, () => resolve());
    });
    return new HostListener(server, o);
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Resolves once every other host is connected and ready; rejects after `timeoutMs` naming the missing ones. */
  async ready(timeoutMs: number): Promise<RemoteHost[]> {
    if (this.hosts.size < this.o.nodes - 1) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve, reject) => {
        this.waiting.push(resolve);
        timer = setTimeout(() => {
          const missing = Array.from({ length: this.o.nodes - 1 }, (_, i) => i + 1).filter((k) => !this.hosts.has(k));
          reject(new TrainpoolError('LAUNCH', `host${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not join within ${timeoutMs / 1000} s (listening on port ${this.port})`));
        }, timeoutMs);
      }).finally(() => clearTimeout(timer));
    }
    return [...this.hosts.values()].sort((a, b) => a.nodeRank - b.nodeRank);
  }

  /**
   * Tells every host the run is over and stops listening; a connection still open after `graceMs` (a host
   * that does not hang up) is cut.
   */
  async close(reason: string, graceMs = 2_000): Promise<void> {
    this.closed = true;
    await Promise.all([...this.hosts.values()].map((h) => h.shutdown(reason)));
    for (const s of this.sockets) s.end();
    const cut = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, graceMs);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    clearTimeout(cut);
  }

  /** A client per rank of the joined hosts, in rank order; `receive` places a rank's gradients in the exchange arena. */
  ranks(receive: (rank: number) => (field: string, bytes: number) => Uint8Array<ArrayBuffer> | undefined): RemoteRank[] {
    return [...this.hosts.values()]
      .sort((a, b) => a.nodeRank - b.nodeRank)
      .flatMap((h) => h.info.workers.map((w) => new RemoteRank(this, h.nodeRank, w.rank, receive(w.rank), h.buildsShards)));
  }

  /** A request to rank `rank` on host `nodeRank`, run again on its replacement where the host is lost. */
  async request(nodeRank: number, rank: number, kind: RankRequestKind, shard: Shard, seeds: Seeds, state: VersionedState): Promise<FromHost> {
    for (;;) {
      const host = this.hosts.get(nodeRank);
      if (!host) throw new Error(`no host ${nodeRank} in the run: this is a bug`);
      try {
        return await host.request(rank, kind, shard, seeds, state);
      } catch (e) {
        if (!(e instanceof HostLostError) || this.closed) throw e;
        await this.replacement(host, e);
      }
    }
  }

  /** Resolves once `lost` has a replacement; rejects after rejoinTimeoutMs with why it was lost. */
  private async replacement(lost: RemoteHost, why: HostLostError): Promise<void> {
    if (this.hosts.get(lost.nodeRank) !== lost) return; // already replaced
    let timer: NodeJS.Timeout | undefined;
    const waiters = this.rejoining.get(lost.nodeRank) ?? [];
    this.rejoining.set(lost.nodeRank, waiters);
    try {
      await new Promise<void>((resolve, reject) => {
        waiters.push(resolve);
        timer = setTimeout(() => reject(new HostLostError(`${why.message}; no replacement joined within ${this.o.rejoinTimeoutMs / 1000} s`)), this.o.rejoinTimeoutMs);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  private async admit(socket: net.Socket): Promise<void> {
    const from = peerAddress(socket);
    if (this.authenticating >= MAX_AUTHENTICATING) {
      socket.destroy();
      // One line for the first and then every hundredth: a flood must not become a flood of log lines too.
      if (this.turnedAway++ % 100 === 0) this.o.warn(`turned away ${this.turnedAway} connection${this.turnedAway > 1 ? 's' : ''} so far (the latest from ${from}): ${MAX_AUTHENTICATING} were authenticating already`);
      return;
    }
    try {
      this.authenticating++;
      const { nodeRank } = await acceptPeer(socket, { secret: this.o.secret, runId: runIdBytes(this.o.runId), timeoutMs: this.o.handshakeTimeoutMs }).finally(() => this.authenticating--);
      if (nodeRank < 1 || nodeRank >= this.o.nodes) throw new Error(`it calls itself host ${nodeRank}, outside 1–${this.o.nodes - 1}`);
      const before = this.hosts.get(nodeRank);
      if (before && !before.isLost) throw new Error(`host ${nodeRank} is already in the run`);
      const host = await RemoteHost.join(socket, nodeRank, this.o);
      if (this.hosts.get(nodeRank) !== before || this.closed) throw new Error(`host ${nodeRank} is already in the run`);
      this.hosts.set(nodeRank, host);
      host.onLost = (e) => this.o.warn(`${e.message}${this.closed ? '' : `: its ranks wait up to ${this.o.rejoinTimeoutMs / 1000} s for a replacement`}`);
      if (before) {
        this.o.warn(`host ${nodeRank} rejoined from ${host.address}: its lost requests run again there`);
        for (const wake of this.rejoining.get(nodeRank)?.splice(0) ?? []) wake();
      }
      if (this.hosts.size === this.o.nodes - 1) for (const resolve of this.waiting.splice(0)) resolve();
    } catch (e) {
      socket.destroy();
      this.o.warn(`refused a connection from ${from}: ${(e as Error).message}`);
    }
  }
}

interface Pending {
  resolve(m: FromHost): void;
  reject(e: Error): void;
}

/** One other host, joined: its connection, the state version it holds, its ranks' pending requests. */
export class RemoteHost {
  private sentVersion = -1;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private lost: Error | null = null;
  onLost: ((e: Error) => void) | null = null;

  get isLost(): boolean {
    return this.lost !== null;
  }

  /** Whether it builds its ranks' shards (the same data set as host 0): requests then carry indices, not images. */
  buildsShards = false;

  private constructor(
    private readonly channel: Channel,
    private readonly socket: net.Socket,
    readonly nodeRank: number,
    readonly info: HostReadyMessage,
    readonly address: string,
    private readonly timeouts: Pick<ListenOptions, 'requestTimeoutMs' | 'firstRequestTimeoutMs'>,
  ) {}

  private answered = 0;

  /** Waits for the host's hostReady on `socket` (authenticated) and checks it against this run. */
  static join(socket: net.Socket, nodeRank: number, o: ListenOptions): Promise<RemoteHost> {
    return new Promise((resolve, reject) => {
      let host: RemoteHost | null = null;
      const address = peerAddress(socket);
      const channel = new Channel(socket, {
        message: (raw) => {
          let m: FromHost;
          try {
            m = asFromHost(raw);
          } catch (e) {
            socket.destroy();
            return host ? host.lose(new HostLostError(`host ${nodeRank} (${address}) sent ${(e as Error).message}`)) : reject(e);
          }
          if (host) return host.onMessage(m);
          if (m.type !== 'hostReady') return reject(new Error(`its first message is ${m.type}, not hostReady`));
          const want = Array.from({ length: o.workersPerHost }, (_, l) => nodeRank * o.workersPerHost + l);
          const problem =
            m.dataFingerprint !== undefined && o.data !== undefined && m.dataFingerprint !== o.data.fingerprint
              ? `its data set differs from host 0's (fingerprint ${m.dataFingerprint.slice(0, 12)}… against ${o.data.fingerprint.slice(0, 12)}…): the same files and --dataset, --limit-train, --limit-test on every host`
              : (m.reduce ?? false) !== (o.hostReduce ?? false)
                ? `it ${m.reduce ? 'reduces' : 'does not reduce'} its workers' gradients and host 0 ${o.hostReduce ? 'does' : 'does not'} (--host-reduce on every host or on none)`
                : m.protocolVersion !== HOSTS_PROTOCOL_VERSION
              ? `it speaks protocol ${m.protocolVersion}, host 0 ${HOSTS_PROTOCOL_VERSION}`
              : m.nodeRank !== nodeRank
                ? `it said host ${nodeRank} in the handshake and ${m.nodeRank} after`
                : m.layoutHash !== o.layoutHash
                  ? `its model's weight layout ${m.layoutHash} differs from host 0's ${o.layoutHash} (the same options on every host)`
                  : m.workers.map((w) => w.rank).join() !== want.join()
                    ? `it serves ranks ${m.workers.map((w) => w.rank).join(', ')}, not ${want.join(', ')} (the same number of workers on every host)`
                    : null;
          if (problem) {
            socket.destroy();
            return reject(new Error(problem));
          }
          const joined = new RemoteHost(channel, socket, nodeRank, m, address, o);
          host = joined;
          // The same data: it builds its own shards from the mean (sent before any request) and each request's indices.
          if (m.dataFingerprint !== undefined && o.data) {
            joined.buildsShards = true;
            void joined.send({ type: 'dataset', mean: o.data.mean });
          }
          heartbeat(
            socket,
            () => void joined.send({ type: 'heartbeat' }),
            (ms) => joined.lose(new HostLostError(`host ${nodeRank} (${address}) went silent for ${(ms / 1000).toFixed(1)} s`)),
            o.heartbeat,
          );
          resolve(joined);
        },
        close: (e) => {
          const error = new HostLostError(`host ${nodeRank} (${address}) left the run${e ? `: ${e.message}` : ''}`);
          if (host) host.lose(error);
          else reject(error);
        },
      });
      socket.resume();
    });
  }

  async request(rank: number, kind: RankRequestKind, shard: Shard, seeds: Seeds, state: VersionedState): Promise<FromHost> {
    if (this.lost) throw this.lost;
    if (state.version !== this.sentVersion) {
      this.sentVersion = state.version;
      void this.send({ type: 'state', version: state.version, data: state.data });
    }
    const id = this.nextId++;
    const deferred = (shard as DeferredShard).request;
    if (deferred && !this.buildsShards) throw new Error(`host ${this.nodeRank} builds no shards but was handed a request for one: this is a bug`);
    const input = deferred ? { indices: deferred.indices, augmentSeed: deferred.seed, augment: deferred.augment } : { x: shard.x, labels: shard.labels };
    const ms = this.answered === 0 ? this.timeouts.firstRequestTimeoutMs : this.timeouts.requestTimeoutMs;
    const timer = ms > 0 ? setTimeout(() => this.lose(new HostLostError(`host ${this.nodeRank} (${this.address}) did not answer rank ${rank}'s ${kind} within ${ms / 1000} s`)), ms) : undefined;
    const reply = new Promise<FromHost>((resolve, reject) => this.pending.set(id, { resolve, reject })).finally(() => clearTimeout(timer));
    void this.send({ type: 'rankRequest', id, rank, kind, version: state.version, ...input, dropoutSeed: seeds.dropoutSeed, nextDropoutSeed: seeds.nextDropoutSeed });
    return reply;
  }

  async shutdown(reason: string): Promise<void> {
    if (this.lost) return;
    await this.send({ type: 'hostShutdown', reason });
    this.lost = new Error('the run is over');
  }

  send(m: ToHost): Promise<void> {
    return this.channel.send(m).catch((e: Error) => this.lose(new HostLostError(`host ${this.nodeRank} (${this.address}): sending ${m.type} failed: ${e.message}`)));
  }

  private onMessage(m: FromHost): void {
    if (m.type === 'heartbeat') return;
    if (m.type === 'hostReady') return this.lose(new HostLostError(`host ${this.nodeRank} (${this.address}) said hostReady twice`));
    if (m.type === 'ranksReduced') {
      // One mean for the step's requests to this host: each of its ranks returns it (the trainer's mean over
      // all ranks then weighs the host by its number of workers, as it should).
      m.ids.forEach((id, i) => this.onMessage({ type: 'rankReplied', id, rank: m.ranks[i], grads: m.grads, stats: m.stats, loss: m.loss[i], acc: m.acc[i], computeMs: m.computeMs[i] }));
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return this.lose(new HostLostError(`host ${this.nodeRank} (${this.address}) answered request ${m.id}, which is not pending`));
    this.pending.delete(m.id);
    this.answered++;
    if (m.type === 'rankFailed') p.reject(new TrainpoolError('WORKER_FAILED', `worker ${m.rank} on host ${this.nodeRank} (${this.address}): ${m.message}`));
    else p.resolve(m);
  }

  lose(e: Error): void {
    if (this.lost) return;
    this.lost = e;
    this.socket.destroy();
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    this.onLost?.(e);
  }
}

/** A shard another host builds: no images, the request they come from. */
type DeferredShard = Shard & { request?: ShardRequest };
const NO_IMAGES = new Float32Array(0);
const NO_LABELS = new Uint8Array(0);

/** One rank whose worker is on another host (the one host `nodeRank` is now: a replacement takes over). */
export class RemoteRank implements ReplicaClient {
  readonly deferShard?: (request: ShardRequest) => Shard;

  constructor(
    private readonly hosts: HostListener,
    private readonly nodeRank: number,
    readonly rank: number,
    private readonly receive: (field: string, bytes: number) => Uint8Array<ArrayBuffer> | undefined,
    buildsShards: boolean,
  ) {
    // A replacement runs the same command on the same data, so it builds shards as its predecessor did.
    if (buildsShards) this.deferShard = (request) => ({ x: NO_IMAGES, labels: NO_LABELS, request }) as DeferredShard;
  }

  async computeGradients(r: StepRequest, state: VersionedState): Promise<StepResult> {
    const m = this.expect(await this.hosts.request(this.nodeRank, this.rank, 'computeGradients', r, r, state), 'grads');
    return { grads: this.place('grads', m.grads!), stats: this.place('stats', m.stats!), loss: m.loss!, acc: m.acc!, computeMs: m.computeMs ?? 0 };
  }

  async evaluate(shard: Shard, state: VersionedState): Promise<EvaluationSums> {
    const m = this.expect(await this.hosts.request(this.nodeRank, this.rank, 'evaluate', shard, NO_DROPOUT, state), 'count');
    return { lossSum: m.lossSum!, correct: m.correct!, count: m.count! };
  }

  async batchStatistics(shard: Shard, state: VersionedState): Promise<Float32Array> {
    return this.expect(await this.hosts.request(this.nodeRank, this.rank, 'batchStatistics', shard, NO_DROPOUT, state), 'stats').stats!;
  }

  async close(): Promise<void> {}

  private expect(m: FromHost, field: 'grads' | 'count' | 'stats') {
    if (m.type !== 'rankReplied' || m[field] === undefined) throw new TrainpoolError('WORKER_FAILED', `host ${this.nodeRank} answered rank ${this.rank} without ${field}: this is a bug`);
    return m;
  }

  /** `a` in this rank's slot of the exchange arena (where the update reads a local rank's), or `a` itself. */
  private place(field: string, a: Float32Array): Float32Array {
    const slot = this.receive(field, a.byteLength);
    if (!slot) return a;
    new Uint8Array(slot.buffer, slot.byteOffset, slot.byteLength).set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    return new Float32Array(slot.buffer, slot.byteOffset, a.length);
  }
}
