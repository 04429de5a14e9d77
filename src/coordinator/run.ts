/**
 * One training run, from a resolved configuration to its outputs: load the data, start the augmentation
 * pool and one supervised worker process per GPU (or CPU worker), train with a checkpoint after every
 * epoch, and write the history, plot and model. Only this process logs, plots and checkpoints.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { DEFAULTS, PRESETS, publicConfig, shapingConfig, type ResolvedConfig } from '../config/config.js';
import { datasetOptions } from '../config/resolve.js';
import { AugmentPool } from '../data/augment-pool.js';
import { datasetFingerprint, poolSource } from '../data/pool-source.js';
import { loadDataset } from '../data/load.js';
import { meanImage } from '../data/mean.js';
import { setupBackend } from '../engine/backend.js';
import type { ModelSpec } from '../model/minigooglenet.js';
import { Replica } from '../model/replica.js';
import { isTrainpoolError, TrainpoolError } from '../util/errors.js';
import { writeCheckpoint, type CheckpointData } from './checkpoint.js';
import { stepsPerEpoch } from './plan.js';
import { formatEpochLine } from './report/epoch-line.js';
import { historyCsv, historyJson, writeHistory } from './report/history.js';
import { writeOutputSet } from './report/outputs.js';
import type { OutputLock } from './output-lock.js';
import { checkFreeSpace } from './free-space.js';
import { writeModelFiles } from '../model/export.js';
import { renderPlot } from './report/plot.js';
import { EpochProgress } from './report/progress.js';
import { createExchange } from './exchange.js';
import { SupervisedWorker } from './supervisor.js';
import { freshState, train, type TrainingState } from './trainer.js';
import { workerGpu } from './worker-gpu.js';
import { describeCluster, isLoopback, type Cluster } from '../config/cluster.js';
import { HostListener, HostLostError } from './hosts/remote.js';
import type { ReplicaClient } from './replica-client.js';

export interface RunIO {
  /** Human-readable lines (stdout). */
  out(line: string): void;
  /** A warning for the user (stderr), beside the log. */
  warn?(line: string): void;
  logger: Logger;
  /** True once the run should stop at the next step boundary (SIGINT, SIGTERM). */
  stopRequested(): boolean;
  progressStream?: NodeJS.WriteStream;
  /** The run's id, in its checkpoints and history (cli/ownership.ts). */
  runId: string;
  /** The checkpoint file the run resumed from. */
  resumedFrom?: string;
  /** The output's lock: checked before every checkpoint, so a run that lost it writes nothing more there. */
  lock?: OutputLock;
  /** A run on several hosts (this one host 0): the launcher's contract, the run's shared secret, TLS if asked for. */
  hosts?: { cluster: Cluster; secret: Buffer; tls?: { cert: Buffer; key: Buffer } };
}

export interface RunResult {
  state: TrainingState;
  stopped: 'completed' | 'requested';
  seconds: number;
  imagesPerSecond: number;
}

export async function runTraining(config: ResolvedConfig, io: RunIO, resume: CheckpointData | null = null): Promise<RunResult> {
  const outputs = config.outputs!;
  const started = performance.now();
  const data = await loadDataset(datasetOptions(config));
  // The mean is part of what a resumed run must reproduce; the checkpoint's copy is the one trained with.
  const mean = resume?.mean ?? meanImage(data.train, data.height, data.width, data.depth);
  const spec: ModelSpec = { name: config.model, width: data.width, height: data.height, depth: data.depth, classes: data.classes, seed: config.seed };

  // The coordinator's own replica (cpu backend): the initial weights, the layout every worker must agree
  // on, and the model exported at the end.
  const cpu = await setupBackend('cpu');
  const master = new Replica(spec);
  if (resume && resume.layoutHash !== master.layoutHash) {
    throw new TrainpoolError('CHECKPOINT', `--resume: the checkpoint's weight layout ${resume.layoutHash} does not match this model's ${master.layoutHash}`);
  }
  const totalSize = master.layout.totalSize;
  // Several hosts: every host's workers are ranks of this run, host k's numbered from k × --workers.
  const cluster = io.hosts?.cluster;
  const nodes = cluster?.nodes ?? 1;
  const ranks = config.workers * nodes;
  if (resume && (resume.hosts ?? 1) !== nodes) {
    // --workers is per host: the same command on another number of hosts is another global batch.
    throw new TrainpoolError('CHECKPOINT', `--resume: the checkpoint was trained on ${resume.hosts ?? 1} host${(resume.hosts ?? 1) > 1 ? 's' : ''} of ${config.workers} workers and this run has ${nodes}; start it on ${resume.hosts ?? 1} again`);
  }
  // Listening from here on, while this host loads and starts its own workers; the others may come first.
  const listener =
    cluster && io.hosts
      ? await HostListener.open({
          host: isLoopback(cluster.master!.host) ? cluster.master!.host : '::',
          port: cluster.master!.port,
          secret: io.hosts.secret,
          tls: io.hosts.tls,
          // Hosts with the same data build their own ranks' shards (the fingerprint says they have it).
          data: { fingerprint: datasetFingerprint(data), mean },
          hostReduce: config.hostReduce,
          runId: io.runId,
          nodes: cluster.nodes,
          workersPerHost: config.workers,
          layoutHash: master.layoutHash,
          // A host's own workers time out first (their supervisor replaces them there); this is for the link.
          requestTimeoutMs: config.stepTimeoutMs && config.stepTimeoutMs * 2,
          firstRequestTimeoutMs: config.firstStepTimeoutMs && config.firstStepTimeoutMs * 2,
          rejoinTimeoutMs: config.rejoinTimeoutMs,
          warn: (line) => {
            io.warn?.(line);
            io.logger.warn({ hosts: line }, 'hosts');
          },
        })
      : null;
  // Before any worker starts: a disk without room for a checkpoint fails now, not after the first epoch.
  checkFreeSpace(outputs, { checkpointBytes: 4 * (2 * totalSize + mean.length), modelBytes: 4 * (totalSize + mean.length) }, (line) => {
    io.warn?.(line);
    io.logger.warn({ outputs }, line);
  });
  const pool = new AugmentPool({ threads: config.augmentThreads, ...poolSource(data), mean, height: data.height, width: data.width, depth: data.depth });
  const chaos = parseChaos(process.env.TRAINPOOL_CHAOS);
  // The weights, the velocity and every rank's gradients, in the memory the exchange's kernels work in,
  // with the regions the workers read and write mapped there where the addon allows (exchange.ts).
  const exchange = createExchange({ totalSize, trainableSize: master.layout.trainableSize }, ranks);
  const { arena } = exchange;
  const workers = Array.from(
    { length: config.workers },
    (_, rank) =>
      new SupervisedWorker({
        logger: io.logger,
        killAtSteps: chaos.kill.get(rank),
        poisonAtSteps: chaos.nan.get(rank),
        killAtEvaluations: chaos.killEval.get(rank),
        worker: {
          config: {
            rank,
            model: spec,
            backend: config.backend,
            gpu: config.gpus.length ? workerGpu(config.gpus[rank]) : null,
            compute: { kind: 'model' },
            layoutHash: master.layoutHash,
          },
          shared: exchange.shared,
          reply: exchange.replies[rank],
          // A shard's images (float32): a training batch or a validation chunk, whichever is larger.
          requestBytes: 4 * Math.max(config.batchSize, DEFAULTS.evalChunk) * data.height * data.width * data.depth,
          receive: arena.receiver(rank, ['grads', 'stats']),
          requestTimeoutMs: config.stepTimeoutMs,
          firstRequestTimeoutMs: config.firstStepTimeoutMs,
          onStderr: (r, line) => line.trim() && io.logger.warn({ worker: r, stderr: line }, 'worker stderr'),
        },
      }),
  );
  const progress = new EpochProgress(config.epochs, io.progressStream ?? process.stderr);
  let lastCheckpoint: string | null = io.resumedFrom ?? null;
  const checkpoint = (state: TrainingState) => {
    io.lock?.assertHeld(`--output ${outputs.png}`);
    lastCheckpoint = writeCheckpoint(outputs.checkpointDir, {
      runId: io.runId,
      epoch: state.epoch,
      step: state.step,
      partial: state.partial,
      history: state.history,
      config: shapingConfig(config),
      layoutHash: master.layoutHash,
      ...(nodes > 1 ? { hosts: nodes } : {}),
      weights: state.weights,
      velocity: state.sgd.velocity,
      mean,
    });
    return lastCheckpoint;
  };
  const shown = { ...publicConfig(config), run_id: io.runId };
  try {
    const ready = (await Promise.all(workers.map((w) => w.start()))).map((w) => w.info!);
    if (cluster) io.out(describeCluster(cluster, config.workers));
    const hosts = listener ? await listener.ready(DEFAULTS.workerStartTimeoutS * 1000) : [];
    const clients: ReplicaClient[] = [...workers, ...(listener?.ranks((rank) => arena.receiver(rank, ['grads', 'stats'])) ?? [])];
    for (const h of hosts) io.out(`host ${h.nodeRank} (${h.address}): ${h.info.workers.map((w) => `[${w.rank}] ${w.backend}: ${w.device}`).join('; ')}; ${h.buildsShards ? 'builds its shards' : 'shards sent from here'}${config.hostReduce ? `; sends the mean of its ${h.info.workers.length} workers' gradients` : ''}`);
    const steps = stepsPerEpoch({ trainCount: data.train.count, batchSize: config.batchSize, workers: ranks });
    if (config.preset) io.out(`--preset ${config.preset}: ${PRESETS[config.preset].title}`);
    io.out(`trainpool: ${spec.name} on ${data.name} (${data.train.count.toLocaleString('en-US')} train / ${data.test.count.toLocaleString('en-US')} test, ${data.height}×${data.width}×${data.depth}), seed ${config.seed}`);
    io.out(`workers: ${config.workers} (${ready.map((r) => `[${r.rank}] ${r.backend}: ${r.device}`).join('; ')})`);
    io.out(`global batch ${config.batchSize * ranks} (${config.batchSize} × ${ranks}), ${steps} steps/epoch, ${config.epochs} epochs, lr ${config.lr}${config.scaleLr ? ` × ${ranks} (warmup ${config.warmupEpochs} epochs)` : ''}, momentum ${config.momentum}${config.augment ? '' : ', no augmentation'}${config.preciseBn ? `, precise BN from ${config.preciseBn} batches before each validation` : ''}`);
    if (resume) io.out(`resuming after epoch ${resume.epoch} of ${config.epochs}${resume.step ? `, step ${resume.step}` : ''}`);
    io.logger.info({ config: publicConfig(config), devices: ready, resumedFrom: resume ? { epoch: resume.epoch, step: resume.step } : null, regions: exchange.mode }, 'run started');

    const start: TrainingState = resume
      ? { epoch: resume.epoch, step: resume.step, partial: resume.partial, history: resume.history, weights: resume.weights, sgd: { velocity: resume.velocity } }
      : freshState(await master.getState(), master.layout.trainableSize);
    const result = await train(
      { clients, shards: pool, trainableSize: master.layout.trainableSize, arena },
      {
        epochs: config.epochs,
        batchSize: config.batchSize,
        lr: config.lr,
        momentum: config.momentum,
        scaleLr: config.scaleLr,
        warmupEpochs: config.warmupEpochs,
        seed: config.seed,
        trainCount: data.train.count,
        testCount: data.test.count,
        testOffset: data.train.count,
        evalChunk: DEFAULTS.evalChunk,
        prefetch: DEFAULTS.prefetchSteps,
        preciseBn: config.preciseBn,
        augment: config.augment,
      },
      start,
      {
        onStep: (s) => progress.step(s),
        onEpoch: (record, state) => {
          progress.stop();
          io.out(formatEpochLine(record, config.epochs));
          io.logger.info(record, 'epoch');
          // The checkpoint first: a history that cannot be written must not cost the epoch's checkpoint.
          io.logger.info({ file: checkpoint(state) }, 'checkpoint');
          writeHistory(outputs, shown, state.history);
        },
        shouldStop: io.stopRequested,
        // A host lost for good: the steps done since the epoch's checkpoint are kept too, for --resume.
        onStepFailed: (state, e) => {
          if (e instanceof HostLostError && state.step > 0) io.logger.info({ file: checkpoint(state) }, 'checkpoint after a lost host');
        },
      },
    );
    progress.stop();

    const history = result.state.history;
    const png = history.length ? await renderPlot(history, { title: `${spec.name} on ${data.name}` }) : undefined;
    const set = { historyJson: historyJson(shown, history), historyCsv: historyCsv(history), png };
    if (result.stopped === 'requested') {
      const file = checkpoint(result.state);
      await writeOutputSet(outputs, set);
      io.out(`stopped after epoch ${result.state.epoch}, step ${result.state.step}: checkpoint ${file}; continue with the same command and --resume`);
      return { state: result.state, stopped: result.stopped, seconds: (performance.now() - started) / 1000, imagesPerSecond: 0 };
    }
    master.setState(result.state.weights);
    const meta = { dataset: data.name, classNames: data.classNames, inputShape: [data.height, data.width, data.depth] as [number, number, number], mean };
    // The plot, the history and the model as one set: all renamed into place once all are written.
    await writeOutputSet(outputs, { ...set, model: (dir) => writeModelFiles(dir, master.model, meta) });
    const seconds = (performance.now() - started) / 1000;
    const trained = history.reduce((s, r) => s + r.seconds, 0);
    const imagesPerSecond = trained > 0 ? (history.length * steps * config.batchSize * ranks) / trained : 0;
    io.out(`done in ${seconds.toFixed(1)}s, ${Math.round(imagesPerSecond).toLocaleString('en-US')} img/s over ${history.length} epochs`);
    io.out(`plot: ${outputs.png}`);
    io.out(`history: ${outputs.historyJson}, ${outputs.historyCsv}`);
    io.out(`model: ${outputs.modelDir}${path.sep}model.json`);
    io.logger.info({ seconds, imagesPerSecond, outputs, restarts: workers.map((w) => w.restarts) }, 'run finished');
    return { state: result.state, stopped: result.stopped, seconds, imagesPerSecond };
  } catch (e) {
    // Say where the work is: the checkpoint to resume from, or that there is none yet.
    if (isTrainpoolError(e, 'NON_FINITE_LOSS')) throw withCheckpoint(e, lastCheckpoint);
    if (isTrainpoolError(e, 'OUTPUT')) throw withCheckpoint(e, lastCheckpoint, 'make room (or fix the folder) and run the same command with --resume');
    if (e instanceof HostLostError) throw withCheckpoint(e, lastCheckpoint, 'start every host again with --resume');
    throw e;
  } finally {
    progress.stop();
    await listener?.close('host 0 ended the run');
    await Promise.all(workers.map((w) => w.close()));
    exchange.close();
    await pool.close();
    master.dispose();
    await cpu.close();
  }
}

/** `e` with the newest checkpoint of the run named (or its absence), and what to do next. */
function withCheckpoint(e: unknown, file: string | null, next?: string): unknown {
  if (!(e instanceof TrainpoolError)) return e;
  const where = !file ? 'no checkpoint was written yet' : existsSync(file) ? `the last checkpoint, ${file}, is kept${next ? `: ${next}` : ''}` : `its last checkpoint, ${file}, is gone too`;
  return new TrainpoolError(e.code, `${e.message}; ${where}`);
}

/**
 * Fault injection, for tests and for trying the recovery by hand:
 *   TRAINPOOL_CHAOS="kill-worker=RANK:STEP[,RANK:STEP…]"   SIGKILL worker RANK right after sending it
 *                                                          its STEP-th step (1-based over the run)
 *   TRAINPOOL_CHAOS="nan-grad=RANK:STEP[,…]"               replace that step's gradients with NaN
 *   TRAINPOOL_CHAOS="kill-eval=RANK:N[,…]"                 SIGKILL worker RANK right after sending it its
 *                                                          N-th validation chunk (1-based over the run)
 * Several faults join with ';'.
 */
export function parseChaos(spec: string | undefined): Record<'kill' | 'nan' | 'killEval', Map<number, Set<number>>> {
  const chaos = { kill: new Map<number, Set<number>>(), nan: new Map<number, Set<number>>(), killEval: new Map<number, Set<number>>() };
  const byName: Record<string, Map<number, Set<number>>> = { 'kill-worker': chaos.kill, 'nan-grad': chaos.nan, 'kill-eval': chaos.killEval };
  if (!spec) return chaos;
  for (const part of spec.split(';')) {
    const m = /^(kill-worker|nan-grad|kill-eval)=(\d+:\d+(?:,\d+:\d+)*)$/.exec(part.trim());
    if (!m) throw new TrainpoolError('USAGE', `TRAINPOOL_CHAOS must look like kill-worker=0:3,1:7, nan-grad=0:5 or kill-eval=1:2. Received: ${spec}`);
    const into = byName[m[1]];
    for (const pair of m[2].split(',')) {
      const [rank, step] = pair.split(':').map(Number);
      if (!into.has(rank)) into.set(rank, new Set());
      into.get(rank)!.add(step);
    }
  }
  return chaos;
}
