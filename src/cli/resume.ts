/**
 * --resume: find the newest usable checkpoint and reconcile the command line with the run it came from.
 * Options that shape training (model, data, batch, workers, optimizer, epochs, seed) must match the
 * checkpoint: one given explicitly with another value is refused, naming both values; one left at its
 * default takes the checkpoint's value (so `bin/train --resume --output <same png>` continues the run,
 * including its seed, which by default is drawn at random).
 */
import { readFileSync } from 'node:fs';
import { flagOf, SHAPING_KEYS, UsageError, type OptionKey, type ResolvedConfig } from '../config/config.js';
import { newestValidCheckpoint, type NewestCheckpoint } from '../coordinator/checkpoint.js';
import { TrainpoolError } from '../util/errors.js';

/** The run id in a history JSON (run.ts writes it into its config), or undefined (none, unreadable, older). */
function historyRunId(file: string): string | undefined {
  try {
    const id = (JSON.parse(readFileSync(file, 'utf8')) as { config?: { run_id?: unknown } }).config?.run_id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

export interface Resumption {
  config: ResolvedConfig;
  checkpoint: NewestCheckpoint;
}

/** `label` names an option in messages: the command line's flag by default, the library's option name for train(). */
export function resolveResume(config: ResolvedConfig, label: (key: OptionKey) => string = flagOf): Resumption {
  const dir = config.outputs!.checkpointDir;
  const checkpoint = newestValidCheckpoint(dir);
  if (!checkpoint) throw new TrainpoolError('CHECKPOINT', `--resume found no checkpoint in ${dir}; run without --resume to start afresh`);
  const theirs = historyRunId(config.outputs!.historyJson);
  const mine = checkpoint.data.runId;
  if (theirs !== undefined && mine !== undefined && theirs !== mine) {
    // Files of two runs at one output (copied there by hand: a run refuses to start on another's): resuming
    // would write one run's epochs into the other's history.
    throw new TrainpoolError('CHECKPOINT', `--resume: ${checkpoint.file} is run ${mine}'s but the history ${config.outputs!.historyJson} is run ${theirs}'s; move one of them away or start afresh with --overwrite`);
  }
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
