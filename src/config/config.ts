/**
 * The run configuration, declared once: every option's flag, rule and help (OPTIONS), every default
 * (DEFAULTS), which options shape training (a resumed run must keep them) and which are shown in the
 * history and logs. The command line (cli/options.ts) and the library (src/index.ts) both resolve through
 * `resolveConfig` (resolve.ts), so they apply the same rules and defaults; what leaves here is a ResolvedConfig the rest
 * of the code trusts without re-checking (piscina's Options → filled options with one defaults constant).
 */
import { DATASET_NAMES, type DatasetName } from '../data/dataset.js';
import { BACKEND_NAMES, type BackendName } from '../engine/names.js';
import { MODEL_NAMES, type ModelName } from '../model/names.js';
import { TrainpoolError } from '../util/errors.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A GPU of this machine (cli/gpus.ts finds them). */
export interface Gpu {
  /** nvidia-smi's index: the GPU's place in PCI order among the machine's NVIDIA GPUs. */
  index: number;
  name: string;
  uuid?: string;
  /** As nvidia-smi writes it, e.g. 00000000:17:00.0; how a webgpu worker selects its GPU. */
  pciBusId?: string;
  /** NVIDIA GPUs on the machine, visible to the run or not: above 1, a webgpu worker must hide the others. */
  hostGpus?: number;
}

export function describeGpus(gpus: Gpu[]): string {
  return gpus.length === 0 ? 'none' : gpus.map((g) => `${g.index}: ${g.name}`).join('; ');
}

/** Every default of a run, the options' and the coordinator's own, in one table. */
export const DEFAULTS = {
  dataset: 'cifar10' as DatasetName,
  workers: 1,
  epochs: 70,
  lr: 0.005,
  batchSize: 64,
  momentum: 0.9,
  backend: 'auto' as BackendName,
  model: 'minigooglenet' as ModelName,
  augmentThreads: 2,
  /** Seconds a worker may take for one step (--step-timeout). */
  stepTimeoutS: 300,
  /** The first step of a process pays for shader compilation (webgpu) and lazy kernel setup. */
  firstStepTimeoutS: 600,
  /** Seconds for a worker's start-up: process, backend, model build, handshake. */
  workerStartTimeoutS: 120,
  /** Seconds host 0 waits for a lost host's replacement on a run of several hosts (--rejoin-timeout). */
  rejoinTimeoutS: 60,
  /** A rank that fails this many times in a row stops the run (coordinator/supervisor.ts). */
  maxConsecutiveFailures: 3,
  /** Epochs of linear warmup with --scale-lr (Goyal et al. 2017). */
  warmupEpochs: 5,
  /** Validation images per evaluate message. */
  evalChunk: 500,
  /** How many steps ahead the augmentation pool works. */
  prefetchSteps: 2,
  /** --precise-bn without a number: fvcore's and Detectron2's PreciseBN default (NUM_ITER 200). */
  preciseBnBatches: 200,
} as const;

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
  /** Replace another run's files at the output (cli/ownership.ts); never with `resume`. */
  overwrite: boolean;
  /** The options given explicitly (their OPTIONS keys), as opposed to defaults. */
  explicit: OptionKey[];
  /** Shift and flip training images (the tutorial's augmentation); false with --no-augment. */
  augment: boolean;
  /** --precise-bn: training batches the BN statistics are recomputed from before each validation; 0: off. */
  preciseBn: number;
  /** The --preset that filled the options not given, or null. */
  preset: PresetName | null;
  /** Per-step worker deadline in ms (the first step gets `firstStepTimeoutMs`). */
  stepTimeoutMs: number;
  firstStepTimeoutMs: number;
  /** Several hosts: how long a lost host's ranks wait for its replacement before the run stops (ms). */
  rejoinTimeoutMs: number;
  /** Several hosts: each host sends one gradient, its workers' mean (--host-reduce). */
  hostReduce: boolean;
}

export type Rule =
  | { kind: 'integer'; min: number; max?: number }
  /** An integer that may be left out after the flag: `--precise-bn` alone means `bare`. */
  | { kind: 'optionalInteger'; min: number; max: number; bare: number }
  | { kind: 'positive'; max?: number }
  | { kind: 'fraction' }
  | { kind: 'choice'; values: readonly string[] }
  | { kind: 'flag' }
  | { kind: 'text' };

export interface OptionSpec {
  /** The command line's flag, with its argument: '--batch-size <n>'. */
  flag: string;
  help: string;
  rule: Rule;
  /** Shown as the default in --help. */
  default?: string | number;
  /** Training depends on it: a resumed run must use the checkpoint's value (cli/resume.ts). */
  shapesTraining?: true;
  /** Its entries in the history JSON and the logs (the metrics' snake_case vocabulary). */
  show?: (c: ResolvedConfig) => Record<string, unknown>;
  /** The command line only: not an option of the library's train(). */
  cliOnly?: true;
}

const D = DEFAULTS;

const flagName = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** A preset's values as options: `--dataset fashion-mnist --model small …`. */
export function presetSummary(name: PresetName): string {
  return Object.entries(PRESETS[name].values)
    .map(([key, v]) => (v === false ? `--no-${flagName(key)}` : `--${flagName(key)}${v === true ? '' : ` ${String(v)}`}`))
    .join(' ');
}
/** The longest delay a Node timer holds, in whole seconds (2^31 − 1 ms). */
const MAX_TIMER_S = Math.floor((2 ** 31 - 1) / 1000);

/** An option's range as --help and the README show it, or '' for options without one. */
export function rangeOf(rule: Rule): string {
  if (rule.kind === 'integer') return rule.max === undefined ? `integer ≥ ${rule.min}` : `integer ${rule.min}–${rule.max}`;
  if (rule.kind === 'optionalInteger') return `integer ${rule.min}–${rule.max}; alone: ${rule.bare}`;
  if (rule.kind === 'positive') return rule.max === undefined ? 'number > 0' : `number in (0, ${rule.max}]`;
  if (rule.kind === 'fraction') return 'number in [0, 1)';
  return '';
}

export const PRESET_NAMES = ['quick'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

/**
 * Named sets of option values, for what a newcomer runs first. Options given explicitly win over a
 * preset's. `quick` is a demonstration that a model learns on real data in minutes on two CPU cores;
 * it is not the tutorial's recipe (MiniGoogLeNet on CIFAR-10 for 70 epochs, the defaults).
 */
export const PRESETS: Record<PresetName, { title: string; values: Partial<Record<OptionKey, string | number | boolean>> }> = {
  quick: {
    title: "a quick demonstration on Fashion-MNIST (the small model, 25,000 training images, no augmentation, precise BN, two CPU workers: about three minutes), not the tutorial's recipe",
    values: { dataset: 'fashion-mnist', model: 'small', gpus: 0, workers: 2, epochs: 2, lr: 0.05, batchSize: 16, limitTrain: 25000, augment: false, preciseBn: 64 },
  },
};

/** Every option, in --help order; the key is commander's attribute name, the library's option name, and the config's key where they coincide. */
export const OPTIONS = {
  output: { flag: '--output <png>', help: 'the training plot; history, model and checkpoints go beside it', rule: { kind: 'text' } },
  gpus: {
    flag: '--gpus <n>',
    help: 'worker processes, one per GPU (default: every GPU found; 0: CPU workers)',
    rule: { kind: 'integer', min: 0 },
    show: (c) => ({ gpus: c.gpus.map((g) => g.name) }),
  },
  workers: {
    flag: '--workers <n>',
    help: 'CPU worker processes when --gpus 0',
    rule: { kind: 'integer', min: 1, max: 256 },
    default: D.workers,
    shapesTraining: true,
    show: (c) => ({ workers: c.workers }),
  },
  dataset: {
    flag: '--dataset <name>',
    help: `data set: ${DATASET_NAMES.join(', ')}`,
    rule: { kind: 'choice', values: DATASET_NAMES },
    default: D.dataset,
    shapesTraining: true,
    show: (c) => ({ dataset: c.dataset }),
  },
  dataDir: {
    flag: '--data-dir <dir>',
    help: 'folder of the data set files (CIFAR-10: the batches folder or its parent; default $TRAINPOOL_DATA_DIR or ~/.cache/trainpool/datasets)',
    rule: { kind: 'text' },
  },
  download: { flag: '--download', help: 'fetch CIFAR-10 into --data-dir if it is missing', rule: { kind: 'flag' } },
  epochs: {
    flag: '--epochs <n>',
    help: 'epochs to train',
    rule: { kind: 'integer', min: 1, max: 100_000 },
    default: D.epochs,
    shapesTraining: true,
    show: (c) => ({ epochs: c.epochs }),
  },
  lr: {
    flag: '--lr <x>',
    help: 'initial learning rate (poly decay, power 1, per epoch)',
    rule: { kind: 'positive', max: 10 },
    default: D.lr,
    shapesTraining: true,
    show: (c) => ({ lr: c.lr }),
  },
  batchSize: {
    flag: '--batch-size <n>',
    help: 'images per worker per step',
    rule: { kind: 'integer', min: 1, max: 65_536 },
    default: D.batchSize,
    shapesTraining: true,
    show: (c) => ({ batch_size: c.batchSize, global_batch_size: c.batchSize * c.workers }),
  },
  momentum: {
    flag: '--momentum <x>',
    help: 'SGD momentum (Keras semantics)',
    rule: { kind: 'fraction' },
    default: D.momentum,
    shapesTraining: true,
    show: (c) => ({ momentum: c.momentum }),
  },
  seed: {
    flag: '--seed <n>',
    help: 'random seed for weights, shuffling, augmentation and dropout (default: random, printed)',
    rule: { kind: 'integer', min: 0, max: 2 ** 32 - 1 },
    shapesTraining: true,
    show: (c) => ({ seed: c.seed }),
  },
  backend: {
    flag: '--backend <name>',
    help: `compute backend: ${BACKEND_NAMES.join(', ')}`,
    rule: { kind: 'choice', values: BACKEND_NAMES },
    default: D.backend,
    show: (c) => ({ backend: c.backend }),
  },
  model: {
    flag: '--model <name>',
    help: `architecture: ${MODEL_NAMES.join(', ')}`,
    rule: { kind: 'choice', values: MODEL_NAMES },
    default: D.model,
    shapesTraining: true,
    show: (c) => ({ model: c.model }),
  },
  limitTrain: {
    flag: '--limit-train <n>',
    help: 'use only the first n training images',
    rule: { kind: 'integer', min: 1 },
    shapesTraining: true,
    show: (c) => ({ limit_train: c.limitTrain }),
  },
  limitTest: {
    flag: '--limit-test <n>',
    help: 'use only the first n test images',
    rule: { kind: 'integer', min: 0 },
    shapesTraining: true,
    show: (c) => ({ limit_test: c.limitTest }),
  },
  augment: {
    flag: '--no-augment',
    help: 'train on the images as they are: no shift or flip (default: the tutorial\'s width/height shift 0.1, horizontal flip, fill nearest)',
    rule: { kind: 'flag' },
    shapesTraining: true,
    show: (c) => ({ augment: c.augment }),
  },
  preciseBn: {
    flag: '--precise-bn [batches]',
    help: "before each validation, recompute BatchNormalization's statistics from this many training batches under the current weights (fvcore's PreciseBN; off: Keras' moving averages)",
    rule: { kind: 'optionalInteger', min: 1, max: 100_000, bare: D.preciseBnBatches },
    shapesTraining: true,
    show: (c) => ({ precise_bn: c.preciseBn }),
  },
  preset: {
    flag: '--preset <name>',
    help: `fill the options not given from a named set: ${PRESET_NAMES.map((n) => `${n} (${presetSummary(n)})`).join('; ')}`,
    rule: { kind: 'choice', values: PRESET_NAMES },
    show: (c) => ({ preset: c.preset }),
  },
  summary: { flag: '--summary', help: 'print the model summary and exit', rule: { kind: 'flag' }, cliOnly: true },
  scaleLr: {
    flag: '--scale-lr',
    help: `scale the learning rate by the number of workers, with a ${D.warmupEpochs}-epoch linear warmup (Goyal et al. 2017)`,
    rule: { kind: 'flag' },
    shapesTraining: true,
    show: (c) => ({ scale_lr: c.scaleLr }),
  },
  augmentThreads: {
    flag: '--augment-threads <n>',
    help: 'threads preparing augmented shards in the coordinator',
    rule: { kind: 'integer', min: 1, max: 64 },
    default: D.augmentThreads,
  },
  checkpointDir: { flag: '--checkpoint-dir <dir>', help: 'where checkpoints go (default: <output stem>.checkpoints/)', rule: { kind: 'text' } },
  resume: { flag: '--resume', help: 'continue from the newest valid checkpoint', rule: { kind: 'flag' } },
  overwrite: {
    flag: '--overwrite',
    help: "start afresh on an --output that holds another run's files (its checkpoints, history, plot and model are removed first)",
    rule: { kind: 'flag' },
  },
  stepTimeout: {
    flag: '--step-timeout <s>',
    help: 'seconds a worker may take for one step before it is replaced',
    // Node's timers hold at most 2^31 − 1 ms; a longer delay fires after 1 ms.
    rule: { kind: 'positive', max: MAX_TIMER_S },
    default: D.stepTimeoutS,
  },
  rejoinTimeout: {
    flag: '--rejoin-timeout <s>',
    help: "several hosts: seconds host 0 waits for a lost host's replacement (its launcher restarts it) before it stops with a checkpoint",
    rule: { kind: 'positive', max: MAX_TIMER_S },
    default: D.rejoinTimeoutS,
    // The library's train() runs on one host.
    cliOnly: true,
  },
  hostReduce: {
    flag: '--host-reduce',
    help: "several hosts: each host sends the mean of its workers' gradients, not each one (host 0 receives 1/N of the bytes; close to, not bit-identical with, one host's run)",
    rule: { kind: 'flag' },
    cliOnly: true,
  },
  logLevel: {
    flag: '--log-level <level>',
    help: `pino log level: ${LOG_LEVELS.join(', ')} (default: info with --log-file, warn on stderr)`,
    rule: { kind: 'choice', values: LOG_LEVELS },
  },
  logFile: { flag: '--log-file <path>', help: 'write JSON logs here instead of stderr', rule: { kind: 'text' } },
} as const satisfies Record<string, OptionSpec>;

export type OptionKey = keyof typeof OPTIONS;
export const OPTION_KEYS = Object.keys(OPTIONS) as OptionKey[];
const spec = (key: OptionKey): OptionSpec => OPTIONS[key];

/** The options that shape training, and so a checkpoint's config: derived from OPTIONS. */
export type ShapingKey = { [K in OptionKey]: (typeof OPTIONS)[K] extends { shapesTraining: true } ? K : never }[OptionKey];
export const SHAPING_KEYS = OPTION_KEYS.filter((k) => spec(k).shapesTraining) as ShapingKey[];
export type ShapingConfig = Pick<ResolvedConfig, ShapingKey>;

/** The options a resumed run must keep (cli/resume.ts), as they go into a checkpoint. */
export function shapingConfig(config: ResolvedConfig): ShapingConfig {
  return Object.fromEntries(SHAPING_KEYS.map((k) => [k, config[k]])) as ShapingConfig;
}

/** The configuration as it goes into the history JSON and the logs. */
export function publicConfig(config: ResolvedConfig): Record<string, unknown> {
  return Object.assign({}, ...OPTION_KEYS.map((k) => spec(k).show?.(config) ?? {}));
}

/** The long flag of an option, for messages: '--batch-size'. */
export function flagOf(key: OptionKey): string {
  return spec(key).flag.split(' ')[0];
}

/** A broken rule of the run's options: one line, exit code 2. */
export class UsageError extends TrainpoolError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

