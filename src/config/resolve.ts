/**
 * From raw option values to a ResolvedConfig: every rule checked, every default filled (config.ts
 * declares them). The command line gives strings (cli/options.ts), the library typed values (src/index.ts);
 * both come here, so they obey the same rules and name an option the way their user wrote it.
 */
import os from 'node:os';
import path from 'node:path';
import type { BackendName } from '../engine/backend.js';
import type { DatasetName } from '../data/dataset.js';
import type { LoadOptions } from '../data/load.js';
import type { ModelName } from '../model/minigooglenet.js';
import {
  DEFAULTS,
  describeGpus,
  rangeOf,
  OPTION_KEYS,
  OPTIONS,
  PRESETS,
  type PresetName,
  UsageError,
  type Gpu,
  type LogLevel,
  type OptionKey,
  type OptionSpec,
  type OutputPaths,
  type ResolvedConfig,
  type Rule,
} from './config.js';

const spec = (key: OptionKey): OptionSpec => OPTIONS[key];

/** Raw option values: the command line's strings and booleans, or the library's typed values. */
export type RawOptions = Partial<Record<OptionKey, unknown>>;

export interface ConfigSource {
  raw: RawOptions;
  /** How messages name an option: the command line's flag, or the library's option name. */
  label(key: OptionKey): string;
  /** This machine's GPUs (cli/gpus.ts discoverGpus). */
  gpusFound: Gpu[];
}

/** Checks every rule and fills every default; throws UsageError naming the option, the rule and the value. */
export function resolveConfig({ raw, label, gpusFound }: ConfigSource): ResolvedConfig {
  const given = (k: OptionKey) => raw[k] !== undefined;
  const presetName = given('preset') ? oneOf<PresetName>(label('preset'), raw.preset, Object.keys(PRESETS) as PresetName[]) : null;
  const preset: Partial<Record<OptionKey, unknown>> = presetName ? PRESETS[presetName].values : {};
  // Given explicitly, or by the preset: either way asked for, not a default (a resumed run compares them).
  const asked = (k: OptionKey) => given(k) || preset[k] !== undefined;
  const value = <K extends OptionKey>(k: K): unknown => (given(k) ? raw[k] : (preset[k] ?? spec(k).default));
  const parse = (k: OptionKey): number => number(label(k), value(k), spec(k).rule);
  const choice = <T extends string>(k: OptionKey, v = value(k)): T => {
    const rule = spec(k).rule;
    if (rule.kind !== 'choice') throw new Error(`option ${k} is not a choice (rule ${rule.kind}): this is a bug`);
    return oneOf(label(k), v, rule.values as readonly T[]);
  };
  const flag = (k: OptionKey): boolean => {
    const v = value(k);
    if (v !== undefined && typeof v !== 'boolean') throw new UsageError(`${label(k)} must be true or false. Received: ${label(k)}=${String(v)}`);
    return v === true;
  };
  const text = (k: OptionKey): string | undefined => {
    const v = value(k);
    if (v !== undefined && (typeof v !== 'string' || v === '')) throw new UsageError(`${label(k)} must be a non-empty path. Received: ${label(k)}=${String(v)}`);
    return v as string | undefined;
  };

  const summary = flag('summary');
  const output = text('output');
  if (!summary && !output) throw new UsageError(`${label('output')} is required: the path of the PNG plot, e.g. ${label('output')} plot.png`);
  if (output !== undefined && /[\\/]$/.test(output)) {
    throw new UsageError(`${label('output')} must name a file, not a folder. Received: ${label('output')}=${output}`);
  }
  if (output !== undefined && path.extname(output).toLowerCase() !== '.png') {
    throw new UsageError(`${label('output')} must be a .png path. Received: ${label('output')}=${output}`);
  }

  const dataset = choice<DatasetName>('dataset');
  const backend = choice<BackendName>('backend');
  const model = choice<ModelName>('model');
  // JSON logs on stderr would interleave with the epoch lines on a terminal: there, only warnings by default.
  const logLevel = choice<LogLevel>('logLevel', value('logLevel') ?? (text('logFile') ? 'info' : 'warn'));

  const gpuCount = asked('gpus') ? parse('gpus') : gpusFound.length;
  if (gpuCount > gpusFound.length) {
    throw new UsageError(`${label('gpus')} ${gpuCount} asks for more GPUs than this machine has. Found ${gpusFound.length}: ${describeGpus(gpusFound)}`);
  }
  if (gpuCount > 0 && (backend === 'wasm' || backend === 'cpu')) {
    throw new UsageError(
      `${label('backend')} ${backend} runs on the CPU: use ${label('gpus')} 0 ${label('workers')} <n> with it, or a GPU backend (webgpu, tensorflow) with ${label('gpus')} ${gpuCount}`,
    );
  }
  if (gpuCount > 0 && given('workers')) {
    // --workers only means something for CPU workers; silently ignoring it would surprise.
    throw new UsageError(`${label('workers')} applies to ${label('gpus')} 0 only; with ${label('gpus')} ${gpuCount} there is one worker per GPU`);
  }
  const workers = gpuCount > 0 ? gpuCount : parse('workers');

  if (flag('download') && dataset !== 'cifar10') {
    throw new UsageError(`${label('download')} fetches CIFAR-10 only. Received: ${label('dataset')}=${dataset}`);
  }

  if (flag('resume') && flag('overwrite')) {
    throw new UsageError(`${label('resume')} continues the run at the output and ${label('overwrite')} replaces it: give one of them`);
  }
  const stem = output ? output.slice(0, -path.extname(output).length) : null;
  const outputs: OutputPaths | null = stem
    ? {
        png: path.resolve(output!),
        historyJson: path.resolve(`${stem}.history.json`),
        historyCsv: path.resolve(`${stem}.history.csv`),
        modelDir: path.resolve(`${stem}.model`),
        checkpointDir: path.resolve(text('checkpointDir') ?? `${stem}.checkpoints`),
      }
    : null;
  const dataDir = text('dataDir');
  const logFile = text('logFile');
  const stepTimeoutMs = parse('stepTimeout') * 1000;

  return {
    outputs,
    gpus: gpusFound.slice(0, gpuCount),
    workers,
    dataset,
    dataDir: dataDir ? path.resolve(dataDir) : dataset === 'cifar10' ? defaultDataDir() : null,
    download: flag('download'),
    epochs: parse('epochs'),
    lr: parse('lr'),
    batchSize: parse('batchSize'),
    momentum: parse('momentum'),
    seed: asked('seed') ? parse('seed') : Math.floor(Math.random() * 2 ** 31),
    backend: gpuCount === 0 && backend === 'auto' ? 'wasm' : backend,
    model,
    limitTrain: asked('limitTrain') ? parse('limitTrain') : null,
    limitTest: asked('limitTest') ? parse('limitTest') : null,
    summary,
    scaleLr: flag('scaleLr'),
    warmupEpochs: DEFAULTS.warmupEpochs,
    logLevel,
    logFile: logFile ? path.resolve(logFile) : null,
    augmentThreads: parse('augmentThreads'),
    resume: flag('resume'),
    overwrite: flag('overwrite'),
    // --no-augment: commander gives augment false; absent, it is on.
    augment: value('augment') === undefined || flag('augment'),
    preciseBn: preciseBatches(label('preciseBn'), value('preciseBn')),
    preset: presetName,
    explicit: OPTION_KEYS.filter(asked),
    stepTimeoutMs,
    firstStepTimeoutMs: Math.max(DEFAULTS.firstStepTimeoutS * 1000, stepTimeoutMs),
    rejoinTimeoutMs: parse('rejoinTimeout') * 1000,
    hostReduce: flag('hostReduce'),
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

/** --precise-bn: off when absent, its rule's `bare` count when given alone, else a count in range. */
function preciseBatches(option: string, v: unknown): number {
  const rule = OPTIONS.preciseBn.rule;
  if (v === undefined || v === false) return 0;
  if (v === true) return rule.bare;
  return number(option, v, { kind: 'integer', min: rule.min, max: rule.max });
}

function oneOf<T extends string>(option: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new UsageError(`${option} must be one of ${allowed.join(', ')}. Received: ${option}=${String(value)}`);
  }
  return value as T;
}

/** A number option's value under its rule; the command line gives strings, the library numbers (or strings). */
function number(option: string, value: unknown, rule: Rule): number {
  const text = String(value);
  const parsed = (pattern: RegExp) => (typeof value === 'number' ? value : typeof value === 'string' && pattern.test(value) ? Number(value) : Number.NaN);
  switch (rule.kind) {
    case 'integer': {
      const { min, max = Number.MAX_SAFE_INTEGER } = rule;
      const n = parsed(/^\s*\d+\s*$/);
      if (!Number.isSafeInteger(n) || n < min || n > max) {
        const what = max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
        throw new UsageError(`${option} must be ${what}. Received: ${option}=${text}`);
      }
      return n;
    }
    case 'positive': {
      const n = parsed(/^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i);
      if (!Number.isFinite(n) || n <= 0 || (rule.max !== undefined && n > rule.max)) throw new UsageError(`${option} must be a ${rangeOf(rule)}. Received: ${option}=${text}`);
      return n;
    }
    case 'fraction': {
      const n = parsed(/^\s*(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i);
      if (!Number.isFinite(n) || n < 0 || n >= 1) throw new UsageError(`${option} must be a number in [0, 1). Received: ${option}=${text}`);
      return n;
    }
    default:
      throw new Error(`option ${option} is not a number option (rule ${rule.kind}): this is a bug`);
  }
}
