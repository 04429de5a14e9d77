/**
 * Per-channel reductions of a channels-last tensor read as a [rows, channels] matrix (rows = N·H·W), in
 * place: no transpose first, as tfjs-backend-webgpu's reduce needs. A workgroup of 32 channels × 8 row
 * lanes reads whole 128-byte rows of 32 channels (coalesced); rows are split into at most 64 chunks so
 * that a large activation gives about 256 workgroups, and a second small program combines the chunks.
 * Used by BatchNormalization (batch_norm_programs.ts) and by bias-gradient sums (column_sum.ts).
 */
import { program, type ProgramSpec, type Uniforms } from './program.js';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

/** Channels per workgroup (x) and row lanes (y). */
export const CT = 32;
export const LANES = 8;
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

export const PLAN_UNIFORMS = 'rows : i32, channels : i32, chunkRows : i32, chunks : i32,';
/** One entry per scalar field: tfjs aligns each entry by its length (backend_webgpu.ts makeUniforms). */
export const planUniforms = (p: ChunkPlan): Uniforms => [p.rows, p.channels, p.chunkRows, p.chunks].map((v) => ({ type: 'int32', data: [v] }));

/** Sums `acc` (LANES × CT, lane-major) over lanes into acc[0..CT); needs workgroup-uniform control flow. */
export const LANE_SUM = `
fn laneSum(tx : u32, lane : u32) {
  for (var stride = ${LANES / 2}u; stride > 0u; stride = stride / 2u) {
    workgroupBarrier();
    if (lane < stride) { acc[lane * ${CT}u + tx] = acc[lane * ${CT}u + tx] + acc[(lane + stride) * ${CT}u + tx]; }
  }
  workgroupBarrier();
}`;

export const CHUNK_HEAD = `
var<workgroup> acc : array<f32, ${CT * LANES}>;
${LANE_SUM}
fn chunkBounds() -> vec2<i32> {
  let start = i32(workgroupId.y) * uniforms.chunkRows;
  return vec2<i32>(start, min(start + uniforms.chunkRows, uniforms.rows));
}`;

/**
 * A program with one workgroup per (32-channel block, row chunk) writing partials [chunks, 2, C]. `body`
 * sees tx and lane (this thread), c (its channel), valid (c < C), bounds (the chunk's rows [x, y)), C, and
 * dst (the index of row 0 of this chunk's partials for c), and can use `acc` with laneSum.
 */
export function chunked(key: string, inputs: string[], plan: ChunkPlan, body: string, uniforms = ''): WebGPUProgram {
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

/**
 * Σ over chunks of partials[·, row, c], partials being [chunks, partialRows, C]. With two partial rows
 * (BatchNormalization's, with its stats [2, C] as a second input) the sum is multiplied by 1/√(var + ε)
 * when `normalized` is 1: dβ (row 0, Σ dy) or dγ (row 1, Σ dy·x̂ = Σ dy·(x − mean)/√(var + ε)). With one
 * it is a plain column sum (column_sum.ts).
 */
export function sumChunksProgram(plan: ChunkPlan, partialRows = 2): WebGPUProgram {
  const normalize = partialRows === 2;
  return program({
    key: `bn_sum_chunks_${partialRows}`,
    inputs: normalize ? ['partials', 'stats'] : ['partials'],
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
  if (c < C) { for (var k = i32(lane); k < uniforms.chunks; k = k + ${LANES}) { s = s + partials[(k * ${partialRows} + uniforms.row) * C + c]; } }
  acc[lane * ${CT}u + tx] = s;
  laneSum(tx, lane);
  if (lane == 0u && c < C) {
    var v = acc[tx];
    ${normalize ? 'if (uniforms.normalized == 1) { v = v * inverseSqrt(stats[C + c] + uniforms.epsilon); }' : ''}
    result[c] = v;
  }
}`,
  });
}

/** Per chunk: Σ x over its rows, as partials [chunks, 1, C]. */
export function chunkSumsProgram(plan: ChunkPlan): WebGPUProgram {
  return program({
    key: 'chunk_sums',
    inputs: ['x'],
    outputShape: [plan.chunks, 1, plan.channels],
    workgroupSize: [CT, LANES, 1],
    dispatch: [Math.ceil(plan.channels / CT), plan.chunks, 1],
    uniforms: PLAN_UNIFORMS,
    code: `${CHUNK_HEAD}
fn main(index : i32) {
  let tx = localId.x;
  let lane = localId.y;
  let c = i32(workgroupId.x) * ${CT} + i32(tx);
  let bounds = chunkBounds();
  let C = uniforms.channels;
  var s = 0.0;
  if (c < C) { for (var r = bounds.x + i32(lane); r < bounds.y; r = r + ${LANES}) { s = s + x[r * C + c]; } }
  acc[lane * ${CT}u + tx] = s;
  laneSum(tx, lane);
  if (lane == 0u && c < C) { result[i32(workgroupId.y) * C + c] = acc[tx]; }
}`,
  });
}
