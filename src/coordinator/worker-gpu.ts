/** The GPU a worker process is given, from the machine's list (cli/gpus.ts). */
import type { Gpu } from '../config/config.js';
import type { WorkerGpu } from '../protocol/messages.js';

/** A worker's GPU; it must see that one alone where the machine has others (engine/gpu-selection.ts). */
export function workerGpu(gpu: Gpu): WorkerGpu {
  return { index: gpu.index, name: gpu.name, pciBusId: gpu.pciBusId, exclusive: (gpu.hostGpus ?? 1) > 1 && gpu.pciBusId !== undefined };
}
