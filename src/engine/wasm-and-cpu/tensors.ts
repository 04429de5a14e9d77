/**
 * Kernels written in JavaScript over the values of the CPU backends (wasm and cpu), for ops whose tfjs
 * form is a chain of full passes over an activation (BatchNormalization's training step and gradient,
 * the ReLU gradient, bias-gradient sums): one loop here reads each activation once or twice, where the
 * chain reads and writes it once per op (bench/ENGINE.md has the wasm profile).
 *
 * `hostKernel` hides where values live: wasm keeps every tensor in its heap (typedArrayFromHeap gives a
 * view, makeOutput allocates there), cpu in JavaScript arrays (data.get(...).values, makeTensorInfo).
 * On wasm, every output is allocated before any view is taken: an allocation can grow the heap, which
 * detaches views taken earlier (as wasm/split_v.ts does).
 */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';

export type HostBackendName = 'wasm' | 'cpu';

/**
 * What a host kernel body computes with: its inputs' values, outputs it must write in full (wasm's are
 * not zeroed), the attributes, and the inputs' TensorInfos (for their shapes).
 */
export type HostBody = (inputs: Float32Array[], outputs: Float32Array[], attrs: NamedAttrMap, infos: TensorInfo[]) => void;

/**
 * A kernelFunc running `body` over float32 inputs `names` (in that order), producing outputs of the
 * shapes `outputShapes` returns. One output is returned as a TensorInfo, several as an array.
 */
export function hostKernel(
  backendName: HostBackendName,
  kernelName: string,
  names: readonly string[],
  outputShapes: (inputs: TensorInfo[], attrs: NamedAttrMap) => number[][],
  body: HostBody,
): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const named = floatInputs(inputs, names, kernelName, backendName);
    const infos = names.map((n) => named[n]);
    const shapes = outputShapes(infos, attrs);
    const outs = backendName === 'wasm' ? onWasm(backend as BackendWasm, infos, shapes, body, attrs) : onCpu(backend as MathBackendCPU, infos, shapes, body, attrs);
    return outs.length === 1 ? outs[0] : outs;
  };
}

/** The named inputs of a kernel call, each checked to be there and float32. */
export function floatInputs(inputs: unknown, names: readonly string[], kernelName: string, backendName: HostBackendName): Record<string, TensorInfo> {
  const named = inputs as Record<string, TensorInfo | undefined>;
  for (const n of names) {
    const t = named[n];
    if (t === undefined || t.dtype !== 'float32') {
      throw new Error(`${kernelName} (trainpool, ${backendName}) needs a float32 input ${n}. Received: ${t === undefined ? 'none' : t.dtype}`);
    }
  }
  return named as Record<string, TensorInfo>;
}

function onWasm(wasm: BackendWasm, inputs: TensorInfo[], shapes: number[][], body: HostBody, attrs: NamedAttrMap): TensorInfo[] {
  const outs = shapes.map((s) => wasm.makeOutput(s, 'float32'));
  body(
    inputs.map((t) => wasm.typedArrayFromHeap(t) as Float32Array),
    outs.map((o) => wasm.typedArrayFromHeap(o) as Float32Array),
    attrs,
    inputs,
  );
  return outs;
}

function onCpu(cpu: MathBackendCPU, inputs: TensorInfo[], shapes: number[][], body: HostBody, attrs: NamedAttrMap): TensorInfo[] {
  const values = shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b, 1)));
  body(
    inputs.map((t) => cpu.data.get(t.dataId).values as Float32Array),
    values,
    attrs,
    inputs,
  );
  return values.map((v, i) => cpu.makeTensorInfo(shapes[i], 'float32', v));
}
