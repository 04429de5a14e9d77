/**
 * WGSL for BatchNormalization in training, channels last: x is read as a [rows, channels] matrix,
 * rows = N·H·W. Per-channel reductions are split over row chunks so that a large activation keeps the
 * whole GPU busy: a workgroup of 32 channels × 8 row lanes reads whole 128-byte rows of 32 channels
 * (coalesced), and there are about 256 such workgroups, then a small program combines the chunks.
 *
 * Statistics (tfjs-core's moments, which BatchNormalization uses: mean, then the mean of squared
 * deviations from it, biased) are computed two-pass within each chunk, and chunks are merged with Chan,
 * Golub & LeVeque's pairwise update (1979, "Updating formulae and a pairwise algorithm for computing sample
 * variances"): n = na + nb, δ = μb − μa, μ = μa + δ·nb/n, M2 = M2a + M2b + δ²·na·nb/n. So the variance never
 * comes from E[x²] − E[x]², which loses every digit when the mean is large against the spread.
 */
import { flatDispatch, program, type ProgramSpec, type Uniforms } from './program.js';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

/** Channels per workgroup (x) and row lanes (y). */
const CT = 32;
const LANES = 8;
const ELEMENTWISE_GROUP = 256;
/** About this many workgroups in a chunked reduction (a few per multiprocessor on a large GPU). */
const TARGET_WORKGROUPS = 256;
const MAX_CHUNKS = 64;
const MIN_CHUNK_ROWS = 32;

/** How a [rows, channels] reduction is split: `chunks` chunks of `chunkRows` rows (the last may be shorter). */
export interface ChunkPlan {
  rows: number;
  channels: number;
  chunkRows: number;
  chunks: number;
}

export function planChunks(rows: number, channels: number): ChunkPlan {
  const channelBlocks = Math.ceil(channels / CT);
  const wanted = Math.min(MAX_CHUNKS, Math.max(1, Math.ceil(TARGET_WORKGROUPS / channelBlocks)));
  const chunkRows = Math.max(MIN_CHUNK_ROWS, Math.ceil(rows / wanted));
  return { rows, channels, chunkRows, chunks: Math.ceil(rows / chunkRows) };
}

const PLAN_UNIFORMS = 'rows : i32, channels : i32, chunkRows : i32, chunks : i32,';
/** One entry per scalar field: tfjs aligns each entry by its length (backend_webgpu.ts makeUniforms). */
export const planUniforms = (p: ChunkPlan): Uniforms => [p.rows, p.channels, p.chunkRows, p.chunks].map((v) => ({ type: 'int32', data: [v] }));

/** Sums `acc` (LANES × CT, lane-major) over lanes into acc[0..CT); needs workgroup-uniform control flow. */
const LANE_SUM = `
fn laneSum(tx : u32, lane : u32) {
  for (var stride = ${LANES / 2}u; stride > 0u; stride = stride / 2u) {
    workgroupBarrier();
    if (lane < stride) { acc[lane * ${CT}u + tx] = acc[lane * ${CT}u + tx] + acc[(lane + stride) * ${CT}u + tx]; }
  }
  workgroupBarrier();
}`;

const CHUNK_HEAD = `
var<workgroup> acc : array<f32, ${CT * LANES}>;
${LANE_SUM}
fn chunkBounds() -> vec2<i32> {
  let start = i32(workgroupId.y) * uniforms.chunkRows;
  return vec2<i32>(start, min(start + uniforms.chunkRows, uniforms.rows));
}`;

function chunked(key: string, inputs: string[], plan: ChunkPlan, body: string, uniforms = ''): WebGPUProgram {
  const spec: ProgramSpec = {
    key,
    inputs,
    outputShape: [plan.chunks, 2, plan.channels],
    workgroupSize: [CT, LANES, 1],
    dispatch: [Math.ceil(plan.channels / CT), plan.chunks, 1],
    uniforms: PLAN_UNIFORMS + uniforms,
    code: `${CHUNK_HEAD}
fn main(index : i32) {
  let tx = localId.x;
  let lane = localId.y;
  let c = i32(workgroupId.x) * ${CT} + i32(tx);
  let bounds = chunkBounds();
  let valid = c < uniforms.channels;
  let C = uniforms.channels;
  let dst = i32(workgroupId.y) * 2 * C + c;
  ${body}
}`,
  };
  return program(spec);
}

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
    key: 'bn_normalize',
    inputs: ['x', 'stats', 'scale', 'offset'],
    outputShape: shape,
    workgroupSize: [ELEMENTWISE_GROUP, 1, 1],
    dispatch: flatDispatch(size, ELEMENTWISE_GROUP),
    uniforms: 'total : i32, channels : i32, epsilon : f32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  let C = uniforms.channels;
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
 * Σ over chunks of partials[·, row, c], times 1/√(var + ε) when `normalized` is 1: dβ (row 0, Σ dy) or
 * dγ (row 1, Σ dy·x̂ = Σ dy·(x − mean) / √(var + ε)).
 */
export function sumChunksProgram(plan: ChunkPlan): WebGPUProgram {
  return program({
    key: 'bn_sum_chunks',
    inputs: ['partials', 'stats'],
    outputShape: [plan.channels],
    workgroupSize: [CT, LANES, 1],
    dispatch: [Math.ceil(plan.channels / CT), 1, 1],
    uniforms: `${PLAN_UNIFORMS} row : i32, normalized : i32, epsilon : f32,`,
    code: `
var<workgroup> acc : array<f32, ${CT * LANES}>;
${LANE_SUM}
fn main(index : i32) {
  let tx = localId.x;
  let lane = localId.y;
  let c = i32(workgroupId.x) * ${CT} + i32(tx);
  let C = uniforms.channels;
  var s = 0.0;
  if (c < C) { for (var k = i32(lane); k < uniforms.chunks; k = k + ${LANES}) { s = s + partials[(k * 2 + uniforms.row) * C + c]; } }
  acc[lane * ${CT}u + tx] = s;
  laneSum(tx, lane);
  if (lane == 0u && c < C) {
    var v = acc[tx];
    if (uniforms.normalized == 1) { v = v * inverseSqrt(stats[C + c] + uniforms.epsilon); }
    result[c] = v;
  }
}`,
  });
}

/**
 * The input gradient through the batch statistics, with M = rows and x̂ = (x − mean)/√(var + ε):
 *   dx = γ/√(var + ε) · (dy − dβ/M − x̂·dγ/M).
 */
export function inputGradProgram(shape: number[], channels: number): WebGPUProgram {
  const size = shape.reduce((a, b) => a * b, 1);
  return program({
    key: 'bn_input_grad',
    inputs: ['dy', 'x', 'stats', 'scale', 'dscale', 'doffset'],
    outputShape: shape,
    workgroupSize: [ELEMENTWISE_GROUP, 1, 1],
    dispatch: flatDispatch(size, ELEMENTWISE_GROUP),
    uniforms: 'total : i32, channels : i32, rows : i32, epsilon : f32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  let C = uniforms.channels;
  let c = index % C;
  let inv = inverseSqrt(stats[C + c] + uniforms.epsilon);
  let m = f32(uniforms.rows);
  let xhat = (x[index] - stats[c]) * inv;
  result[index] = scale[c] * inv * (dy[index] - doffset[c] / m - xhat * (dscale[c] / m));
}`,
  });
}
