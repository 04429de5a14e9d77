/**
 * What bin/train (main.ts) and the library's train() (src/index.ts) both do once the options are resolved,
 * in the same order: reconcile --resume with its checkpoint and check everything checkable (prepareRun),
 * then open the log and train (trainPrepared). They differ only in how they print and how they are stopped
 * (signals, an AbortSignal), which they pass in.
 */
import pino from 'pino';
import { flagOf, type OptionKey, type ResolvedConfig } from '../config/config.js';
import type { CheckpointData } from '../coordinator/checkpoint.js';
import { runTraining, type RunResult } from '../coordinator/run.js';
import { preflight } from './preflight.js';
import { resolveResume } from './resume.js';

export interface PreparedRun {
  /** The configuration, with a resumed run's options taken from its checkpoint. */
  config: ResolvedConfig;
  checkpoint: CheckpointData | null;
  /** Newer checkpoints that --resume skipped, each with the reason. */
  skipped: string[];
}

/** `label` names options in messages: the command line's flags, or the library's option names. */
export async function prepareRun(config: ResolvedConfig, label: (key: OptionKey) => string = flagOf): Promise<PreparedRun> {
  const resume = config.resume ? resolveResume(config, label) : null;
  const prepared = { config: resume?.config ?? config, checkpoint: resume?.checkpoint.data ?? null, skipped: resume?.checkpoint.skipped ?? [] };
  await preflight(prepared.config);
  return prepared;
}

export interface TrainIO {
  /** Human-readable lines: the run's header, epoch lines, where the outputs went. */
  out(line: string): void;
  /** A warning line (a skipped checkpoint), also logged. */
  warn(line: string): void;
  /** Polled between steps: true stops the run at the next step boundary, with a checkpoint. */
  stopRequested(): boolean;
}

export async function trainPrepared(run: PreparedRun, io: TrainIO): Promise<RunResult> {
  const { config } = run;
  const logger = pino(
    { level: config.logLevel, base: { pid: process.pid } },
    config.logFile ? pino.destination({ dest: config.logFile, sync: true }) : pino.destination(2),
  );
  try {
    for (const why of run.skipped) {
      io.warn(`skipped ${why}`);
      logger.warn({ skipped: why }, 'checkpoint skipped');
    }
    return await runTraining(config, { out: io.out, logger, stopRequested: io.stopRequested }, run.checkpoint);
  } finally {
    logger.flush();
  }
}
