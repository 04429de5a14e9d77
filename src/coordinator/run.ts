/**
 * One training run, from a resolved configuration to its outputs: load the data, start the augmentation
 * pool and one worker process per GPU (or CPU worker), train, and write the history, plot and model.
 * Only this process logs, plots and checkpoints; workers compute.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { ResolvedConfig } from '../cli/options.js';
import { AugmentPool } from '../data/augment-pool.js';
import type { Dataset } from '../data/dataset.js';
import { loadDataset, type DatasetCheck } from '../data/load.js';
import { meanImage } from '../data/mean.js';
import { setupBackend } from '../model/backend.js';
import type { ModelSpec } from '../model/minigooglenet.js';
import { Replica } from '../model/replica.js';
import type { WorkerConfig } from '../protocol/messages.js';
import { EpochProgress } from './report/progress.js';
import { formatEpochLine } from './report/epoch-line.js';
import { exportModel } from './report/export.js';
import { writeHistory, writeFileAtomic } from './report/history.js';
import { renderPlot } from './report/plot.js';
import { createSgdState } from './sgd.js';
import { stepsPerEpoch } from './plan.js';
import { train, type TrainingState } from './trainer.js';
import { ProcessWorker } from './workers.js';

export interface RunIO {
  /** Human-readable lines (stdout). */
  out(line: string): void;
  logger: Logger;
  /** Set to true (e.g. by SIGINT) to stop at the next step boundary. */
  stopRequested(): boolean;
  progressStream?: NodeJS.WriteStream;
}

export interface RunResult {
  state: TrainingState;
  stopped: 'completed' | 'requested';
  seconds: number;
  imagesPerSecond: number;
}

export async function runTraining(config: ResolvedConfig, check: DatasetCheck, io: RunIO): Promise<RunResult> {
  const outputs = config.outputs!;
  const started = performance.now();
  const data = await loadDataset({
    name: config.dataset,
    dataDir: config.dataDir ?? undefined,
    limitTrain: config.limitTrain ?? undefined,
    limitTest: config.limitTest ?? undefined,
    seed: config.seed,
    download: config.download,
  });
  const mean = meanImage(data.train, data.height, data.width, data.depth);
  const spec: ModelSpec = {
    name: config.model,
    width: data.width,
    height: data.height,
    depth: data.depth,
    classes: data.classes,
    seed: config.seed,
  };

  // The coordinator's own replica (cpu backend): the initial weights every worker starts from, the
  // layout they must agree on, and the model exported at the end.
  const cpu = await setupBackend('cpu');
  const master = new Replica(spec);
  const pool = new AugmentPool({ threads: config.augmentThreads, ...poolSource(data), mean, height: data.height, width: data.width, depth: data.depth });
  const workers = Array.from({ length: config.workers }, (_, rank) => {
    const workerConfig: WorkerConfig = {
      rank,
      model: spec,
      backend: config.backend,
      gpu: config.gpus.length ? config.gpus[rank].index : null,
      compute: { kind: 'model' },
      layoutHash: master.layoutHash,
    };
    return new ProcessWorker({
      config: workerConfig,
      requestTimeoutMs: config.firstStepTimeoutMs,
      onStderr: (r, line) => line.trim() && io.logger.warn({ worker: r, stderr: line }, 'worker stderr'),
    });
  });
  const progress = new EpochProgress(config.epochs, io.progressStream ?? process.stderr);
  try {
    const ready = await Promise.all(workers.map((w) => w.start()));
    const steps = stepsPerEpoch({ trainCount: data.train.count, batchSize: config.batchSize, workers: config.workers });
    const devices = ready.map((r) => `[${r.rank}] ${r.backend}: ${r.device}`).join('; ');
    io.out(`trainpool: ${spec.name} on ${data.name} (${data.train.count.toLocaleString('en-US')} train / ${data.test.count.toLocaleString('en-US')} test, ${data.height}×${data.width}×${data.depth}), seed ${config.seed}`);
    io.out(`workers: ${config.workers} (${devices})`);
    io.out(`global batch ${config.batchSize * config.workers} (${config.batchSize} × ${config.workers}), ${steps} steps/epoch, ${config.epochs} epochs, lr ${config.lr}${config.scaleLr ? ` × ${config.workers} (warmup 5 epochs)` : ''}, momentum ${config.momentum}`);
    io.logger.info({ config: publicConfig(config), devices: ready }, 'run started');

    const start: TrainingState = {
      epoch: 0,
      weights: await master.getState(),
      sgd: createSgdState(master.layout.trainableSize),
      history: [],
    };
    const result = await train(
      { clients: workers, shards: pool, trainableSize: master.layout.trainableSize },
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
        evalChunk: 500,
        prefetch: 2,
      },
      start,
      {
        onStep: (s) => progress.step(s),
        onEpoch: (record, state) => {
          progress.stop();
          io.out(formatEpochLine(record, config.epochs));
          io.logger.info(record, 'epoch');
          writeHistory(outputs, publicConfig(config), state.history);
        },
        shouldStop: io.stopRequested,
      },
    );
    progress.stop();

    // Outputs: history (again, complete), plot, model.
    const history = result.state.history;
    writeHistory(outputs, publicConfig(config), history);
    if (history.length) writeFileAtomic(outputs.png, await renderPlot(history, { title: `${spec.name} on ${data.name}` }));
    master.setState(result.state.weights);
    await exportModel(outputs.modelDir, master.model, {
      dataset: data.name,
      classNames: data.classNames,
      inputShape: [data.height, data.width, data.depth],
      mean,
    });
    const seconds = (performance.now() - started) / 1000;
    const trained = history.reduce((s, r) => s + r.seconds, 0);
    const images = history.length * steps * config.batchSize * config.workers;
    const imagesPerSecond = trained > 0 ? images / trained : 0;
    io.out(`done in ${seconds.toFixed(1)}s, ${Math.round(imagesPerSecond).toLocaleString('en-US')} img/s over ${history.length} epochs`);
    io.out(`plot: ${outputs.png}`);
    io.out(`history: ${outputs.historyJson}, ${outputs.historyCsv}`);
    io.out(`model: ${outputs.modelDir}${path.sep}model.json`);
    io.logger.info({ seconds, imagesPerSecond, outputs }, 'run finished');
    return { state: result.state, stopped: result.stopped, seconds, imagesPerSecond };
  } finally {
    progress.stop();
    await Promise.all(workers.map((w) => w.close()));
    await pool.close();
    master.dispose();
    await cpu.close();
  }
}

/** Train and test images in one source, test after train, so one pool serves both. */
function poolSource(data: Dataset): { images: Uint8Array; labels: Uint8Array } {
  const images = new Uint8Array(new SharedArrayBuffer(data.train.images.length + data.test.images.length));
  images.set(data.train.images, 0);
  images.set(data.test.images, data.train.images.length);
  const labels = new Uint8Array(new SharedArrayBuffer(data.train.count + data.test.count));
  labels.set(data.train.labels, 0);
  labels.set(data.test.labels, data.train.count);
  return { images, labels };
}

/** The configuration as it goes into history JSON and logs (paths and values, no functions). */
export function publicConfig(config: ResolvedConfig): Record<string, unknown> {
  return {
    model: config.model,
    dataset: config.dataset,
    backend: config.backend,
    gpus: config.gpus.map((g) => g.name),
    workers: config.workers,
    epochs: config.epochs,
    lr: config.lr,
    batch_size: config.batchSize,
    global_batch_size: config.batchSize * config.workers,
    momentum: config.momentum,
    seed: config.seed,
    scale_lr: config.scaleLr,
    limit_train: config.limitTrain,
    limit_test: config.limitTest,
  };
}
