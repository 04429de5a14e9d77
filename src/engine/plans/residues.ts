/**
 * A strided convolution's input gradient by residue class, along one axis (wasm's
 * wasm/conv2d_backprop_input_strided.ts and webgpu/conv2d_backprop.ts both split it this way). With forward
 * padding p and stride s, dx row i has residue r = (i + p) mod s and q = (i + p − r)/s, and only the taps
 * r + s·j (j < ⌈(K − r)/s⌉) reach it: dx[q·s + r − p] = Σ_j dy[q − j] · W[r + s·j].
 */
export interface Residue {
  r: number;
  /** The taps r + s·j, j < taps (0 when the filter is shorter than r + 1). */
  taps: number;
  /** q of the first dx row of this residue. */
  q0: number;
  /** That row, q0·s + r − p; the next ones every s rows. */
  first: number;
  /** How many dx rows have this residue. */
  rows: number;
}

export function residues(size: number, kernel: number, stride: number, pad: number): Residue[] {
  return Array.from({ length: stride }, (_, r) => {
    const q0 = Math.ceil((pad - r) / stride);
    return {
      r,
      taps: Math.max(0, Math.ceil((kernel - r) / stride)),
      q0,
      first: q0 * stride + r - pad,
      rows: Math.max(0, Math.floor((size - 1 + pad - r) / stride) - q0 + 1),
    };
  });
}
