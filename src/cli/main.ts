/**
 * trainpool — train an image classifier with data parallelism, one worker process per GPU.
 *
 *   One GPU:           bin/train --gpus 1 --data-dir ~/data --download --output out/plot.png
 *   Four GPUs:         bin/train --gpus 4 --data-dir ~/data --output out/plot.png
 *   Quick look (CPU):  bin/train --preset quick --output out/fmnist.png      (Fashion-MNIST, ~0.86 val_acc in ~2.5 min)
 *   CPU only:          bin/train --gpus 0 --workers 2 --dataset fashion-mnist --model small --epochs 3 --output out/fmnist.png
 *   Smoke test:        bin/train --dataset synthetic --model tiny --gpus 0 --workers 2 --epochs 2 \
 *                        --limit-train 512 --limit-test 256 --output out/plot.png
 *   Model only:        bin/train --summary
 *   Docker:            docker run --gpus all -v ~/data:/data -v $PWD/out:/out trainpool \
 *                        --gpus 4 --data-dir /data --output /out/plot.png
 *   Several hosts:     one bin/train per host, under torchrun (--nproc-per-node 1), Slurm (deploy/slurm.sbatch),
 *                      Kubernetes (deploy/kubernetes.yaml), or by hand on host i of N:
 *                        TRAINPOOL_NNODES=N TRAINPOOL_NODE_RANK=i TRAINPOOL_MASTER_ADDR=host0 \
 *                        TRAINPOOL_SECRET_FILE=secret bin/train --gpus 4 --output out/plot.png
 *
 * Exit codes: 0 done, 1 failed, 2 refused at the start (a usage error, a launcher's environment, an output in
 * use: nothing started), 130 interrupted (SIGINT/SIGTERM).
 */
import { DATASET_SHAPES } from '../data/dataset.js';
import { isTrainpoolError } from '../util/errors.js';
import { discoverGpus } from './gpus.js';
import { clusterFromEnv } from '../config/cluster.js';
import { flagOf } from '../config/config.js';
import type { ResolvedConfig } from '../config/config.js';
import { helpText, parseArgs, repeatedOptions } from './options.js';
// tfjs, the backends and the training loop load only once the options are good: a mistyped option is
// answered in a fraction of a second (start.js and the model modules load tfjs).
import type { PreparedRun } from './start.js';

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
  for (const line of repeatedOptions(argv)) process.stderr.write(`train: warning: ${line}\n`);
  try {
    if (config.summary) return await printSummary(config);
    // One bin/train per host under a launcher (torchrun, Kubernetes, Slurm): host 0 trains, the others serve.
    const cluster = clusterFromEnv(process.env);
    if (cluster.nodeRank > 0) {
      const { runHost } = await import('./hosts.js');
      return await runHost(config, cluster, (line) => process.stdout.write(`${line}\n`));
    }
    const { prepareRun } = await import('./start.js');
    return await run(await prepareRun(config, flagOf, cluster));
  } catch (e) {
    return fail(e);
  }
}

async function printSummary(config: ResolvedConfig): Promise<number> {
  const [{ setupBackend }, { buildModel }, { summary }] = await Promise.all([import('../engine/backend.js'), import('../model/minigooglenet.js'), import('../model/summary.js')]);
  const backend = await setupBackend('cpu');
  const shape = DATASET_SHAPES[config.dataset];
  const model = buildModel({ name: config.model, ...shape, seed: config.seed });
  process.stdout.write(`${summary(model)}\n`);
  model.dispose();
  await backend.close();
  return 0;
}

async function run(prepared: PreparedRun): Promise<number> {
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
  // A reader that went away (`bin/train … | head`): the run goes on into its files, without its lines,
  // instead of dying on an EPIPE mid-epoch.
  const gone = { stdout: false, stderr: false };
  const onError = (stream: 'stdout' | 'stderr') => (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    gone[stream] = true;
  };
  process.stdout.on('error', onError('stdout'));
  process.stderr.on('error', onError('stderr'));
  const { trainPrepared } = await import('./start.js');
  try {
    const result = await trainPrepared(prepared, {
      out: (line) => gone.stdout || process.stdout.write(`${line}\n`),
      warn: (line) => gone.stderr || process.stderr.write(`train: warning: ${line}\n`),
      stopRequested: () => stopping,
    });
    return result.stopped === 'requested' ? 130 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function fail(e: unknown): number {
  if (isTrainpoolError(e)) {
    process.stderr.write(`train: error: ${e.message}\n`);
    // Refused before anything started: a broken option, a launcher's environment, an output that is another run's.
    return e.code === 'USAGE' || e.code === 'LAUNCH' || e.code === 'OUTPUT_IN_USE' ? 2 : 1;
  }
  process.stderr.write(`train: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
  return 1;
}
