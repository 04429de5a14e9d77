/**
 * Element-wise mean of equally long arrays (gradients or BN statistics from every replica).
 * Sums in float64 and rounds once, so the result does not depend on the order replicas answered in.
 */
export function averageInto(out: Float32Array, parts: readonly Float32Array[]): Float32Array {
  if (parts.length === 0) throw new Error('averageInto: no arrays to average: this is a bug');
  for (const p of parts) {
    if (p.length !== out.length) {
      throw new Error(`averageInto: arrays of ${parts.map((q) => q.length).join(', ')} values into ${out.length}: this is a bug`);
    }
  }
  const n = parts.length;
  if (n === 1) {
    out.set(parts[0]);
    return out;
  }
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let k = 0; k < n; k++) s += parts[k][i];
    out[i] = s / n;
  }
  return out;
}

export function average(parts: readonly Float32Array[]): Float32Array {
  return averageInto(new Float32Array(parts[0]?.length ?? 0), parts);
}
