/**
 * A run owns its output before anything else happens: its folders exist and are writable, every path it
 * will write is of the right kind (the plot is not a folder, the model folder is not a file), no other
 * live run holds it (coordinator/output-lock.ts), and a fresh run does not start on another run's files:
 * those are refused unless the user says --resume (continue that run) or --overwrite (remove them first,
 * after every other check has passed, so a refused run removes nothing). A refused run leaves none of the
 * folders it created for its checks behind.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UsageError, type OutputPaths, type ResolvedConfig } from '../config/config.js';
import { listCheckpoints, removeUnfinishedCheckpoints } from '../coordinator/checkpoint.js';
import { OutputLock } from '../coordinator/output-lock.js';
import { TrainpoolError } from '../util/errors.js';
import { fsCause } from '../util/files.js';

/**
 * Creates `dir` if needed and proves it writable by writing and removing a file there. Returns the first
 * folder it created (undefined when `dir` existed), for a refused run to remove again.
 */
export function assertWritableDir(option: string, dir: string): string | undefined {
  const probe = path.join(dir, `.trainpool-write-test-${process.pid}`);
  try {
    const created = mkdirSync(dir, { recursive: true });
    writeFileSync(probe, 'ok');
    rmSync(probe);
    return created;
  } catch (e) {
    throw new UsageError(`${option} must name a writable folder. Received: ${dir}: ${fsCause(e)}`);
  }
}

export interface OutputClaim {
  /** A new run's id; a resumed run keeps its checkpoint's. */
  runId: string;
  lock: OutputLock;
  /** Refuses a fresh run on another run's files, unless --overwrite. */
  checkFresh(): void;
  /** --overwrite: removes the other run's files (call once every check has passed). */
  clearOtherRun(): void;
  /** A refused run: the lock released and the folders made for the checks removed. */
  abandon(): void;
}

export function claimOutput(config: ResolvedConfig): OutputClaim {
  const outputs = config.outputs!;
  const created: (string | undefined)[] = [];
  let lock: OutputLock | undefined;
  const abandon = () => {
    lock?.release();
    // Folders made seconds ago by this process, holding nothing of anyone's: an empty x.checkpoints/
    // next to a run that never started only misleads the next --resume.
    for (const dir of created.reverse()) if (dir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    checkKinds(outputs, config.logFile);
    created.push(assertWritableDir('--output', path.dirname(outputs.png)));
    created.push(assertWritableDir('--checkpoint-dir', outputs.checkpointDir));
    if (config.logFile) created.push(assertWritableDir('--log-file', path.dirname(config.logFile)));
    const runId = randomBytes(6).toString('hex');
    const taken = OutputLock.acquire(outputs.checkpointDir, `--output ${outputs.png}`);
    lock = taken;
    removeUnfinishedCheckpoints(outputs.checkpointDir);
    return {
      runId,
      lock: taken,
      checkFresh: () => {
        const theirs = otherRunFiles(outputs);
        if (theirs.length && !config.overwrite) {
          throw new TrainpoolError(
            'OUTPUT_IN_USE',
            `--output ${outputs.png} holds another run's files (${theirs.map((f) => path.basename(f)).join(', ')}): pass --resume to continue that run or --overwrite to replace it`,
          );
        }
      },
      clearOtherRun: () => {
        for (const file of otherRunFiles(outputs)) rmSync(file, { recursive: true, force: true });
      },
      abandon,
    };
  } catch (e) {
    abandon();
    throw e;
  }
}

/** Paths the run writes that exist with the wrong kind (a folder where a file goes, or the reverse). */
function checkKinds(outputs: OutputPaths, logFile: string | null): void {
  const kind = (p: string) => {
    try {
      return statSync(p).isDirectory() ? 'folder' : 'file';
    } catch {
      return 'none';
    }
  };
  const files: [string, string][] = [
    ['--output', outputs.png],
    ['--output (the history beside it)', outputs.historyJson],
    ['--output (the history beside it)', outputs.historyCsv],
  ];
  if (logFile) files.push(['--log-file', logFile]);
  for (const [option, file] of files) {
    if (kind(file) === 'folder') throw new UsageError(`${option} must name a file, not a folder. Received: ${file} (a folder)`);
  }
  if (kind(outputs.modelDir) === 'file') throw new UsageError(`--output's model goes in the folder ${outputs.modelDir}, which is a file here: move it or choose another --output`);
  if (kind(outputs.checkpointDir) === 'file') throw new UsageError(`--checkpoint-dir must name a folder. Received: ${outputs.checkpointDir} (a file)`);
}

/** The files of an earlier run at this output: checkpoints, history, plot, model. */
export function otherRunFiles(outputs: OutputPaths): string[] {
  const found = [outputs.png, outputs.historyJson, outputs.historyCsv, outputs.modelDir].filter((p) => existsSync(p));
  return [...listCheckpoints(outputs.checkpointDir).map((n) => path.join(outputs.checkpointDir, n)), ...found];
}
