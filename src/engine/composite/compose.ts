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
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelBackend, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { forgetWasmTensor, wasmTensorRecord } from '../tfjs-internals.js';

export class KernelComposer {
  private readonly made: TensorInfo[] = [];
  private readonly views: TensorInfo[] = [];

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

  /** An uninitialized float32 tensor of `shape` (wasm: malloc'd heap, not zeroed), freed like the others. */
  empty(shape: number[]): TensorInfo {
    const dataId = this.backend.write(null as unknown as Float32Array, shape, 'float32');
    const info: TensorInfo = { dataId, shape, dtype: 'float32' };
    this.made.push(info);
    return info;
  }

  /**
   * wasm only: a float32 tensor of `shape` over `parent`'s heap memory from element `offset` on, without
   * a copy, for kernels that read a window of a tensor (a chunk of a matrix product's operands). It is
   * registered with the C++ side as tensors allocated there are (makeOutput with a memoryOffset), and
   * released without free(), which would corrupt the heap: only tfjs' C++ record of it (and any XNNPACK
   * operator cached for its id) goes. A view must not be returned from `compose`, and its window must lie
   * inside `parent`. The caller keeps `parent` alive while the view is used.
   */
  view(parent: TensorInfo, offset: number, shape: number[]): TensorInfo {
    const size = shape.reduce((a, b) => a * b, 1);
    const parentSize = parent.shape.reduce((a, b) => a * b, 1);
    if (this.backendName !== 'wasm' || parent.dtype !== 'float32' || offset < 0 || offset + size > parentSize) {
      throw new Error(`KernelComposer.view: a window of a float32 wasm tensor inside it. Received: ${this.backendName}, ${parent.dtype}, [${offset}, ${offset + size}) of ${parentSize}: this is a bug`);
    }
    const wasm = this.backend as BackendWasm;
    const record = wasmTensorRecord(wasm, parent.dataId);
    if (record === undefined) throw new Error('KernelComposer.view: the parent tensor is not on the wasm heap: this is a bug');
    const info = wasm.makeOutput(shape, 'float32', record.memoryOffset + offset * 4);
    this.views.push(info);
    return info;
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return this.run('Reshape', { x }, { shape });
  }

  /** Drops a view's record (never its memory); views go before the tensors they look into. */
  disposeView(v: TensorInfo): void {
    const i = this.views.indexOf(v);
    if (i < 0) throw new Error('KernelComposer.disposeView: the view was not made here or was released already: this is a bug');
    this.views.splice(i, 1);
    forgetWasmTensor(this.backend as BackendWasm, v.dataId);
  }

  /** Frees every intermediate except the results (a reshape of one only drops that one's extra reference). */
  private release(results: readonly TensorInfo[]): void {
    const viewReturned = results.some((r) => this.views.includes(r));
    for (const v of this.views.slice()) this.disposeView(v);
    for (const t of this.made) if (!results.includes(t)) this.backend.disposeData(t.dataId);
    this.made.length = 0;
    if (viewReturned) throw new Error('KernelComposer: a view cannot be a kernel\'s result: this is a bug');
  }

  /** Runs `body`, then frees its intermediates; on an exception frees them all and rethrows. */
  static compose(backendName: string, backend: KernelBackend, body: (k: KernelComposer) => TensorInfo): TensorInfo {
    return KernelComposer.composeAll(backendName, backend, (k) => [body(k)])[0];
  }

  /** compose for a kernel with several outputs. */
  static composeAll(backendName: string, backend: KernelBackend, body: (k: KernelComposer) => TensorInfo[]): TensorInfo[] {
    const k = new KernelComposer(backendName, backend);
    let results: TensorInfo[] = [];
    try {
      results = body(k);
      return results;
    } finally {
      k.release(results);
    }
  }
}
