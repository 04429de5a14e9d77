/**
 * src/engine/tfjs-internals.ts on a live webgpu backend: the installed tfjs-backend-webgpu has every member
 * webgpu/pack.ts reaches, and the check leaves no tensor behind. Its messages for missing members, and the
 * other packages' checks, are in tfjs-internals.test.ts (which loads wasm; Dawn gets this process).
 *
 * Runs on any WebGPU adapter (eval "$(bash tools/soft-gpu.sh)" gives a software one); skipped without one,
 * saying why, unless TRAINPOOL_REQUIRE_WEBGPU=1 makes that a failure.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { setupBackend } from '../src/engine/backend.js';
import { checkWebgpuInternals } from '../src/engine/tfjs-internals.js';
import { webgpuAvailability } from './helpers/webgpu.js';

const gpu = await webgpuAvailability('tfjs-internals-webgpu.test.ts');

describe.runIf(!gpu.available && gpu.required)('tfjs internals on webgpu, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('finds an adapter', () => {
    expect.fail(`TRAINPOOL_REQUIRE_WEBGPU=1 but ${gpu.skipReason.split(';')[0]}`);
  });
});

describe.skipIf(!gpu.available)(gpu.available ? `the installed tfjs-backend-webgpu on ${gpu.detail}` : `tfjs-backend-webgpu (skipped: ${gpu.skipReason})`, () => {
  it('has every member the project reaches, and the check leaves no tensor behind', async () => {
    const handle = await setupBackend('webgpu');
    try {
      const backend = tf.backend() as WebGPUBackend;
      const [tensors, dataIds] = [tf.memory().numTensors, backend.numDataIds()];
      expect(checkWebgpuInternals(backend)).toEqual([]);
      expect([tf.memory().numTensors, backend.numDataIds()]).toEqual([tensors, dataIds]);
    } finally {
      await handle.close();
    }
  });
});
