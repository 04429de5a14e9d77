/**
 * A WGSL compute program run through tfjs-backend-webgpu's own machinery (WebGPUBackend.runWebGPUProgram):
 * its pipeline cache, uniform buffers, bind groups, buffer reuse and batched submits, so the project's
 * kernels interleave with tfjs' in one command stream.
 *
 * What tfjs puts around `code` (tfjs-backend-webgpu 4.22, webgpu_program.ts makeShader):
 *   - `result: array<f32>` (binding 0, read_write), one `var<storage, read>` array per input, named as in
 *     `inputs`, and `uniforms` with NAN, INFINITY, every input's and the output's shape and strides, then
 *     the fields of `uniforms` below, in order (their values come in `runProgram`'s uniforms argument);
 *   - `localId`, `workgroupId`, `numWorkgroups` (vec3<u32>) and `localIndex`, set before `main` runs;
 *   - `main(index : i32)` is called with the flat invocation index. `code` must define it. That index is
 *     right even when tfjs folds a long one-dimensional dispatch into two dimensions (reshapeDispatch, past
 *     maxComputeWorkgroupsPerDimension); programs that read workgroupId themselves must keep every
 *     dispatch dimension under that limit, which `dispatch` checks.
 * `code` may declare `var<workgroup>` arrays and helper functions at module scope.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

export type Uniforms = Array<{ type: 'float32' | 'int32' | 'uint32'; data: number[] }>;

export interface ProgramSpec {
  /** Names the pipeline in tfjs' cache: must change whenever `code` does (tfjs adds ranks and dtypes). */
  key: string;
  inputs: string[];
  outputShape: number[];
  workgroupSize: [number, number, number];
  /** Workgroups in x, y, z. */
  dispatch: [number, number, number];
  /** WGSL struct fields, e.g. 'rows : i32, epsilon : f32,'. */
  uniforms?: string;
  code: string;
}

/** WebGPU's default maxComputeWorkgroupsPerDimension, which every adapter supports. */
const MAX_WORKGROUPS_PER_DIMENSION = 65535;

export function program(spec: ProgramSpec): WebGPUProgram {
  const [, y, z] = spec.dispatch;
  if (y > MAX_WORKGROUPS_PER_DIMENSION || z > MAX_WORKGROUPS_PER_DIMENSION) {
    throw new Error(`${spec.key}: dispatch y and z must be at most ${MAX_WORKGROUPS_PER_DIMENSION}. Received: ${spec.dispatch.join('×')}: this is a bug`);
  }
  return {
    shaderKey: `trainpool_${spec.key}`,
    variableNames: spec.inputs,
    outputShape: spec.outputShape,
    workgroupSize: spec.workgroupSize,
    dispatch: spec.dispatch,
    // Every output axis on x makes tfjs call main(index) (webgpu_program.ts isFlatDispatchLayout).
    dispatchLayout: { x: spec.outputShape.map((_, i) => i) },
    uniforms: spec.uniforms,
    getUserCode: () => spec.code,
  };
}

/** Runs `p` on `inputs` (TensorInfos of this backend) and returns its float32 output, which the caller owns. */
export function runProgram(backend: WebGPUBackend, p: WebGPUProgram, inputs: TensorInfo[], uniforms: Uniforms = []): TensorInfo {
  return backend.runWebGPUProgram(p, inputs, 'float32', uniforms);
}

/** Workgroups for `size` invocations of `perGroup` threads, in one dimension. */
export function flatDispatch(size: number, perGroup: number): [number, number, number] {
  return [Math.max(1, Math.ceil(size / perGroup)), 1, 1];
}
