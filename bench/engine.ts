/**
 * Training-step speed of one backend in this process: MiniGoogLeNet (or tiny), forward in training mode
 * plus gradients, as a worker computes them.
 *
 *   npm run bench:engine -- --backend wasm --batch 64 --steps 5 [--model minigooglenet] [--out file.json]
 *
 * Prints one table row and, with --out, writes {backend, device, model, batch, steps, msPerStep,
 * imgPerSec, kernelsPerStep, dispatchesPerStep, uploadBytesPerStep}. The first step (kernel compilation,
 * lazy allocation) is a warm-up and not counted. kernelsPerStep counts tfjs kernel invocations (from
 * tf.profile); dispatchesPerStep and uploadBytesPerStep are measured on webgpu only (null elsewhere).
 */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend, type BackendName } from '../src/model/backend.js';
import type { ModelName } from '../src/model/minigooglenet.js';
import { Replica } from '../src/model/replica.js';
import { Rng } from '../src/util/random.js';

export interface EngineResult {
  backend: string;
  device: string;
  model: ModelName;
  batch: number;
  steps: number;
  msPerStep: number;
  imgPerSec: number;
  kernelsPerStep: number;
  dispatchesPerStep: number | null;
  uploadBytesPerStep: number | null;
}

export async function benchEngine(o: { backend: BackendName; batch: number; steps: number; model: ModelName }): Promise<EngineResult> {
  const handle = await setupBackend(o.backend);
  const replica = new Replica({ name: o.model, width: 32, height: 32, depth: 3, classes: 10, seed: 1 });
  try {
    const rng = new Rng(7);
    const x = Float32Array.from({ length: o.batch * 32 * 32 * 3 }, () => rng.uniform(-120, 120));
    const labels = Uint8Array.from({ length: o.batch }, (_, i) => i % 10);
    await replica.computeGradients({ x, labels }, 0); // warm-up: compilation, allocation
    const profile = await tf.profile(async () => {
      await replica.computeGradients({ x, labels }, 1);
      return [];
    });
    const started = performance.now();
    for (let s = 0; s < o.steps; s++) await replica.computeGradients({ x, labels }, s + 2);
    const msPerStep = (performance.now() - started) / o.steps;
    return {
      backend: handle.name,
      device: handle.device,
      model: o.model,
      batch: o.batch,
      steps: o.steps,
      msPerStep,
      imgPerSec: (o.batch * 1000) / msPerStep,
      kernelsPerStep: profile.kernels.length,
      dispatchesPerStep: null,
      uploadBytesPerStep: null,
    };
  } finally {
    replica.dispose();
    await handle.close();
  }
}

async function cli(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'wasm' },
      batch: { type: 'string', default: '64' },
      steps: { type: 'string', default: '5' },
      model: { type: 'string', default: 'minigooglenet' },
      out: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const r = await benchEngine({
    backend: values.backend as BackendName,
    batch: Number(values.batch),
    steps: Number(values.steps),
    model: values.model as ModelName,
  });
  if (values.out) writeFileSync(values.out, `${JSON.stringify(r, null, 2)}\n`);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
  } else {
    console.table([
      {
        backend: r.backend, device: r.device, model: r.model, batch: r.batch, 'ms/step': r.msPerStep.toFixed(1),
        'img/s': r.imgPerSec.toFixed(1), kernels: r.kernelsPerStep, dispatches: r.dispatchesPerStep ?? '-', 'upload B': r.uploadBytesPerStep ?? '-',
      },
    ]);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  cli().catch((e) => {
    process.stderr.write(`bench:engine: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
