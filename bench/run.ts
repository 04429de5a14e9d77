/**
 * `npm run bench`: the runtime's numbers in one run, written to bench/results/runtime.json and printed.
 *
 *   transport   weights out + gradients back (6.6 MB each way) through a worker process
 *   overhead    fake-compute workers (15 ms/step) for 1, 2, 4, 8 workers: steps/s, scaling efficiency,
 *               share of the step that is exchange rather than compute
 *   augment     the piscina pool with 1 and 2 threads, 64-image CIFAR shards
 *   engine      MiniGoogLeNet training img/s on each backend available here (one child process each,
 *               since a backend is process-wide)
 *
 *   passes      each per-element pass of a step alone: region writes and reads, the mean + SGD in
 *               JavaScript and in WebAssembly
 *   hosts       two fake workers on one host, and on two hosts over loopback TCP (authenticated)
 *
 * Options: --only transport,passes,overhead,hosts,augment,engine  --backends wasm,cpu,webgpu  --quick
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchAugment } from './augment.js';
import type { EngineResult } from './engine.js';
import { benchHosts, benchOverhead, benchPasses, benchTransport, type OverheadResult } from './runtime.js';
import { sharedMemory } from '../src/protocol/shm.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The batch and step count per backend: the stock cpu backend is too slow for batch 64 in a bench. */
const ENGINE_RUNS: Record<string, { batch: number; steps: number }> = {
  wasm: { batch: 64, steps: 3 },
  cpu: { batch: 8, steps: 1 },
  webgpu: { batch: 64, steps: 5 },
  tensorflow: { batch: 64, steps: 10 },
};

function engineInChild(backend: string, quick: boolean): EngineResult | { backend: string; error: string } {
  const { batch, steps } = ENGINE_RUNS[backend] ?? { batch: 64, steps: 3 };
  try {
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', path.join(here, 'engine.ts'), '--backend', backend, '--batch', String(batch), '--steps', String(quick ? 1 : steps), '--json'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], cwd: path.join(here, '..') },
    );
    return JSON.parse(out.trim().split('\n').at(-1)!);
  } catch (e) {
    const stderr = String((e as { stderr?: string }).stderr ?? (e as Error).message).trim().split('\n').at(-1);
    return { backend, error: stderr ?? 'failed' };
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string', default: 'transport,passes,overhead,hosts,augment,engine' },
      backends: { type: 'string', default: 'wasm,cpu' },
      quick: { type: 'boolean', default: false },
    },
  });
  const only = new Set(values.only!.split(','));
  const quick = values.quick!;
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version },
  };

  if (only.has('transport')) {
    // Mapped regions (run.ts's default where the addon is built) and read/write, side by side.
    // 200 round trips of ~2.5 ms: with 30, one stall of this VM (3–29 ms now and then) moved the mean by 0.5 ms.
    const rows = [await benchTransport(quick ? 5 : 200, true), await benchTransport(quick ? 5 : 30, false)];
    results.transport = rows;
    console.log('\nTransport: 6.6 MB of weights out, 6.6 MB of gradients back, one worker process, zero compute');
    console.table(
      rows.map((t) => ({
        regions: t.regions,
        'ms/round trip': t.msPerRoundTrip.toFixed(2),
        'ms beyond the worker\'s fill': t.msBeyondCompute.toFixed(2),
        'MB/s': t.megabytesPerSecond.toFixed(0),
        'payload MB': (t.payloadBytes / 1e6).toFixed(2),
      })),
    );
  }
  if (only.has('overhead')) {
    // Side by side in one run, this VM drifting ±20 % between runs: the exchange as run.ts does it (mapped
    // where the addon is built), the same kernels over read/write regions, and the JavaScript passes.
    const rows: OverheadResult[] = [];
    const exchanges = sharedMemory() ? (['mapped', 'mapped, 2 threads', 'wasm', 'js'] as const) : (['wasm', 'js'] as const);
    // run.ts's exchange over 100 steps (its rows carry the targets), the others over 40.
    for (const exchange of exchanges) rows.push(...(await benchOverhead([1, 2, 4, 8], 15, quick ? 10 : exchange === 'mapped' ? 100 : 40, exchange, quick ? 0 : 20)));
    results.overhead = rows;
    console.log('\nCoordinator overhead: fake workers computing 15 ms per step, MiniGoogLeNet-sized state');
    console.table(
      rows.map((r) => ({
        exchange: r.exchange,
        workers: r.workers,
        'overhead ms': r.overheadMs.toFixed(1),
        'median step': r.overheadMedianMs.toFixed(1),
        'ms/step': r.msPerStep.toFixed(1),
        'steps/s': r.stepsPerSecond.toFixed(1),
        'img/s': Math.round(r.imagesPerSecond),
        efficiency: `${(r.efficiency * 100).toFixed(1)} %`,
        'exchange share': `${(r.exchangeShare * 100).toFixed(1)} %`,
        'shards ready': `${(r.shardsReadyShare * 100).toFixed(0)} %`,
        'CPU stolen': r.stolenShare === null ? '–' : `${(r.stolenShare * 100).toFixed(0)} %`,
      })),
    );
  }
  if (only.has('hosts')) {
    const rows = await benchHosts(15, quick ? 10 : 40);
    results.hosts = rows;
    console.log('\nTwo workers (fake, 15 ms per step) on one host, and on two hosts over loopback TCP');
    console.table(rows.map((r) => ({ setup: r.setup, steps: r.steps, 'ms/step': r.msPerStep.toFixed(1), 'overhead ms': r.overheadMs.toFixed(1) })));
  }
  if (only.has('passes')) {
    const rows = await benchPasses([1, 2, 4, 8], quick ? 5 : 15);
    results.passes = rows;
    console.log('\nPer-element passes of a step, each alone, MiniGoogLeNet-sized (median ms)');
    console.table(rows.map((r) => ({ pass: r.pass, ms: r.ms.toFixed(2) })));
  }
  if (only.has('augment')) {
    const rows = [];
    for (const threads of [1, 2]) rows.push({ threads, ...(await benchAugment({ threads, images: 64, seconds: quick ? 1 : 3 })) });
    results.augment = rows;
    console.log('\nAugmentation pool: 64-image 32×32×3 shards (mean subtraction, shift, flip)');
    console.table(rows.map((r) => ({ threads: r.threads, 'images/s': Math.round(r.imagesPerSec) })));
  }
  if (only.has('engine')) {
    const rows = values.backends!.split(',').map((b) => engineInChild(b, quick));
    results.engine = rows;
    console.log('\nTraining step, MiniGoogLeNet 32×32×3 (forward in training mode + gradients), one process');
    console.table(
      rows.map((r) =>
        'error' in r
          ? { backend: r.backend, error: r.error }
          : { backend: r.backend, device: r.device, batch: r.batch, 'ms/step': r.msPerStep.toFixed(0), 'img/s': r.imgPerSec.toFixed(2), kernels: r.kernelsPerStep },
      ),
    );
  }
  const dir = path.join(here, 'results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, quick ? 'runtime-quick.json' : 'runtime.json');
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwritten: ${path.relative(process.cwd(), file)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
