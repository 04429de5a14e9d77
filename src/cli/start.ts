/**
 * What bin/train (main.ts) and the library's train() (src/index.ts) both do once the options are resolved,
 * in the same order: reconcile --resume with its checkpoint and check everything checkable (prepareRun),
 * then open the log and train (trainPrepared). They differ only in how they print and how they are stopped
 * (signals, an AbortSignal), which they pass in.
 */
import pino from 'pino';
import { fsCause, writeFailed } from '../util/files.js';
import { flagOf, type OptionKey, type ResolvedConfig } from '../config/config.js';
import { clusterFromEnv, describeCluster, LaunchError, type Cluster } from '../config/cluster.js';
import { hostSecret, serverTls } from './hosts.js';
import type { NewestCheckpoint } from '../coordinator/checkpoint.js';
import { runTraining, type RunResult } from '../coordinator/run.js';
import type { OutputLock } from '../coordinator/output-lock.js';
import { claimOutput } from './ownership.js';
import { preflight } from './preflight.js';
import { resolveResume } from './resume.js';

export interface PreparedRun {
  /** The configuration, with a resumed run's options taken from its checkpoint. */
  config: ResolvedConfig;
  /** The checkpoint --resume continues from (its file, data and the newer ones it skipped), or null. */
  resumed: NewestCheckpoint | null;
  /** The run's id: new, or the resumed checkpoint's (checkpoint.ts). */
  runId: string;
  /** The output's lock, held until trainPrepared returns (coordinator/output-lock.ts). */
  lock: OutputLock;
  /** A run on several hosts, this one host 0: the launcher's contract, the shared secret, TLS if asked for. */
  hosts?: { cluster: Cluster; secret: Buffer; tls?: { cert: Buffer; key: Buffer } };
}

/** `label` names options in messages: the command line's flags, or the library's option names. */
/**
 * `cluster`: the launcher's contract, read by bin/train (cli/main.ts); host 0 of several hosts gets their
 * secret checked here. Without one (the library's train()), a launcher's several hosts are refused: every
 * host would train a model of its own into its own files.
 */
export async function prepareRun(config: ResolvedConfig, label: (key: OptionKey) => string = flagOf, cluster?: Cluster): Promise<PreparedRun> {
  const hosts = cluster ?? clusterFromEnv(process.env);
  if (hosts.nodes > 1 && !cluster) {
    throw new LaunchError(`train() runs on one host; this is ${describeCluster(hosts, config.workers)}: run bin/train on every host instead`);
  }
  if (hosts.nodeRank > 0) throw new Error(`host ${hosts.nodeRank} prepares no run of its own (cli/hosts.ts runHost): this is a bug`);
  // Before the output is claimed: a missing secret is a refusal, not a run that cannot take its hosts.
  const secret = hosts.nodes > 1 ? hostSecret(hosts, process.env) : null;
  const tls = hosts.nodes > 1 ? serverTls(process.env) : null;
  // The output first: nothing is read from it, let alone removed, while another run may be writing there.
  const claim = claimOutput(config);
  try {
    const resume = config.resume ? resolveResume(config, label) : null;
    if (!resume) claim.checkFresh();
    const prepared = { config: resume?.config ?? config, resumed: resume?.checkpoint ?? null };
    await preflight(prepared.config);
    // Only now that the run will start: --overwrite never removes a run's files for a run that is refused.
    if (config.overwrite) claim.clearOtherRun();
    return { ...prepared, runId: resume?.checkpoint.data.runId ?? claim.runId, lock: claim.lock, ...(secret ? { hosts: { cluster: hosts, secret, ...(tls ? { tls } : {}) } } : {}) };
  } catch (e) {
    claim.abandon();
    throw e;
  }
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
  try {
    const logger = pino({ level: config.logLevel, base: { pid: process.pid } }, logDestination(config.logFile, io));
    try {
      for (const why of run.resumed?.skipped ?? []) {
        io.warn(`skipped ${why}`);
        logger.warn({ skipped: why }, 'checkpoint skipped');
      }
      return await runTraining(config, { out: io.out, warn: io.warn, logger, stopRequested: io.stopRequested, runId: run.runId, lock: run.lock, resumedFrom: run.resumed?.file, hosts: run.hosts }, run.resumed?.data ?? null);
    } finally {
      logger.flush();
    }
  } finally {
    run.lock.release();
  }
}

/**
 * stderr, or the log file; a log file that stops taking lines (a full disk) is said once, on the warning
 * channel, instead of dropping lines without a word or stopping the run (the epoch lines and checkpoints
 * go on).
 */
function logDestination(file: string | null, io: TrainIO): pino.DestinationStream {
  if (!file) return pino.destination(2);
  let dest: ReturnType<typeof pino.destination>;
  try {
    dest = pino.destination({ dest: file, sync: true });
  } catch (e) {
    throw writeFailed('the log file', file, e);
  }
  let said = false;
  dest.on('error', (e: unknown) => {
    if (!said) io.warn(`the log file ${file} could not be written: ${fsCause(e)}; log lines are lost from here on`);
    said = true;
  });
  return dest;
}
