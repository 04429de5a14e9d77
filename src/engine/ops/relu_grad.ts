/**
 * ReluGrad, the project's op for the gradient of Relu: dx = dy where x > 0, 0 where x ≤ 0, NaN where x is
 * NaN, in one pass (tfjs' dy·step(x) is two). Its kernels: webgpu/elementwise.ts and
 * wasm-and-cpu/elementwise.ts; the gradient that calls it: gradients/relu_grad.ts.
 */
export const RELU_GRAD = 'TrainpoolReluGrad';
