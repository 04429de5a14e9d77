/**
 * trainpool — train an image classifier with data parallelism, one worker process per GPU.
 *
 *   One GPU:           bin/train --gpus 1 --data-dir ~/data --download --output out/plot.png
 *   Four GPUs:         bin/train --gpus 4 --data-dir ~/data --output out/plot.png
 *   CPU only:          bin/train --gpus 0 --workers 2 --dataset fashion-mnist --model tiny --epochs 3 --output out/fmnist.png
 *   Smoke test:        bin/train --dataset synthetic --model tiny --gpus 0 --workers 2 --epochs 2 \
 *                        --limit-train 512 --limit-test 256 --output out/plot.png
 *   Model only:        bin/train --summary
 *   Docker:            docker run --gpus all -v ~/data:/data -v $PWD/out:/out trainpool \
 *                        --gpus 4 --data-dir /data --output /out/plot.png
 *
 * Exit codes: 0 done, 1 failed, 2 usage error (nothing started), 130 interrupted (SIGINT/SIGTERM).
 */
import pino from 'pino';
import { runTraining } from '../coordinator/run.js';
import { DATASET_SHAPES } from '../data/dataset.js';
import { setupBackend } from '../model/backend.js';
import { buildModel } from '../model/minigooglenet.js';
import { summary } from '../model/summary.js';
import { isTrainpoolError } from '../util/errors.js';
import { discoverGpus } from './gpus.js';
import { helpText, parseArgs, type ResolvedConfig } from './options.js';
import { preflight } from './preflight.js';
import { resolveResume, type Resumption } from './resume.js';

export async function main(argv: string[]): Promise<number> {
  let config: ResolvedConfig | 'help';
  try {
    config = parseArgs(argv, discoverGpus());
  } catch (e) {
    return fail(e);
  }
  if (config === 'help') {
    process.stdout.write(helpText());
    return 0;
  }
  try {
    if (config.summary) return await printSummary(config);
    let resume: Resumption | null = null;
    if (config.resume) {
      resume = resolveResume(config);
      config = resume.config;
    }
    await preflight(config);
    return await run(config, resume);
  } catch (e) {
    return fail(e);
  }
}

async function printSummary(config: ResolvedConfig): Promise<number> {
  const backend = await setupBackend('cpu');
  const shape = DATASET_SHAPES[config.dataset];
  const model = buildModel({ name: config.model, ...shape, seed: config.seed });
  process.stdout.write(`${summary(model)}\n`);
  model.dispose();
  await backend.close();
  return 0;
}

async function run(config: ResolvedConfig, resume: Resumption | null): Promise<number> {
  const logger = pino(
    { level: config.logLevel, base: { pid: process.pid } },
    config.logFile ? pino.destination({ dest: config.logFile, sync: true }) : pino.destination(2),
  );
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      // A second Ctrl-C: the user means it. Workers exit when their pipe closes with us.
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(`\n${signal}: stopping after the current step (press Ctrl-C again to quit at once)\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    for (const why of resume?.checkpoint.skipped ?? []) {
      process.stderr.write(`train: warning: skipped ${why}\n`);
      logger.warn({ skipped: why }, 'checkpoint skipped');
    }
    const result = await runTraining(
      config,
      { out: (line) => process.stdout.write(`${line}\n`), logger, stopRequested: () => stopping },
      resume?.checkpoint.data ?? null,
    );
    return result.stopped === 'requested' ? 130 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    logger.flush();
  }
}

function fail(e: unknown): number {
  if (isTrainpoolError(e)) {
    process.stderr.write(`train: error: ${e.message}\n`);
    return e.code === 'USAGE' ? 2 : 1;
  }
  process.stderr.write(`train: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
  return 1;
}
