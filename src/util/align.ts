/**
 * Binary layouts (frames, bulk regions, checkpoints) start every array at a multiple of 8 bytes, so that
 * a Float32Array or Float64Array view of it needs no copy (typed-array views must be aligned to their
 * element size).
 */
export const pad8 = (n: number): number => (n + 7) & ~7;
