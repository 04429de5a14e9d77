/**
 * --resume: find the newest usable checkpoint and reconcile the command line with the run it came from.
 * Options that shape training (model, data, batch, workers, optimizer, epochs, seed) must match the
 * checkpoint: one given explicitly with another value is refused, naming both values; one left at its
 * default takes the checkpoint's value (so `bin/train --resume --output <same png>` continues the run,
 * including its seed, which by default is drawn at random).
 */
import { newestValidCheckpoint, type NewestCheckpoint } from '../coordinator/checkpoint.js';
import { TrainpoolError } from '../util/errors.js';
import { UsageError, type ResolvedConfig } from './options.js';

/** Config key → the option that sets it (commander's attribute name, and the flag for messages). */
const SHAPING: Record<string, { attribute: string; flag: string }> = {
  model: { attribute: 'model', flag: '--model' },
  dataset: { attribute: 'dataset', flag: '--dataset' },
  batchSize: { attribute: 'batchSize', flag: '--batch-size' },
  workers: { attribute: 'workers', flag: '--workers' },
  lr: { attribute: 'lr', flag: '--lr' },
  epochs: { attribute: 'epochs', flag: '--epochs' },
  momentum: { attribute: 'momentum', flag: '--momentum' },
  seed: { attribute: 'seed', flag: '--seed' },
  scaleLr: { attribute: 'scaleLr', flag: '--scale-lr' },
  limitTrain: { attribute: 'limitTrain', flag: '--limit-train' },
  limitTest: { attribute: 'limitTest', flag: '--limit-test' },
};

export interface Resumption {
  config: ResolvedConfig;
  checkpoint: NewestCheckpoint;
}

export function resolveResume(config: ResolvedConfig): Resumption {
  const dir = config.outputs!.checkpointDir;
  const checkpoint = newestValidCheckpoint(dir);
  if (!checkpoint) throw new TrainpoolError('CHECKPOINT', `--resume found no checkpoint in ${dir}; run without --resume to start afresh`);
  const saved = checkpoint.data.config;
  const merged: Record<string, unknown> = { ...config };
  const conflicts: string[] = [];
  for (const [key, { attribute, flag }] of Object.entries(SHAPING)) {
    const mine = (config as unknown as Record<string, unknown>)[key];
    if (mine === saved[key]) continue;
    // Workers follow from --gpus as well as --workers.
    const explicit = config.explicit.includes(attribute) || (key === 'workers' && (config.explicit.includes('gpus') || config.gpus.length > 0));
    if (explicit) conflicts.push(`${flag} ${String(mine)} (the checkpoint has ${String(saved[key])})`);
    else merged[key] = saved[key];
  }
  if (conflicts.length) {
    throw new UsageError(`--resume: the checkpoint in ${dir} was trained with other settings: ${conflicts.join(', ')}; pass the checkpoint's values or start afresh`);
  }
  return { config: merged as unknown as ResolvedConfig, checkpoint };
}
