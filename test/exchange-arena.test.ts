/**
 * The exchange arena's WebAssembly kernels (src/coordinator/optim/kernels.ts) against the JavaScript they
 * replace: the same bits for every replica count and length, zeros' signs, subnormals and huge values
 * included, the same divergence verdict, and the committed module is what kernels.wat assembles to.
 */
import { describe, expect, it } from 'vitest';
import { averageInto } from '../src/coordinator/optim/average.js';
import { ExchangeArena, exchangeThreads, SPLIT_MIN } from '../src/coordinator/optim/kernels.js';
import { KERNELS_WASM_BASE64 } from '../src/coordinator/optim/kernels-wasm.js';
import { sgdStep } from '../src/coordinator/optim/sgd.js';
// @ts-expect-error: a JavaScript build tool without type declarations
import { assembleKernels } from '../tools/build-wasm.mjs';

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/** Deterministic awkward values: ±0, subnormals, values far apart in magnitude (sums that round). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const pick = s % 9;
    out[i] = pick === 0 ? -0 : pick === 1 ? 0 : pick === 2 ? 1e-40 * ((s >> 8) % 7) : pick === 3 ? 3e38 / (1 + (s % 5)) : Math.sin(s) * 10 ** ((s >> 4) % 9 - 4);
  }
  return out;
}

describe('ExchangeArena kernels', () => {
  it('are the module kernels.wat assembles to (run node tools/build-wasm.mjs after editing it)', async () => {
    expect((await assembleKernels()).toString('base64')).toBe(KERNELS_WASM_BASE64);
  });

  it('average bit for bit as averageInto does, for 1 to 9 replicas and lengths around the 4-lane width', () => {
    for (const count of [1, 2, 3, 4, 5, 9]) {
      for (const n of [1, 3, 4, 5, 17, 1001]) {
        const arena = new ExchangeArena((count + 1) * (n + 4), count);
        const parts = Array.from({ length: count }, (_, r) => arena.adopt(values(n, 10 * r + n)));
        const out = arena.tryAlloc(n)!;
        arena.mean(out, parts);
        const want = averageInto(new Float32Array(n), parts.map((p) => p.slice()));
        expect(bits(out), `${count} × ${n}`).toEqual(bits(want));
      }
    }
  });

  it('apply momentum SGD to the mean bit for bit as sgdStep does, weights longer than the velocity', () => {
    for (const count of [1, 2, 3, 4, 6, 8]) {
      for (const n of [5, 16, 1003]) {
        const arena = new ExchangeArena((count + 3) * (n + 8), count);
        const grads = Array.from({ length: count }, (_, r) => arena.adopt(values(n, r + 1).map((v) => (Math.abs(v) > 1e30 ? v * 1e-30 : v))));
        const weights = arena.adopt(values(n + 3, 77));
        const velocity = arena.adopt(values(n, 78).map((v) => v * 1e-3));
        const w = weights.slice();
        const v = velocity.slice();
        for (const [lr, momentum] of [[0.005, 0.9], [0.0123456789, 0.99]]) {
          const ok = arena.meanSgd(weights.subarray(0, n + 3), velocity, grads, lr, momentum);
          const want = sgdStep(w, averageInto(new Float32Array(n), grads.map((g) => g.slice())), { velocity: v }, lr, momentum);
          expect([ok, bits(weights), bits(velocity)], `${count} × ${n}, lr ${lr}`).toEqual([want, bits(w), bits(v)]);
        }
        expect(ok(weights)).toBe(true);
      }
    }
    function ok(a: Float32Array) {
      return a.every(Number.isFinite);
    }
  });

  it('report a non-finite update anywhere, the 4-lane body or the tail, as sgdStep does', () => {
    for (const at of [0, 6, 9]) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const arena = new ExchangeArena(64, 2);
        const g = [arena.adopt(new Float32Array(10).fill(0.5)), arena.adopt(new Float32Array(10).fill(0.25))];
        g[1][at] = bad;
        const weights = arena.adopt(new Float32Array(10).fill(1));
        const velocity = arena.tryAlloc(10)!;
        expect(arena.meanSgd(weights, velocity, g, 0.1, 0.9), `${bad} at ${at}`).toBe(false);
      }
    }
    const arena = new ExchangeArena(64, 1);
    // Huge but finite velocities are not a divergence: x·0 is 0 for every finite x.
    expect(arena.meanSgd(arena.adopt(new Float32Array(8)), arena.tryAlloc(8)!, [arena.adopt(new Float32Array(8).fill(-3e38))], 1, 0)).toBe(true);
  });

  it('take the JavaScript path for arrays outside the arena, with the same results', () => {
    const arena = new ExchangeArena(8, 2);
    const parts = [values(7, 1), values(7, 2)];
    expect(bits(arena.mean(new Float32Array(7), parts))).toEqual(bits(averageInto(new Float32Array(7), parts)));
    const [w1, v1, w2, v2] = [values(7, 3), new Float32Array(7), values(7, 3), new Float32Array(7)];
    expect(arena.meanSgd(w1, v1, parts, 0.01, 0.9)).toBe(sgdStep(w2, averageInto(new Float32Array(7), parts), { velocity: v2 }, 0.01, 0.9));
    expect([bits(w1), bits(v1)]).toEqual([bits(w2), bits(v2)]);
    // More parts than the table holds: JavaScript too.
    const three = [1, 2, 3].map((s) => arena.adopt(values(1, s)));
    expect(bits(arena.mean(new Float32Array(1), three))).toEqual(bits(averageInto(new Float32Array(1), three)));
  });

  it('hand out 16-byte-aligned arrays, the same slot for the same key and length, and nothing once full', () => {
    const arena = new ExchangeArena(40, 1);
    const a = arena.tryAlloc(3)!;
    const b = arena.tryAlloc(5)!;
    expect([a.byteOffset % 16, b.byteOffset % 16, b.byteOffset - a.byteOffset]).toEqual([0, 0, 16]);
    const s = arena.slot('0:grads', 4)!;
    expect(arena.slot('0:grads', 4)).toBe(s);
    expect(arena.slot('1:grads', 4)).not.toBe(s);
    expect(arena.holds(s) && !arena.holds(new Float32Array(4))).toBe(true);
    expect(arena.tryAlloc(1e6)).toBeUndefined();
    const big = new Float32Array(1e6);
    expect(arena.adopt(big)).toBe(big);
    expect(arena.slot('2:grads', 1e6)).toBeUndefined();
    const receive = arena.receiver(3, ['grads']);
    const view = receive('grads', 16)!;
    expect([view.byteLength, view.buffer === a.buffer, receive('grads', 16) === view || receive('grads', 16)!.byteOffset === view.byteOffset]).toEqual([16, true, true]);
    expect([receive('x', 16), receive('grads', 6)]).toEqual([undefined, undefined]);
  });

  it('split the update over helper threads with the same bits whoever takes which chunk, and report a non-finite value in any chunk', async () => {
    // Three threads; 33 chunks of which the last is a tail that is not whole SIMD lanes.
    const n = 8 * SPLIT_MIN + 7;
    const arena = new ExchangeArena(6 * (n + 8), 4, 3);
    // Updates of `length` values (n, or fewer: consecutive updates with other chunk counts).
    const check = (count: number, what: string, length = n) => {
      const grads = Array.from({ length: count }, (_, r) => arena.slot(`g${r}`, n)!.subarray(0, length));
      grads.forEach((g, r) => g.set(values(length, r + 5).map((v) => (Math.abs(v) > 1e30 ? v * 1e-30 : v))));
      const [weights, velocity] = [arena.slot('w', n)!.subarray(0, length), arena.slot('v', n)!.subarray(0, length)];
      weights.set(values(length, 11));
      velocity.set(values(length, 12).map((v) => v * 1e-3));
      const [w, v] = [weights.slice(), velocity.slice()];
      const ok = arena.meanSgd(weights, velocity, grads, 0.005, 0.9);
      const want = sgdStep(w, averageInto(new Float32Array(length), grads.map((g) => g.slice())), { velocity: v }, 0.005, 0.9);
      expect(ok, what).toBe(want);
      expect(Buffer.from(weights.buffer, weights.byteOffset, 4 * length).equals(Buffer.from(w.buffer)), `${what}: weights`).toBe(true);
      expect(Buffer.from(velocity.buffer, velocity.byteOffset, 4 * length).equals(Buffer.from(v.buffer)), `${what}: velocity`).toBe(true);
      return arena.threadsUsed;
    };
    try {
      expect(await arena.ready()).toBe(3);
      // Which thread takes which chunk varies from call to call; the bits may not.
      const used = new Set<number>();
      for (let round = 0; round < 50 && (round < 3 || arena.helperChunks === 0); round++) {
        for (const count of [1, 2, 3, 4]) used.add(check(count, `${count} replicas, round ${round}`));
      }
      expect(arena.helperChunks, 'chunks the helpers ran').toBeGreaterThan(0);
      expect(Math.max(...used)).toBeGreaterThan(1);
      // Back-to-back updates with 33 and 5 chunks: a helper late for one must not take a chunk of the next.
      for (let round = 0; round < 10; round++) {
        check(2, `33 chunks, round ${round}`);
        check(2, `5 chunks, round ${round}`, SPLIT_MIN + 4);
      }
      // A NaN in the first chunk, in one in the middle, and in the last chunk's tail.
      for (const at of [3, 4 * SPLIT_MIN + 100, n - 1]) {
        const g = [arena.slot('g0', n)!, arena.slot('g1', n)!];
        const [w, v] = [arena.slot('w', n)!, arena.slot('v', n)!];
        g[0].fill(0.5);
        g[1].fill(0.25);
        g[1][at] = Number.NaN;
        expect(arena.meanSgd(w.fill(1), v.fill(0), g, 0.1, 0.9), `NaN at ${at}`).toBe(false);
        g[1][at] = 0.25;
        expect(arena.meanSgd(w.fill(1), v.fill(0), g, 0.1, 0.9), `no NaN, after one at ${at}`).toBe(true);
      }
      // Short arrays are not worth a thread.
      const small = [arena.adopt(values(100, 1))];
      const before = arena.helperChunks;
      arena.meanSgd(arena.adopt(values(100, 2)), arena.adopt(new Float32Array(100)), small, 0.1, 0.9);
      expect([arena.threadsUsed, arena.helperChunks]).toEqual([1, before]);
    } finally {
      await arena.close();
    }
  });

  it('give a run a thread per core for its update, four at most (the workers wait for it)', () => {
    expect([1, 2, 3, 4, 6, 16, 32].map((cores) => exchangeThreads(cores))).toEqual([1, 2, 3, 4, 4, 4, 4]);
  });

  it('refuse arrays of different lengths, and no arrays, as bugs', () => {
    const arena = new ExchangeArena(64, 4);
    expect(() => arena.mean(arena.tryAlloc(4)!, [arena.tryAlloc(4)!, arena.tryAlloc(3)!])).toThrow(
      'the exchange arena got arrays of 4, 3 values for 4: this is a bug',
    );
    expect(() => arena.mean(arena.tryAlloc(4)!, [])).toThrow('the exchange arena got no arrays to average: this is a bug');
  });
});
