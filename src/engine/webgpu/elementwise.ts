/**
 * Small webgpu kernels that replace a chain of tfjs kernels by one pass (each caller says which chain).
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { RELU_GRAD } from '../ops/relu_grad.js';
import { flatDispatch, program, runProgram } from './program.js';

const GROUP = 256;

/** dy·step(x), step as tfjs-backend-webgpu's Step computes it (NaN stays NaN, x > 0 gives 1, else 0). */
const reluGrad: KernelFunc = ({ inputs, backend }) => {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const size = x.shape.reduce((a, b) => a * b, 1);
  const p = program({
    key: 'relu_grad',
    inputs: ['dy', 'x'],
    outputShape: x.shape,
    workgroupSize: [GROUP, 1, 1],
    dispatch: flatDispatch(size, GROUP),
    uniforms: 'total : i32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  let v = x[index];
  var s = select(0.0, 1.0, v > 0.0);
  if (isnan(v)) { s = v; }
  result[index] = dy[index] * s;
}`,
  });
  return runProgram(backend as WebGPUBackend, p, [dy, x], [{ type: 'int32', data: [size] }]);
};

export const WEBGPU_ELEMENTWISE_KERNELS: Record<string, KernelConfig> = {
  [RELU_GRAD]: { kernelName: RELU_GRAD, backendName: 'webgpu', kernelFunc: reluGrad },
};
