/** The Pack kernel of webgpu (../ops/pack.ts says what Pack is and why). */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs-core';
import { PACK, packInputs, sizeOf } from '../ops/pack.js';
import { webgpuInternals } from '../tfjs-internals.js';

/**
 * One copyBufferToBuffer per input into the output's buffer, recorded in tfjs' command encoder between its
 * compute passes, as tfjs' own readback copies are. Every buffer is marked as used by queued commands
 * (commandQueueOwnedIds), so tfjs does not hand it out again before the copies are submitted.
 */
const packWebgpu: KernelFunc = ({ inputs, backend }) => {
  const list = packInputs(inputs, 'webgpu');
  const b = backend as WebGPUBackend;
  const internals = webgpuInternals(b);
  const out = b.makeTensorInfo([list.reduce((n, t) => n + sizeOf(t), 0)], 'float32');
  internals.uploadToGPU(out.dataId);
  const target = internals.tensorMap.get(out.dataId).resource as GPUBuffer;
  internals.ensureCommandEncoderReady();
  internals.endComputePassEncoder();
  let at = 0;
  for (const t of list) {
    const bytes = sizeOf(t) * 4;
    if (bytes === 0) continue;
    internals.uploadToGPU(t.dataId); // small tensors may still be on the CPU
    // The encoder ensureCommandEncoderReady made: only a submit drops it, and nothing here submits.
    internals.commandEncoder!.copyBufferToBuffer(internals.tensorMap.get(t.dataId).resource as GPUBuffer, 0, target, at, bytes);
    internals.commandQueueOwnedIds.add(t.dataId);
    at += bytes;
  }
  internals.commandQueueOwnedIds.add(out.dataId);
  return out;
};

export const PACK_WEBGPU: KernelConfig = { kernelName: PACK, backendName: 'webgpu', kernelFunc: packWebgpu };
