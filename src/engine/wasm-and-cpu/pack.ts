/** The Pack kernels of the CPU backends (../ops/pack.ts says what Pack is and why). */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs-core';
import { PACK, packInputs, sizeOf } from '../ops/pack.js';

/** Copies on the wasm heap: one view of it, every input a run of it (outputs first: allocating can grow the heap). */
const packWasm: KernelFunc = ({ inputs, backend }) => {
  const list = packInputs(inputs, 'wasm');
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
  const list = packInputs(inputs, 'cpu');
  const cpu = backend as MathBackendCPU;
  const values = new Float32Array(list.reduce((n, t) => n + sizeOf(t), 0));
  let at = 0;
  for (const t of list) {
    values.set(cpu.data.get(t.dataId).values as Float32Array, at);
    at += sizeOf(t);
  }
  return cpu.makeTensorInfo([values.length], 'float32', values);
};

export const PACK_WASM: KernelConfig = { kernelName: PACK, backendName: 'wasm', kernelFunc: packWasm };
export const PACK_CPU: KernelConfig = { kernelName: PACK, backendName: 'cpu', kernelFunc: packCpu };
