/**
 * SplitV for wasm (the gradient of Concatenate: every inception module's backward pass starts with one),
 * copying contiguous runs inside the wasm heap with copyWithin.
 *
 * tfjs-backend-wasm 4.22 splits with its Slice kernel once per output, and that Slice first copies the
 * whole input out of the heap (BackendWasm.readSync) and then copies one `subarray` per pixel: 80 ms to
 * split 64×32×32×64 channels into 32 + 32, 0.2–0.6 s of a MiniGoogLeNet step. Along the split axis every
 * output is `outer` runs of `size·inner` elements, each a single memmove here. Outputs are allocated
 * before any view is taken: an allocation can grow wasm memory, which detaches earlier views.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, SplitVAttrs, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export function splitVConfig(stock: KernelFunc | undefined): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args;
    const { x } = inputs as { x: TensorInfo };
    if (x.dtype === 'string') {
      if (stock === undefined) throw new Error(`SplitV on wasm (trainpool) needs numeric tensors. Received: dtype ${x.dtype}`);
      return stock(args);
    }
    const { numOrSizeSplits, axis } = attrs as unknown as SplitVAttrs;
    const wasm = backend as BackendWasm;
    const $axis = tf.util.parseAxisParam(axis, x.shape)[0];
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, $axis);
    const outer = x.shape.slice(0, $axis).reduce((a, b) => a * b, 1);
    const inner = x.shape.slice($axis + 1).reduce((a, b) => a * b, 1);
    const row = x.shape[$axis] * inner;

    const outputs = sizes.map((size) => wasm.makeOutput(x.shape.map((d, i) => (i === $axis ? size : d)), x.dtype));
    const source = wasm.typedArrayFromHeap(x);
    // One view of the whole heap with the input's element type, which the outputs share.
    const heap = new (source.constructor as Float32ArrayConstructor)(source.buffer);
    const from = source.byteOffset / source.BYTES_PER_ELEMENT;
    let offset = 0;
    outputs.forEach((out, i) => {
      const run = sizes[i] * inner;
      const to = wasm.typedArrayFromHeap(out).byteOffset / source.BYTES_PER_ELEMENT;
      for (let o = 0; o < outer; o++) heap.copyWithin(to + o * run, from + o * row + offset, from + o * row + offset + run);
      offset += run;
    });
    return outputs;
  };
  return { kernelName: tf.SplitV, backendName: 'wasm', kernelFunc };
}
