/**
 * The replay's dropout masks (src/engine/replay/inputs.ts) are tfjs' own draws: seedrandom's alea seeded with
 * the seed's decimal string, as tfjs-core's UniformRandom does, in float32; and the mask's three forms
 * are tfjs-backend-cpu's float32 arithmetic. No GPU needed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import seedrandom from 'seedrandom';
import { describe, expect, it } from 'vitest';
import { drawMask, maskDrawer, maskValues, type MaskForm } from '../src/engine/replay/inputs.js';

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('maskDrawer', () => {
  it('draws exactly what seedrandom.alea(String(seed)) gives, in float32, for seeds across the range', () => {
    for (const seed of [0, 1, 977, 123_456_789, 2 ** 32 - 1]) {
      const random = seedrandom.alea(String(seed));
      const want = Float32Array.from({ length: 5000 }, () => random());
      expect(bits(maskDrawer(seed)(5000)), `seed ${seed}`).toEqual(bits(want));
    }
  });

  it('starts every draw from the seed again (one stream per dropout call), and another seed gives another mask', () => {
    const draw = maskDrawer(42);
    expect(bits(draw(100))).toEqual(bits(draw(300).subarray(0, 100)));
    expect(bits(maskDrawer(43)(100))).not.toEqual(bits(draw(100)));
  });
});

describe('maskValues', () => {
  it('keeps u, floors u + keep, or scales that by 1/keep, with float32 rounding at each step', () => {
    const u = Float32Array.of(0, 0.25, 0.4999999, 0.5, 0.75, 0.9999999);
    expect(Array.from(maskValues(u, { keep: 0.5, form: 'uniform' }))).toEqual(Array.from(u));
    expect(Array.from(maskValues(u, { keep: 0.5, form: 'floor' }))).toEqual([0, 0, 0, 1, 1, 1]);
    expect(Array.from(maskValues(u, { keep: 0.5, form: 'scaled' }))).toEqual([0, 0, 0, 2, 2, 2]);
    // keep 0.7 is 0.699999988… in float32: 0.3 + keep rounds to 1 in float32 (kept), 0.29 does not.
    const kept = maskValues(Float32Array.of(0.3, 0.29), { keep: 0.7, form: 'scaled' });
    expect(Array.from(kept)).toEqual([Math.fround(1 / Math.fround(0.7)), 0]);
  });
});

describe('drawMask', () => {
  it('writes maskValues(maskDrawer(seed)(n), form) bit for bit, in place, for every form and keep', () => {
    const forms: MaskForm[] = [0.5, 0.7, 0.9].flatMap((keep) => (['uniform', 'floor', 'scaled'] as const).map((form) => ({ keep, form })));
    for (const seed of [0, 977, 2 ** 32 - 1]) {
      for (const f of forms) {
        const staged = new Float32Array(4100).fill(-1);
        drawMask(seed, f, staged.subarray(2, 4098));
        expect(bits(staged.subarray(2, 4098)), `seed ${seed}, ${f.form} ${f.keep}`).toEqual(bits(maskValues(maskDrawer(seed)(4096), f)));
        // Nothing outside the range given.
        expect([staged[0], staged[1], staged[4098], staged[4099]]).toEqual([-1, -1, -1, -1]);
      }
    }
  });

  it('keeps its optimized code across garbage collections, as a worker drawing once a step between them needs', () => {
    // With seedrandom's seeding inlined into the loop, V8 threw the optimized code away at each collection
    // ("weak objects") and every step drew its mask unoptimized: 1.0–3.5 ms at batch 64 instead of ~0.4.
    // V8's own trace says whether that happens; the first draws (tiering up) are not judged.
    const dir = mkdtempSync(path.join(tmpdir(), 'trainpool-mask-'));
    try {
      const script = path.join(dir, 'draw.ts');
      const inputs = fileURLToPath(new URL('../src/engine/replay/inputs.ts', import.meta.url));
      writeFileSync(
        script,
        [
          `import { drawMask } from ${JSON.stringify(inputs)};`,
          'const into = new Float32Array(21_504);',
          'for (let i = 0; i < 12; i++) {',
          "  drawMask(1000 + i, { keep: 0.5, form: 'scaled' }, into);",
          "  if (i === 3) console.log('--- warm ---');",
          '  (globalThis as { gc?: () => void }).gc!();',
          '}',
        ].join('\n'),
      );
      const run = spawnSync(process.execPath, ['--import', 'tsx', '--expose-gc', '--trace-deopt', script], { encoding: 'utf8', timeout: 60_000 });
      expect(run.status, run.stderr).toBe(0);
      const warm = run.stdout.indexOf('--- warm ---');
      expect(warm).toBeGreaterThan(-1);
      const deopts = run.stdout
        .slice(warm)
        .split('\n')
        .filter((l) => /deoptimi[sz]/.test(l) && /\b(drawMask|aleaMask)\b/.test(l));
      expect(deopts).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
