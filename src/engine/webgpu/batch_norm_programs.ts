/**
 * WGSL for BatchNormalization in training, channels last: x is read as a [rows, channels] matrix,
 * rows = N·H·W, and reduced per channel in row chunks (chunked_reduce.ts).
 *
 * Statistics (tfjs-core's moments, which BatchNormalization uses: mean, then the mean of squared
 * deviations from it, biased) are computed two-pass within each chunk, and chunks are merged with Chan,
 * Golub & LeVeque's pairwise update (1979, "Updating formulae and a pairwise algorithm for computing sample
 * variances"): n = na + nb, δ = μb − μa, μ = μa + δ·nb/n, M2 = M2a + M2b + δ²·na·nb/n. So the variance never
 * comes from E[x²] − E[x]², which loses every digit when the mean is large against the spread.
 */
import { chunked, CT, LANES, PLAN_UNIFORMS, type ChunkPlan } from './chunked_reduce.js';
import { flatDispatch, program } from './program.js';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

const ELEMENTWISE_GROUP = 256;

/** Per chunk: its mean and the sum of squared deviations from it (M2), as partials [chunks, 2, C]. */
export function chunkMomentsProgram(plan: ChunkPlan): WebGPUProgram {
  return chunked(
    'bn_chunk_moments',
    ['x'],
    plan,
    `
  var s = 0.0;
  if (valid) { for (var r = bounds.x + i32(lane); r < bounds.y; r = r + ${LANES}) { s = s + x[r * C + c]; } }
  acc[lane * ${CT}u + tx] = s;
  laneSum(tx, lane);
  let mean = acc[tx] / f32(bounds.y - bounds.x);
  workgroupBarrier();
  var q = 0.0;
  if (valid) { for (var r = bounds.x + i32(lane); r < bounds.y; r = r + ${LANES}) { let d = x[r * C + c] - mean; q = q + d * d; } }
  acc[lane * ${CT}u + tx] = q;
  laneSum(tx, lane);
  if (lane == 0u && valid) { result[dst] = mean; result[dst + C] = acc[tx]; }`,
  );
}

/**
 * Merges the chunks' moments into stats [2, C]: the batch mean and the biased variance. Lane j merges
 * chunks j, j + 8, …; the lanes are then merged pairwise.
 */
export function mergeMomentsProgram(plan: ChunkPlan): WebGPUProgram {
  return program({
    key: 'bn_merge_moments',
    inputs: ['partials'],
    outputShape: [2, plan.channels],
    workgroupSize: [CT, LANES, 1],
    dispatch: [Math.ceil(plan.channels / CT), 1, 1],
    uniforms: PLAN_UNIFORMS,
    code: `
var<workgroup> wn : array<f32, ${CT * LANES}>;
var<workgroup> wmean : array<f32, ${CT * LANES}>;
var<workgroup> wm2 : array<f32, ${CT * LANES}>;
fn merge(n : ptr<function, f32>, mean : ptr<function, f32>, m2 : ptr<function, f32>, nb : f32, meanb : f32, m2b : f32) {
  let total = *n + nb;
  if (nb == 0.0) { return; }
  let delta = meanb - *mean;
  *mean = *mean + delta * (nb / total);
  *m2 = *m2 + m2b + delta * delta * (*n * nb / total);
  *n = total;
}
fn main(index : i32) {
  let tx = localId.x;
  let lane = localId.y;
  let c = i32(workgroupId.x) * ${CT} + i32(tx);
  let C = uniforms.channels;
  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  if (c < C) {
    for (var k = i32(lane); k < uniforms.chunks; k = k + ${LANES}) {
      let nb = f32(min(uniforms.chunkRows, uniforms.rows - k * uniforms.chunkRows));
      merge(&n, &mean, &m2, nb, partials[k * 2 * C + c], partials[k * 2 * C + C + c]);
    }
  }
  let slot = lane * ${CT}u + tx;
  wn[slot] = n;
  wmean[slot] = mean;
  wm2[slot] = m2;
  for (var stride = ${LANES / 2}u; stride > 0u; stride = stride / 2u) {
    workgroupBarrier();
    if (lane < stride) {
      var a = wn[slot];
      var am = wmean[slot];
      var a2 = wm2[slot];
      let other = (lane + stride) * ${CT}u + tx;
      merge(&a, &am, &a2, wn[other], wmean[other], wm2[other]);
      wn[slot] = a;
      wmean[slot] = am;
      wm2[slot] = a2;
    }
  }
  workgroupBarrier();
  if (lane == 0u && c < C) {
    result[c] = wmean[tx];
    result[C + c] = wm2[tx] / f32(uniforms.rows);
  }
}`,
  });
}

/** y = (x − mean)·(γ/√(var + ε)) + β, as tfjs' BatchNormProgram computes it. */
export function normalizeProgram(shape: number[], channels: number): WebGPUProgram {
  const size = shape.reduce((a, b) => a * b, 1);
  return program({
    key: `bn_normalize_${channels}`, // C as a literal: index % C is then a multiply and shift
    inputs: ['x', 'stats', 'scale', 'offset'],
    outputShape: shape,
    workgroupSize: [ELEMENTWISE_GROUP, 1, 1],
    dispatch: flatDispatch(size, ELEMENTWISE_GROUP),
    uniforms: 'total : i32, channels : i32, epsilon : f32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  let C = ${channels};
  let c = index % C;
  let inv = scale[c] * inverseSqrt(stats[C + c] + uniforms.epsilon);
  result[index] = (x[index] - stats[c]) * inv + offset[c];
}`,
  });
}

/** tfjs-layers' moving-average update, moving − (moving − stats[row])·decay, for one statistic. */
export function movingAverageProgram(channels: number): WebGPUProgram {
  return program({
    key: 'bn_moving_average',
    inputs: ['moving', 'stats'],
    outputShape: [channels],
    workgroupSize: [64, 1, 1],
    dispatch: flatDispatch(channels, 64),
    uniforms: 'channels : i32, row : i32, decay : f32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.channels) { return; }
  let m = moving[index];
  result[index] = m - (m - stats[uniforms.row * uniforms.channels + index]) * uniforms.decay;
}`,
  });
}

/** Per chunk: Σ dy and Σ dy·(x − mean), as partials [chunks, 2, C]. */
export function chunkGradSumsProgram(plan: ChunkPlan): WebGPUProgram {
  return chunked(
    'bn_chunk_grad_sums',
    ['dy', 'x', 'stats'],
    plan,
    `
  var s = 0.0;
  var p = 0.0;
  if (valid) {
    let mean = stats[c];
    for (var r = bounds.x + i32(lane); r < bounds.y; r = r + ${LANES}) {
      let g = dy[r * C + c];
      s = s + g;
      p = p + g * (x[r * C + c] - mean);
    }
  }
  acc[lane * ${CT}u + tx] = s;
  laneSum(tx, lane);
  if (lane == 0u && valid) { result[dst] = acc[tx]; }
  workgroupBarrier();
  acc[lane * ${CT}u + tx] = p;
  laneSum(tx, lane);
  if (lane == 0u && valid) { result[dst + C] = acc[tx]; }`,
  );
}

/**
 * The input gradient through the batch statistics, with M = rows and x̂ = (x − mean)/√(var + ε):
 *   dx = γ/√(var + ε) · (dy − dβ/M − x̂·dγ/M).
 */
export function inputGradProgram(shape: number[], channels: number): WebGPUProgram {
  const size = shape.reduce((a, b) => a * b, 1);
  return program({
    key: `bn_input_grad_${channels}`, // C as a literal, as in normalizeProgram
    inputs: ['dy', 'x', 'stats', 'scale', 'dscale', 'doffset'],
    outputShape: shape,
    workgroupSize: [ELEMENTWISE_GROUP, 1, 1],
    dispatch: flatDispatch(size, ELEMENTWISE_GROUP),
    uniforms: 'total : i32, channels : i32, rows : i32, epsilon : f32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  let C = ${channels};
  let c = index % C;
  let inv = inverseSqrt(stats[C + c] + uniforms.epsilon);
  let m = f32(uniforms.rows);
  let xhat = (x[index] - stats[c]) * inv;
  result[index] = scale[c] * inv * (dy[index] - doffset[c] / m - xhat * (dscale[c] / m));
}`,
  });
}
