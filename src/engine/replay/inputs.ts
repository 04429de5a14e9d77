/**
 * A recorded step's inputs and how its uploads are told apart (replay.ts): a probe whose every value is
 * distinct, and, for each upload of the probe step, which input its bytes are (a variable of the layout, the
 * images, the labels, a dropout mask in one of the forms tfjs uploads it) or that it is a constant.
 */
import seedrandom from 'seedrandom';
import { bytesOf, sameBits } from '../../util/bytes.js';
import type { GpuOp } from './capture.js';

export class RecordingError extends Error {}

export interface StepInputs {
  /** The flat state: trainable weights, then BN statistics, as the layout lays them out. */
  weights: Float32Array;
  x: Float32Array;
  labels: Uint8Array;
  dropoutSeed: number;
}

export interface StepOutputs {
  /** Gradients then BN statistics, as one read. */
  flat: Float32Array;
  loss: number;
  acc: number;
}

/** Where the layout's variables lie in `weights`. */
export interface VariableSpan {
  offset: number;
  size: number;
}

/**
 * What tfjs uploads for a dropout mask: dropout is mul(x, div(floor(add(u, keep)), keep)) with u =
 * randomUniform drawn on the CPU, and tfjs-backend-webgpu runs ops on tensors small enough and still on the
 * CPU there (its CPU forwarding), so the upload is u, floor(u + keep) or that divided by keep, in float32.
 */
export type MaskForm = { keep: number; form: 'uniform' | 'floor' | 'scaled' };

/** What each upload of the recorded step carries. */
export type Source = { kind: 'variable'; index: number } | { kind: 'x' } | { kind: 'labels' } | ({ kind: 'mask' } & MaskForm) | { kind: 'constant' };

/** Inputs whose every value is distinct from every other's, so that each upload names its source. */
export function probeInputs(o: { weightsSize: number; batch: number; imageSize: number }): StepInputs {
  const random = seedrandom.alea('trainpool replay probe');
  // Positive weights around 1 (BN variances must stay positive); images around 0; labels a cycle.
  const weights = Float32Array.from({ length: o.weightsSize }, () => 0.5 + random());
  const x = Float32Array.from({ length: o.batch * o.imageSize }, () => random() - 0.5);
  const labels = Uint8Array.from({ length: o.batch }, (_, i) => (i * 7 + 3) % 10);
  return { weights, x, labels, dropoutSeed: 977 };
}

interface AleaState {
  c: number;
  s0: number;
  s1: number;
  s2: number;
}

/** tfjs' dropout draws: randomUniform(shape, 0, 1, 'float32', seed), seedrandom's alea on String(seed), one stream per call. */
export function maskDrawer(seed: number): (n: number) => Float32Array {
  return (n) => drawMask(seed, { keep: 1, form: 'uniform' }, new Float32Array(n));
}

/** The mask as uploaded in `form`, with tfjs-backend-cpu's float32 arithmetic (add, floor, div). */
export function maskValues(u: Float32Array, { keep, form }: MaskForm): Float32Array {
  if (form === 'uniform') return u;
  const k = Math.fround(keep);
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) {
    const kept = Math.floor(Math.fround(u[i] + k));
    out[i] = form === 'floor' ? kept : kept / k; // the store rounds to float32, as tfjs-backend-cpu's div does
  }
  return out;
}

/**
 * maskValues(maskDrawer(seed)(into.length), mask) written into `into` in one pass, as a replayed step does
 * into its staging buffer: no array of draws between (a batch of 64 draws 21,504 values per step).
 */
export function drawMask(seed: number, { keep, form }: MaskForm, into: Float32Array): Float32Array {
  const { c, s0, s1, s2 } = (seedrandom.alea(String(seed), { state: true }) as unknown as { state(): AleaState }).state();
  return aleaMask(c, s0, s1, s2, Math.fround(keep), form === 'uniform' ? 0 : form === 'floor' ? 1 : 2, into);
}

/**
 * seedrandom's alea recurrence (lib/alea.js, Alea.next) from a state, on locals: the same doubles at ~5 ns a
 * value instead of ~25 through the closure. A function of numbers and the output only, apart from drawMask:
 * optimized code that inlined the seeding held weak references to seedrandom's closures and was thrown away
 * at the next garbage collection ("weak objects"), so a step that drew after one (a worker's, every step) ran
 * this loop unoptimized: 1–3.5 ms instead of 0.4–0.7 for a batch of 64's 21,504 values (in a replayed step).
 */
function aleaMask(c: number, s0: number, s1: number, s2: number, k: number, form: 0 | 1 | 2, into: Float32Array): Float32Array {
  const n = into.length;
  for (let i = 0; i < n; i++) {
    const t = 2091639 * s0 + c * 2.3283064365386963e-10; // 2^-32
    s0 = s1;
    s1 = s2;
    c = t | 0;
    s2 = t - c;
    if (form === 0) into[i] = s2;
    else {
      // As maskValues on the float32 draw: the draw rounded, then tfjs-backend-cpu's float32 add, floor, div.
      const kept = Math.floor(Math.fround(Math.fround(s2) + k));
      into[i] = form === 1 ? kept : kept / k;
    }
  }
  return into;
}

/** Each upload's source in the probe step, by its bytes. */
export function identify(ops: GpuOp[], probe: StepInputs, variables: VariableSpan[], rates: number[]): Map<number, Source> {
  const forms: MaskForm[] = [...new Set(rates)].flatMap((rate) => (['uniform', 'floor', 'scaled'] as const).map((form) => ({ keep: 1 - rate, form })));
  const candidates: { bytes: Uint8Array; source: Source }[] = [
    ...variables.map((v, index) => ({ bytes: bytesOf(probe.weights.subarray(v.offset, v.offset + v.size)), source: { kind: 'variable', index } as Source })),
    { bytes: bytesOf(probe.x), source: { kind: 'x' } },
    { bytes: bytesOf(new Int32Array(probe.labels)), source: { kind: 'labels' } },
  ];
  const sources = new Map<number, Source>();
  ops.forEach((o, at) => {
    if (o.op !== 'upload' && o.op !== 'writeBuffer') return;
    const found = candidates.filter((c) => sameBits(c.bytes, o.bytes));
    if (found.length > 1) throw new RecordingError(`upload ${at} of ${o.bytes.length} bytes matches ${found.length} inputs`);
    if (found.length === 1) sources.set(at, found[0].source);
    else {
      const u = o.op === 'upload' && o.bytes.length % 4 === 0 ? maskDrawer(probe.dropoutSeed)(o.bytes.length / 4) : undefined;
      const form = u && forms.find((f) => sameBits(maskValues(u, f), o.bytes));
      // A floor-form mask of 0s and 1s can only be told from a constant by the draw it matches.
      sources.set(at, form ? { kind: 'mask', ...form } : { kind: 'constant' });
    }
  });
  const seen = new Set([...sources.values()].filter((s) => s.kind === 'variable').map((s) => (s as { index: number }).index));
  if (seen.size !== variables.length) throw new RecordingError(`the step uploaded ${seen.size} of the ${variables.length} variables`);
  if (![...sources.values()].some((s) => s.kind === 'x')) throw new RecordingError('the step uploaded no images');
  return sources;
}
