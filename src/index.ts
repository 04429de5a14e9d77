/**
 * trainpool as a library: the run bin/train does, as a function, the way a Keras user calls fit().
 *
 *   import { train, loadExportedModel } from 'trainpool';
 *   const history = await train({ output: 'out/fmnist.png', dataset: 'fashion-mnist', model: 'tiny', gpus: 0, workers: 2, epochs: 3 });
 *   console.log(history.at(-1)?.val_acc);
 *   const { model, mean } = await loadExportedModel('out/fmnist.model');
 *
 * Every option is bin/train's (README, "Options"), named as in camelCase (`--batch-size` → batchSize), with
 * the same defaults and rules; a broken rule rejects with a TrainpoolError of code 'USAGE' naming the
 * option as written here ("epochs must be an integer ≥ 1. Received: epochs=0"). The outputs (plot, history,
 * model, checkpoints) are written beside `output` as bin/train writes them.
 */
import type { BackendName } from './engine/backend.js';
import { discoverGpus } from './cli/gpus.js';
import { prepareRun, trainPrepared } from './cli/start.js';
import { OPTIONS, UsageError, type LogLevel, type OptionKey, type PresetName } from './config/config.js';
import { resolveConfig, type RawOptions } from './config/resolve.js';
import type { EpochRecord } from './coordinator/trainer.js';
import type { DatasetName } from './data/dataset.js';
import { loadExportedModel as loadFromDisk, type LoadedModel } from './model/export.js';
import type { ModelName } from './model/minigooglenet.js';

export { TrainpoolError, isTrainpoolError, type ErrorCode } from './util/errors.js';
export type { BackendName, DatasetName, EpochRecord, LoadedModel, LogLevel, ModelName };

/** bin/train's options (README, "Options"), camelCase. Only `output` is required. */
export interface TrainOptions {
  /** The plot's path (.png); history, model and checkpoints go beside it. */
  output: string;
  /** Worker processes, one per GPU; default every GPU found; 0 for CPU workers. */
  gpus?: number;
  /** CPU worker processes, with gpus 0 only; default 1. */
  workers?: number;
  dataset?: DatasetName;
  dataDir?: string;
  /** Fetch CIFAR-10 into dataDir when missing. */
  download?: boolean;
  epochs?: number;
  /** Initial learning rate, polynomial decay (power 1) by epoch. */
  lr?: number;
  /** Images per worker per step. */
  batchSize?: number;
  /** SGD momentum, Keras semantics. */
  momentum?: number;
  /** Seeds weights, shuffling, augmentation and dropout; default random. */
  seed?: number;
  backend?: BackendName;
  model?: ModelName;
  limitTrain?: number;
  limitTest?: number;
  /** Linear learning-rate scaling by the worker count with a warmup. */
  scaleLr?: boolean;
  augmentThreads?: number;
  checkpointDir?: string;
  /** Continue from the newest valid checkpoint. */
  resume?: boolean;
  /** Start afresh on an output that holds another run's files, removing them first. */
  overwrite?: boolean;
  /** Seconds a worker may take for one step. */
  stepTimeout?: number;
  /** false: train on the images as they are (no shift or flip). */
  augment?: boolean;
  /** Recompute the BN statistics from this many training batches before each validation (true: 200). */
  preciseBn?: number | boolean;
  /** Fill the options not given from a named set (config.ts PRESETS). */
  preset?: PresetName;
  logLevel?: LogLevel;
  logFile?: string;
}

// Every option of the command line but the CLI-only ones, and no other: a compile error when they drift apart.
type LibraryKey = { [K in OptionKey]: (typeof OPTIONS)[K] extends { cliOnly: true } ? never : K }[OptionKey];
const sameKeys: [LibraryKey, keyof TrainOptions] extends [keyof TrainOptions, LibraryKey] ? true : never = true;
void sameKeys;

export interface TrainCallbacks {
  /** Each human-readable line (header, epoch lines, outputs); default: printed to stdout, as bin/train does. */
  log?: (line: string) => void;
  /** Aborting stops the run at the next step boundary with a checkpoint; train() then resolves with the epochs done. */
  signal?: AbortSignal;
}

/** Trains as bin/train does and resolves with the history: one record per epoch (loss, acc, val_loss, val_acc, lr, seconds). */
export async function train(options: TrainOptions & TrainCallbacks): Promise<EpochRecord[]> {
  const { log = (line: string) => process.stdout.write(`${line}\n`), signal, ...given } = options;
  const raw: RawOptions = {};
  for (const [key, value] of Object.entries(given)) {
    const spec = OPTIONS[key as OptionKey] as (typeof OPTIONS)[OptionKey] | undefined;
    if (spec === undefined || 'cliOnly' in spec) throw new UsageError(`unknown option ${JSON.stringify(key)}; the options are ${libraryKeys().join(', ')}`);
    raw[key as OptionKey] = value;
  }
  const label = (key: OptionKey) => key;
  const config = resolveConfig({ raw, label, gpusFound: discoverGpus() });
  const result = await trainPrepared(await prepareRun(config, label), {
    out: log,
    warn: (line) => log(`warning: ${line}`),
    stopRequested: () => signal?.aborted === true,
  });
  return result.state.history;
}

function libraryKeys(): string[] {
  return Object.entries(OPTIONS)
    .filter(([, spec]) => !('cliOnly' in spec))
    .map(([key]) => key);
}

/**
 * Reads a model train() exported (`<stem>.model/`): the tfjs-layers model, the per-pixel mean that
 * inference subtracts first, the class names and the input shape. Works without tfjs-node: when no tfjs
 * backend is active yet, tfjs' JavaScript cpu backend is registered for it.
 */
export async function loadExportedModel(dir: string): Promise<LoadedModel> {
  await import('@tensorflow/tfjs-backend-cpu');
  return loadFromDisk(dir);
}
