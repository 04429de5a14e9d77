// The layering of src/ (and no import cycles), checked with dependency-cruiser against the rules in
// .dependency-cruiser.cjs, the same file `npm run lint:deps` uses, so that `npm test` enforces it too.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { cruise, type ICruiseOptions, type ICruiseResult, type IViolation } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIG = path.join(ROOT, '.dependency-cruiser.cjs');
const TSCONFIG = path.join(ROOT, 'tsconfig.json');

let options: ICruiseOptions;
let tsConfig: ReturnType<typeof extractTSConfig>;

beforeAll(async () => {
  options = await extractDepcruiseOptions(CONFIG);
  // The config names tsconfig.json relative to the working directory; pin it to this repository's.
  options = { ...options, tsConfig: { fileName: TSCONFIG } };
  tsConfig = extractTSConfig(TSCONFIG);
});

/** Cruises `src` under `baseDir` with the configured rules; returns the result. */
async function cruiseSrc(baseDir: string): Promise<ICruiseResult> {
  const { output } = await cruise(['src'], { ...options, baseDir }, {}, { tsConfig });
  if (typeof output === 'string') throw new Error(`expected a cruise result, got a report: ${output}`);
  return output;
}

function describeViolation(violation: IViolation): string {
  const cycle = violation.cycle?.length
    ? ` [cycle: ${[violation.from, ...violation.cycle.map((step) => step.name)].join(' → ')}]`
    : '';
  return `${violation.from} → ${violation.to} (${violation.rule.name})${cycle}`;
}

describe('architecture (dependency-cruiser, .dependency-cruiser.cjs)', () => {
  it('src/ has no import cycles and no imports against the layering', async () => {
    const result = await cruiseSrc(ROOT);
    // A sanity check that the cruise saw the tree and resolved its `.js` specifiers to `.ts` files.
    expect(result.summary.totalCruised).toBeGreaterThan(20);
    const unresolved = result.modules
      .flatMap((module) => module.dependencies.map((dependency) => ({ from: module.source, dependency })))
      .filter(({ dependency }) => dependency.couldNotResolve);
    expect(unresolved.map(({ from, dependency }) => `${from} → ${dependency.module}`)).toEqual([]);

    const violations = result.summary.violations.map(describeViolation);
    expect(violations, `dependency rule violations:\n  ${violations.join('\n  ')}`).toEqual([]);
  });

  describe('on a miniature tree with an upward import and a cycle', () => {
    let dir: string;

    beforeAll(() => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-architecture-'));
      const files: Record<string, string> = {
        'src/engine/a.ts': "import { b } from '../coordinator/b.js';\nexport const a = (): number => b() + 1;\n",
        'src/coordinator/b.ts': "import { c } from './c.js';\nexport const b = (): number => c() + 1;\n",
        'src/coordinator/c.ts': "import type { b } from './b.js';\nexport const c = (f?: typeof b): number => (f ? 1 : 0);\n",
      };
      for (const [file, text] of Object.entries(files)) {
        mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
        writeFileSync(path.join(dir, file), text);
      }
    });

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('reports both, by rule name', async () => {
      const result = await cruiseSrc(dir);
      const found = result.summary.violations.map((violation) => ({
        rule: violation.rule.name,
        from: violation.from,
        to: violation.to,
      }));
      // Every violation is an error, the severity that makes `depcruise` exit non-zero in CI.
      expect(result.summary.error, result.summary.violations.map(describeViolation).join('\n')).toBe(
        found.length,
      );
      expect(found).toContainEqual({
        rule: 'layer-engine',
        from: 'src/engine/a.ts',
        to: 'src/coordinator/b.ts',
      });
      // The cycle b → c → b (c's import of b is type-only: it counts all the same), reported once.
      const cycles = result.summary.violations
        .filter((violation) => violation.rule.name === 'no-circular')
        .map((violation) => new Set([violation.from, ...(violation.cycle ?? []).map((step) => step.name)]));
      expect(cycles).toEqual([new Set(['src/coordinator/b.ts', 'src/coordinator/c.ts'])]);
      // Nothing else: the miniature tree breaks exactly those two rules.
      expect(new Set(found.map(({ rule }) => rule))).toEqual(new Set(['layer-engine', 'no-circular']));
    });
  });
});
