/**
 * Everything that can be checked before any slow work starts (workers, downloads, the first epoch):
 * the data set present and well-formed (headers and sizes only), the plot's renderer, the training set
 * large enough for one global batch (and for --precise-bn's batches). A run never fails at its end for
 * something checkable at its start.
 */
import { checkStatisticsBatches, stepsPerEpoch } from '../coordinator/plan.js';
import { renderPlot } from '../coordinator/report/plot.js';
import { checkDataset, type DatasetCheck } from '../data/load.js';
import { tensorflowPackage } from '../engine/backend.js';
import { deviceSelectProblem, findDeviceSelectLayers } from '../engine/gpu-selection.js';
import { TrainpoolError } from '../util/errors.js';
import { UsageError, type ResolvedConfig } from '../config/config.js';
import { datasetOptions } from '../config/resolve.js';

/**
 * The checks above (the output's folders, kinds and lock are cli/ownership.ts's, taken before these).
 */
export async function preflight(config: ResolvedConfig): Promise<DatasetCheck> {
  const selection = gpuSelectionProblem(config);
  if (selection) throw new TrainpoolError('GPU_SELECTION', selection);
  const data = await checkDataset(datasetOptions(config));
  // The plot is drawn at the very end; the native renderer and its font load now, not after 70 epochs.
  await renderPlot([{ epoch: 1, loss: 1, acc: 0.5, val_loss: 1, val_acc: 0.5, lr: config.lr, seconds: 0 }], { title: 'preflight', width: 80, height: 60 });
  const globalBatch = config.batchSize * config.workers;
  if (stepsPerEpoch({ trainCount: data.trainCount, batchSize: config.batchSize, workers: config.workers }) < 1) {
    throw new UsageError(
      `--batch-size ${config.batchSize} × ${config.workers} workers = ${globalBatch} images per step is more than the ${data.trainCount} training images`,
    );
  }
  if (config.preciseBn > 0) {
    try {
      checkStatisticsBatches({ trainCount: data.trainCount, batchSize: config.batchSize }, config.preciseBn);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return data;
}

/**
 * Why webgpu workers could not each be given their own GPU here, or null: where the machine has several
 * GPUs, webgpu workers see theirs alone through Mesa's device-select layer (engine/gpu-selection.ts), which
 * must be there and new enough. `auto` uses tensorflow instead when it is installed.
 */
export function gpuSelectionProblem(config: ResolvedConfig, env: NodeJS.ProcessEnv = process.env): string | null {
  const webgpu = config.backend === 'webgpu' || (config.backend === 'auto' && tensorflowPackage() === undefined);
  if (!webgpu || !config.gpus.some((g) => (g.hostGpus ?? 1) > 1 && g.pciBusId !== undefined)) return null;
  return deviceSelectProblem(findDeviceSelectLayers(env));
}
