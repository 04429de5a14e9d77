/**
 * Building a kernel out of other kernels of the same backend.
 *
 * A kernelFunc runs inside the engine's bookkeeping for one kernel call: it receives TensorInfos, not
 * Tensors, and must hand back TensorInfos the engine then adopts. Calling public tf ops from inside it
 * would create Tensors the engine tracks a second time, in the middle of its own scope and tape
 * bookkeeping. So, as the backends' own composite kernels do (tfjs-backend-wasm's BatchMatMul calls its
 * Reshape kernelFunc and frees the result with `backend.disposeData`), this calls the registered
 * kernelFuncs directly and frees every intermediate it made, whatever happens.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

export class KernelComposer {
  private readonly made: TensorInfo[] = [];

  constructor(
    readonly backendName: string,
    readonly backend: KernelBackend,
  ) {}

  /** Runs the backend's registered `kernelName`; its output is freed when `compose` ends unless returned. */
  run(kernelName: string, inputs: NamedTensorInfoMap | TensorInfo[], attrs: object = {}): TensorInfo {
    const config = tf.getKernel(kernelName, this.backendName);
    if (config === undefined) {
      throw new Error(`kernel ${kernelName} is not registered for backend ${this.backendName}, which a project kernel needs`);
    }
    // Concat and Pack take an array of inputs; the KernelFunc type only knows the named form.
    const out = config.kernelFunc({ inputs: inputs as NamedTensorInfoMap, backend: this.backend, attrs: attrs as NamedAttrMap });
    if (Array.isArray(out)) throw new Error(`kernel ${kernelName} returned several outputs where one was expected: this is a bug`);
    this.made.push(out);
    return out;
  }

  /** A float32 tensor made from `values` on this backend (KernelBackend.write), freed like the others. */
  constant(values: Float32Array, shape: number[]): TensorInfo {
    const dataId = this.backend.write(values, shape, 'float32');
    const info: TensorInfo = { dataId, shape, dtype: 'float32' };
    this.made.push(info);
    return info;
  }

  /** Frees an intermediate before `compose` ends, to keep the peak memory down. */
  dispose(t: TensorInfo): void {
    const i = this.made.indexOf(t);
    if (i < 0) throw new Error(`KernelComposer.dispose: the tensor was not made here or was freed already: this is a bug`);
    this.made.splice(i, 1);
    this.backend.disposeData(t.dataId);
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return this.run('Reshape', { x }, { shape });
  }

  /** Frees every intermediate except `result` (a reshape of one only drops that one's extra reference). */
  private release(result?: TensorInfo): void {
    for (const t of this.made) if (t !== result) this.backend.disposeData(t.dataId);
    this.made.length = 0;
  }

  /** Runs `body`, then frees its intermediates; on an exception frees them all and rethrows. */
  static compose(backendName: string, backend: KernelBackend, body: (k: KernelComposer) => TensorInfo): TensorInfo {
    const k = new KernelComposer(backendName, backend);
    let result: TensorInfo | undefined;
    try {
      result = body(k);
      return result;
    } finally {
      k.release(result);
    }
  }
}
