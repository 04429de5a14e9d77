/**
 * --resume: find the newest usable checkpoint and reconcile the command line with the run it came from.
 * Options that shape training (model, data, batch, workers, optimizer, epochs, seed) must match the
 * checkpoint: one given explicitly with another value is refused, naming both values; one left at its
 * default takes the checkpoint's value (so `bin/train --resume --output <same png>` continues the run,
 * including its seed, which by default is drawn at random).
 */
import { flagOf, SHAPING_KEYS, UsageError, type OptionKey, type ResolvedConfig } from '../config/config.js';
import { newestValidCheckpoint, type NewestCheckpoint } from '../coordinator/checkpoint.js';
import { TrainpoolError } from '../util/errors.js';

export interface Resumption {
  config: ResolvedConfig;
  checkpoint: NewestCheckpoint;
}

/** `label` names an option in messages: the command line's flag by default, the library's option name for train(). */
export function resolveResume(config: ResolvedConfig, label: (key: OptionKey) => string = flagOf): Resumption {
  const dir = config.outputs!.checkpointDir;
  const checkpoint = newestValidCheckpoint(dir);
  if (!checkpoint) throw new TrainpoolError('CHECKPOINT', `--resume found no checkpoint in ${dir}; run without --resume to start afresh`);
  const saved = checkpoint.data.config;
  const merged: Record<string, unknown> = { ...config };
  const conflicts: string[] = [];
  for (const key of SHAPING_KEYS) {
    const mine = config[key];
    if (mine === saved[key]) continue;
    // Workers follow from --gpus as well as --workers.
    const explicit = config.explicit.includes(key) || (key === 'workers' && (config.explicit.includes('gpus') || config.gpus.length > 0));
    if (explicit) conflicts.push(`${label(key)} ${String(mine)} (the checkpoint has ${String(saved[key])})`);
    else merged[key] = saved[key];
  }
  if (conflicts.length) {
    throw new UsageError(`--resume: the checkpoint in ${dir} was trained with other settings: ${conflicts.join(', ')}; pass the checkpoint's values or start afresh`);
  }
  return { config: merged as unknown as ResolvedConfig, checkpoint };
}
