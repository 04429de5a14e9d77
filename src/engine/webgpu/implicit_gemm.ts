/**
 * A tiled matrix product C[M, N] = Σ_k A[k, m]·B[k, n] whose operands are never materialized: `loadA` and
 * `loadB` are WGSL functions that compute each element from a tensor (an "implicit GEMM", as cuDNN's
 * IMPLICIT_GEMM convolution algorithms and tfjs' own conv2d_mm_webgpu do for the forward convolution).
 *
 * Tiling: a workgroup of 16×16 threads computes a 64×64 tile of C, each thread 4×4 values spaced 16
 * apart (rows ty + 16i, columns tx + 16j: neighbouring threads write neighbouring columns). The K axis
 * is walked 16 at a time through workgroup memory, 1,024 values of each operand per step, 4 per thread.
 * Which of an operand's two axes neighbouring threads load along is chosen per operand (`aAlong`,
 * `bAlong`) so that they read neighbouring addresses of the underlying tensor (its channels).
 *
 * Split K: with few output tiles and a long K (a filter gradient: C is a filter, K every position of
 * the batch), one tile per workgroup would leave most of a large GPU idle. Then K is cut into `splits`
 * ranges, `result` is [splits, M, N] partial products, and `sumSplitsProgram` adds them up.
 *
 * Groups: several independent products of their own M and K in one dispatch (`groups`, one per
 * workgroup z), each storing its C where `storeC` says; a strided convolution's input gradient is one per
 * residue class of dx's rows and columns (conv2d_backprop.ts). Groups share N and the tile grid, which
 * covers the largest group's M; tiles past a smaller group's M load zeros and store nothing.
 */
import { flatDispatch, program } from './program.js';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

const TILE = 64;
const TK = 16;
const THREADS = 256;
/** Workgroups a split-K product aims for: a few per multiprocessor of a large GPU (an H100 has 132). */
const TARGET_WORKGROUPS = 512;
const MAX_SPLITS = 64;

export interface GemmShape {
  m: number;
  n: number;
  k: number;
}

export interface GemmSpec {
  key: string;
  inputs: string[];
  /** WGSL: fn loadA(k : i32, m : i32, z : i32) -> f32 and fn loadB(k : i32, n : i32, z : i32) -> f32 (z: the split or group), plus helpers; may read uniforms. */
  loaders: string;
  /** Uniform fields the loaders use (after the GEMM's own), and their order in `runProgram`'s uniforms. */
  uniforms: string;
  aAlong: 'k' | 'm';
  bAlong: 'k' | 'n';
  /**
   * Group mode: WGSL defining fn groupK(z : i32) -> i32 and fn groupM(z : i32) -> i32 (group z's K and M)
   * and fn storeC(m : i32, n : i32, z : i32, v : f32), which writes into `result` of `outputShape`. The
   * loaders get z as a third argument either way.
   */
  groups?: { count: number; maxM: number; outputShape: number[]; wgsl: string };
  /** WGSL defining fn epilogue(m : i32, n : i32, v : f32) -> f32, applied to each value stored (a bias add); not with split K. */
  epilogue?: string;
}

/** How many K ranges, each a multiple of TK long, for `shape` when split K is allowed. */
export function planSplits(shape: GemmShape): { splits: number; kPerSplit: number } {
  const tiles = Math.ceil(shape.m / TILE) * Math.ceil(shape.n / TILE);
  const kSteps = Math.ceil(shape.k / TK);
  const splits = Math.max(1, Math.min(MAX_SPLITS, Math.ceil(TARGET_WORKGROUPS / tiles), Math.floor(kSteps / 4)));
  const kPerSplit = Math.ceil(kSteps / splits) * TK;
  return { splits: Math.ceil(shape.k / kPerSplit), kPerSplit };
}

/** The GEMM's own uniforms, first in the struct: M, N, K and the K range of one split. */
export const GEMM_UNIFORMS = 'gemmM : i32, gemmN : i32, gemmK : i32, kPerSplit : i32,';
export function gemmUniforms(shape: GemmShape, kPerSplit: number) {
  return [shape.m, shape.n, shape.k, kPerSplit].map((v) => ({ type: 'int32' as const, data: [v] }));
}

/** The tile loop for `spec`, writing [splits, M, N]; splits = 1 writes C itself. */
export function implicitGemmProgram(spec: GemmSpec, shape: GemmShape, splits: number): WebGPUProgram {
  const loadTile = (name: 'A' | 'B', along: string, loader: string, limit: string) => {
    // Element e of the TK × TILE tile: `along` the matrix axis, neighbouring threads take neighbouring
    // values of the axis they read contiguously.
    const [kk, col] = along === 'k' ? ['e % TK', 'e / TK'] : ['e / TILE', 'e % TILE'];
    return `
    for (var r = 0; r < ${(TK * TILE) / THREADS}; r = r + 1) {
      let e = i32(localIndex) + r * ${THREADS};
      let kk = ${kk};
      let col = ${col};
      let kg = k0 + kk;
      let cg = ${name === 'A' ? 'm0' : 'n0'} + col;
      var v = 0.0;
      if (kg < kEnd && cg < ${limit}) { v = ${loader}(kg, cg, split); }
      tile${name}[kk * TILE + col] = v;
    }`;
  };
  const g = spec.groups;
  if ((g !== undefined || spec.epilogue !== undefined) && splits !== 1) {
    throw new Error(`${spec.key}: a grouped product or one with an epilogue cannot also split K. Received: ${splits} splits: this is a bug`);
  }
  return program({
    key: `${spec.key}_gemm${spec.aAlong}${spec.bAlong}${g === undefined ? '' : `_groups${g.count}`}`,
    inputs: spec.inputs,
    outputShape: g === undefined ? [splits, shape.m, shape.n] : g.outputShape,
    workgroupSize: [16, 16, 1],
    dispatch: [Math.ceil(shape.n / TILE), Math.ceil((g?.maxM ?? shape.m) / TILE), g?.count ?? splits],
    uniforms: GEMM_UNIFORMS + spec.uniforms,
    code: `
const TILE = ${TILE};
const TK = ${TK};
var<workgroup> tileA : array<f32, ${TK * TILE}>;
var<workgroup> tileB : array<f32, ${TK * TILE}>;
var<workgroup> splitShared : i32;
${spec.loaders}
${g?.wgsl ?? ''}
${spec.epilogue ?? 'fn epilogue(m : i32, n : i32, v : f32) -> f32 { return v; }'}
fn main(index : i32) {
  let tx = i32(localId.x);
  let ty = i32(localId.y);
  let n0 = i32(workgroupId.x) * TILE;
  let m0 = i32(workgroupId.y) * TILE;
  // tfjs hands the workgroup id over in a private variable, which WGSL's uniformity analysis cannot
  // follow; the barriers in the K loop need its bounds to be provably uniform, so pass them through
  // workgroup memory.
  if (localIndex == 0u) { splitShared = i32(workgroupId.z); }
  let split = workgroupUniformLoad(&splitShared); // the group in group mode
  ${
    g === undefined
      ? `let kBegin = split * uniforms.kPerSplit;
  let kEnd = min(kBegin + uniforms.kPerSplit, uniforms.gemmK);
  let mLimit = uniforms.gemmM;`
      : `let kBegin = 0;
  let kEnd = groupK(split);
  let mLimit = groupM(split);`
  }
  var acc : array<array<f32, 4>, 4>;
  for (var k0 = kBegin; k0 < kEnd; k0 = k0 + TK) {
    ${loadTile('A', spec.aAlong, 'loadA', 'mLimit')}
    ${loadTile('B', spec.bAlong, 'loadB', 'uniforms.gemmN')}
    workgroupBarrier();
    for (var kk = 0; kk < TK; kk = kk + 1) {
      var a : array<f32, 4>;
      var b : array<f32, 4>;
      for (var i = 0; i < 4; i = i + 1) {
        a[i] = tileA[kk * TILE + ty + 16 * i];
        b[i] = tileB[kk * TILE + tx + 16 * i];
      }
      for (var i = 0; i < 4; i = i + 1) {
        for (var j = 0; j < 4; j = j + 1) { acc[i][j] = acc[i][j] + a[i] * b[j]; }
      }
    }
    workgroupBarrier();
  }
  let base = split * uniforms.gemmM * uniforms.gemmN;
  for (var i = 0; i < 4; i = i + 1) {
    let m = m0 + ty + 16 * i;
    for (var j = 0; j < 4; j = j + 1) {
      let n = n0 + tx + 16 * j;
      if (m < mLimit && n < uniforms.gemmN) { ${g === undefined ? 'result[base + m * uniforms.gemmN + n] = epilogue(m, n, acc[i][j]);' : 'storeC(m, n, split, acc[i][j]);'} }
    }
  }
}`,
  });
}

/** C = Σ over the first axis of partials [splits, …]: one thread per element of C. */
export function sumSplitsProgram(outputShape: number[]): WebGPUProgram {
  const size = outputShape.reduce((a, b) => a * b, 1);
  return program({
    key: 'sum_splits',
    inputs: ['partials'],
    outputShape,
    workgroupSize: [THREADS, 1, 1],
    dispatch: flatDispatch(size, THREADS),
    uniforms: 'total : i32, splits : i32,',
    code: `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  var s = 0.0;
  for (var i = 0; i < uniforms.splits; i = i + 1) { s = s + partials[i * uniforms.total + index]; }
  result[index] = s;
}`,
  });
}

export const sumSplitsUniforms = (total: number, splits: number) => [total, splits].map((v) => ({ type: 'int32' as const, data: [v] }));
