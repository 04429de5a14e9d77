/**
 * Pack: float32 tensors of any shapes, flattened and laid end to end in one 1-D tensor, for the one read
 * of a step's results (every gradient, then the BatchNormalization statistics).
 *
 * tfjs' way, concat(reshape(t, [-1]) for each t), costs a tfjs kernel per tensor plus the Concat: 116
 * reshapes and ~22 dispatches for MiniGoogLeNet's gradients on webgpu (tfjs splits a Concat of more
 * inputs than a shader may bind), 13 of 53 ms of a step's host time on lavapipe. The project's kernel is
 * one tfjs kernel: buffer-to-buffer copies on webgpu (no dispatch), copyWithin on the wasm heap, set() on
 * cpu. Backends without it (tensorflow; --kernels stock) take tfjs' way.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import type { KernelConfig, KernelFunc, NamedTensorMap, Tensor, TensorInfo } from '@tensorflow/tfjs-core';

export const PACK = 'TrainpoolPack';

export function pack(tensors: Tensor[]): Tensor {
  if (tf.getKernel(PACK, tf.getBackend()) === undefined) return tf.tidy(() => tf.concat(tensors.map((t) => tf.reshape(t, [-1]))));
  return tf.engine().runKernel(PACK, tensors as unknown as NamedTensorMap, {}) as Tensor;
}

function checked(inputs: unknown, backendName: string): TensorInfo[] {
  const list = inputs as TensorInfo[];
  for (const t of list) {
    if (t.dtype !== 'float32') throw new Error(`${PACK} on ${backendName} packs float32 tensors. Received: ${t.dtype} [${t.shape.join(', ')}]`);
  }
  return list;
}

const sizeOf = (t: TensorInfo): number => tf.util.sizeFromShape(t.shape);

/** Copies on the wasm heap: one view of it, every input a run of it (outputs first: allocating can grow the heap). */
const packWasm: KernelFunc = ({ inputs, backend }) => {
  const list = checked(inputs, 'wasm');
  const wasm = backend as BackendWasm;
  const out = wasm.makeOutput([list.reduce((n, t) => n + sizeOf(t), 0)], 'float32');
  const target = wasm.typedArrayFromHeap(out) as Float32Array;
  const heap = new Float32Array(target.buffer);
  let at = target.byteOffset / 4;
  for (const t of list) {
    const from = (wasm.typedArrayFromHeap(t) as Float32Array).byteOffset / 4;
    heap.copyWithin(at, from, from + sizeOf(t));
    at += sizeOf(t);
  }
  return out;
};

const packCpu: KernelFunc = ({ inputs, backend }) => {
  const list = checked(inputs, 'cpu');
  const cpu = backend as MathBackendCPU;
  const values = new Float32Array(list.reduce((n, t) => n + sizeOf(t), 0));
  let at = 0;
  for (const t of list) {
    values.set(cpu.data.get(t.dataId).values as Float32Array, at);
    at += sizeOf(t);
  }
  return cpu.makeTensorInfo([values.length], 'float32', values);
};

/** What packWebgpu needs of tfjs-backend-webgpu 4.22 beyond its typings (backend_webgpu.ts). */
interface WebgpuInternals {
  tensorMap: { get(dataId: object): { resource: GPUBuffer | null } };
  commandEncoder: GPUCommandEncoder;
  commandQueueOwnedIds: WeakSet<object>;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  uploadToGPU(dataId: object): void;
}

/**
 * One copyBufferToBuffer per input into the output's buffer, recorded in tfjs' command encoder between its
 * compute passes, as tfjs' own readback copies are. Every buffer is marked as used by queued commands
 * (commandQueueOwnedIds), so tfjs does not hand it out again before the copies are submitted.
 */
const packWebgpu: KernelFunc = ({ inputs, backend }) => {
  const list = checked(inputs, 'webgpu');
  const b = backend as WebGPUBackend;
  const internals = b as unknown as WebgpuInternals;
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
    internals.commandEncoder.copyBufferToBuffer(internals.tensorMap.get(t.dataId).resource as GPUBuffer, 0, target, at, bytes);
    internals.commandQueueOwnedIds.add(t.dataId);
    at += bytes;
  }
  internals.commandQueueOwnedIds.add(out.dataId);
  return out;
};

export const PACK_KERNELS: Record<'wasm' | 'cpu' | 'webgpu', KernelConfig> = {
  wasm: { kernelName: PACK, backendName: 'wasm', kernelFunc: packWasm },
  cpu: { kernelName: PACK, backendName: 'cpu', kernelFunc: packCpu },
  webgpu: { kernelName: PACK, backendName: 'webgpu', kernelFunc: packWebgpu },
};
