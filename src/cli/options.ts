/**
 * The command line, resolved once: commander parses, this module validates every rule and fills every
 * default, and what leaves here is a ResolvedConfig the rest of the code trusts without re-checking.
 * Everything checkable before training starts is checked here or in preflight.ts, never at the end.
 */
import { Command, CommanderError, Option } from 'commander';
import os from 'node:os';
import path from 'node:path';
import { DATASET_NAMES, type DatasetName } from '../data/dataset.js';
import type { LoadOptions } from '../data/load.js';
import { BACKEND_NAMES, type BackendName } from '../model/backend.js';
import { MODEL_NAMES, type ModelName } from '../model/minigooglenet.js';
import { TrainpoolError } from '../util/errors.js';
import { describeGpus, type Gpu } from './gpus.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface OutputPaths {
  png: string;
  historyJson: string;
  historyCsv: string;
  modelDir: string;
  checkpointDir: string;
}

export interface ResolvedConfig {
  /** null only with --summary. */
  outputs: OutputPaths | null;
  /** GPUs used, one worker process each; empty for CPU workers. */
  gpus: Gpu[];
  /** Worker processes: one per GPU, or --workers CPU workers. */
  workers: number;
  dataset: DatasetName;
  dataDir: string | null;
  download: boolean;
  epochs: number;
  lr: number;
  batchSize: number;
  momentum: number;
  seed: number;
  /** As asked; `auto` is resolved by each worker (and reported back). */
  backend: BackendName;
  model: ModelName;
  limitTrain: number | null;
  limitTest: number | null;
  summary: boolean;
  scaleLr: boolean;
  warmupEpochs: number;
  logLevel: LogLevel;
  logFile: string | null;
  augmentThreads: number;
  resume: boolean;
  /** The options given on the command line (commander's camelCase names), as opposed to defaults. */
  explicit: string[];
  /** Per-step worker deadline in ms (the first step gets `firstStepTimeoutMs`). */
  stepTimeoutMs: number;
  firstStepTimeoutMs: number;
}

/** A usage error: one line, exit code 2. */
export class UsageError extends TrainpoolError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

export function buildCommand(): Command {
  return new Command('train')
    .description('Train an image classifier with data parallelism: one worker process per GPU.')
    .addOption(new Option('--output <png>', 'the training plot; history, model and checkpoints go beside it'))
    .addOption(new Option('--gpus <n>', 'worker processes, one per GPU (default: every GPU found; 0: CPU workers)'))
    .addOption(new Option('--workers <n>', 'CPU worker processes when --gpus 0').default('1'))
    .addOption(new Option('--dataset <name>', `data set: ${DATASET_NAMES.join(', ')}`).default('cifar10'))
    .addOption(new Option('--data-dir <dir>', 'folder of the data set files (CIFAR-10: the batches folder or its parent; default $TRAINPOOL_DATA_DIR or ~/.cache/trainpool/datasets)'))
    .addOption(new Option('--download', 'fetch CIFAR-10 into --data-dir if it is missing'))
    .addOption(new Option('--epochs <n>', 'epochs to train').default('70'))
    .addOption(new Option('--lr <x>', 'initial learning rate (poly decay, power 1, per epoch)').default('0.005'))
    .addOption(new Option('--batch-size <n>', 'images per worker per step').default('64'))
    .addOption(new Option('--momentum <x>', 'SGD momentum (Keras semantics)').default('0.9'))
    .addOption(new Option('--seed <n>', 'random seed for weights, shuffling, augmentation and dropout (default: random, printed)'))
    .addOption(new Option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(', ')}`).default('auto'))
    .addOption(new Option('--model <name>', `architecture: ${MODEL_NAMES.join(', ')}`).default('minigooglenet'))
    .addOption(new Option('--limit-train <n>', 'use only the first n training images'))
    .addOption(new Option('--limit-test <n>', 'use only the first n test images'))
    .addOption(new Option('--summary', 'print the model summary and exit'))
    .addOption(new Option('--scale-lr', 'scale the learning rate by the number of workers, with a 5-epoch linear warmup (Goyal et al. 2017)'))
    .addOption(new Option('--augment-threads <n>', 'threads preparing augmented shards in the coordinator').default('2'))
    .addOption(new Option('--checkpoint-dir <dir>', 'where checkpoints go (default: <output stem>.checkpoints/)'))
    .addOption(new Option('--resume', 'continue from the newest valid checkpoint'))
    .addOption(new Option('--step-timeout <s>', 'seconds a worker may take for one step before it is replaced').default('300'))
    .addOption(new Option('--log-level <level>', `pino log level: ${LOG_LEVELS.join(', ')} (default: info with --log-file, warn on stderr)`))
    .addOption(new Option('--log-file <path>', 'write JSON logs here instead of stderr'))
    .helpOption('-h, --help', 'show this help')
    .allowExcessArguments(false)
    .exitOverride()
    // main() prints help and errors itself, once and in its own format.
    .configureOutput({ writeOut: () => {}, writeErr: () => {} });
}

type Raw = Record<string, string | boolean | undefined>;

/** Parses argv (without node and script) into a ResolvedConfig, or throws UsageError. */
export function parseArgs(argv: string[], gpusFound: Gpu[]): ResolvedConfig | 'help' {
  const command = buildCommand();
  try {
    command.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help') return 'help';
      throw new UsageError(e.message.replace(/^error: /, ''));
    }
    throw e;
  }
  const given = (name: string) => command.getOptionValueSource(name) === 'cli';
  const config = resolve(command.opts() as Raw, given, gpusFound);
  config.explicit = command.options.map((o) => o.attributeName()).filter(given);
  return config;
}

export function helpText(): string {
  return buildCommand().helpInformation();
}

function resolve(raw: Raw, given: (name: string) => boolean, gpusFound: Gpu[]): ResolvedConfig {
  // commander stores --limit-train as limitTrain.
  const str = (k: string) => raw[k.replace(/-(\w)/g, (_, c: string) => c.toUpperCase())] as string | undefined;
  const summary = raw.summary === true;
  const output = str('output');
  if (!summary && !output) throw new UsageError('--output is required: the path of the PNG plot, e.g. --output plot.png');
  if (output !== undefined && path.extname(output).toLowerCase() !== '.png') {
    throw new UsageError(`--output must be a .png path. Received: --output=${output}`);
  }

  const dataset = oneOf('--dataset', str('dataset')!, DATASET_NAMES);
  const backend = oneOf('--backend', str('backend')!, BACKEND_NAMES);
  const model = oneOf('--model', str('model')!, MODEL_NAMES);
  // JSON logs on stderr would interleave with the epoch lines on a terminal: there, only warnings by default.
  const logLevel = oneOf('--log-level', str('log-level') ?? (str('log-file') ? 'info' : 'warn'), LOG_LEVELS);

  const gpuCount = str('gpus') === undefined ? gpusFound.length : integer('--gpus', str('gpus')!, 0);
  if (gpuCount > gpusFound.length) {
    throw new UsageError(`--gpus ${gpuCount} asks for more GPUs than this machine has. Found ${gpusFound.length}: ${describeGpus(gpusFound)}`);
  }
  if (gpuCount > 0 && (backend === 'wasm' || backend === 'cpu')) {
    throw new UsageError(`--backend ${backend} runs on the CPU: use --gpus 0 --workers <n> with it, or a GPU backend (webgpu, tensorflow) with --gpus ${gpuCount}`);
  }
  if (gpuCount > 0 && given('workers')) {
    // --workers only means something for CPU workers; silently ignoring it would surprise.
    throw new UsageError(`--workers applies to --gpus 0 only; with --gpus ${gpuCount} there is one worker per GPU`);
  }
  const workers = gpuCount > 0 ? gpuCount : integer('--workers', str('workers')!, 1);

  if (raw.download === true && dataset !== 'cifar10') {
    throw new UsageError(`--download fetches CIFAR-10 only. Received: --dataset=${dataset}`);
  }

  const stem = output ? output.slice(0, -path.extname(output).length) : null;
  const outputs: OutputPaths | null = stem
    ? {
        png: path.resolve(output!),
        historyJson: path.resolve(`${stem}.history.json`),
        historyCsv: path.resolve(`${stem}.history.csv`),
        modelDir: path.resolve(`${stem}.model`),
        checkpointDir: path.resolve(str('checkpoint-dir') ?? `${stem}.checkpoints`),
      }
    : null;

  return {
    outputs,
    gpus: gpusFound.slice(0, gpuCount),
    workers,
    dataset,
    dataDir: str('data-dir') ? path.resolve(str('data-dir')!) : dataset === 'cifar10' ? defaultDataDir() : null,
    download: raw.download === true,
    epochs: integer('--epochs', str('epochs')!, 1),
    lr: positiveNumber('--lr', str('lr')!),
    batchSize: integer('--batch-size', str('batch-size')!, 1),
    momentum: fraction('--momentum', str('momentum')!),
    seed: str('seed') === undefined ? Math.floor(Math.random() * 2 ** 31) : integer('--seed', str('seed')!, 0, 2 ** 32 - 1),
    backend: gpuCount === 0 && backend === 'auto' ? 'wasm' : backend,
    model,
    limitTrain: str('limit-train') === undefined ? null : integer('--limit-train', str('limit-train')!, 1),
    limitTest: str('limit-test') === undefined ? null : integer('--limit-test', str('limit-test')!, 0),
    summary,
    scaleLr: raw.scaleLr === true,
    warmupEpochs: 5,
    logLevel,
    logFile: str('log-file') ? path.resolve(str('log-file')!) : null,
    augmentThreads: integer('--augment-threads', str('augment-threads')!, 1, 64),
    resume: raw.resume === true,
    explicit: [],
    stepTimeoutMs: positiveNumber('--step-timeout', str('step-timeout')!) * 1000,
    // Shader compilation (webgpu) and lazy kernel setup make the first step much slower than the rest.
    firstStepTimeoutMs: Math.max(600_000, positiveNumber('--step-timeout', str('step-timeout')!) * 1000),
  };
}

/** What the data set readers need from the configuration. */
export function datasetOptions(config: ResolvedConfig): LoadOptions {
  return {
    name: config.dataset,
    dataDir: config.dataDir ?? undefined,
    limitTrain: config.limitTrain ?? undefined,
    limitTest: config.limitTest ?? undefined,
    seed: config.seed,
    download: config.download,
  };
}

/**
 * Where CIFAR-10 lives when --data-dir is not given: $TRAINPOOL_DATA_DIR (the Docker image sets /data),
 * else ~/.cache/trainpool/datasets (Keras keeps it in ~/.keras/datasets).
 */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TRAINPOOL_DATA_DIR) return path.resolve(env.TRAINPOOL_DATA_DIR);
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'trainpool', 'datasets');
}

function oneOf<T extends string>(option: string, value: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new UsageError(`${option} must be one of ${allowed.join(', ')}. Received: ${option}=${value}`);
  }
  return value as T;
}

function integer(option: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const rule = max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
    throw new UsageError(`${option} must be ${rule}. Received: ${option}=${value}`);
  }
  return n;
}

function positiveNumber(option: string, value: string): number {
  const n = /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(value) ? Number(value) : Number.NaN;
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${option} must be a number > 0. Received: ${option}=${value}`);
  return n;
}

function fraction(option: string, value: string): number {
  const n = /^\s*(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(value) ? Number(value) : Number.NaN;
  if (!Number.isFinite(n) || n < 0 || n >= 1) throw new UsageError(`${option} must be a number in [0, 1). Received: ${option}=${value}`);
  return n;
}
