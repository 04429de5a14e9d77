/**
 * The claim record-and-replay rests on (src/engine/replay/capture.ts): on webgpu a training step is the
 * same program every time, whatever the weights, images, labels and dropout seed, and what changes between
 * steps is exactly the bytes uploaded for them. Runs on the software adapter (tools/soft-gpu.sh).
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { benchEngine } from '../bench/engine.js';
import { setupBackend } from '../src/engine/backend.js';
import { canonicalProgram, captureGpuWork, compareSteps, summarizeCapture, type GpuOp } from '../src/engine/replay/capture.js';
import { dropoutLayers } from '../src/model/minigooglenet.js';
import { Replica } from '../src/model/replica.js';
import { Rng } from '../src/util/random.js';
import { webgpuAvailability } from './helpers/webgpu.js';

const webgpu = await webgpuAvailability('replay-capture.test.ts');

describe.runIf(!webgpu.available && webgpu.required)('webgpu capture, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('finds an adapter', () => {
    expect.fail(`TRAINPOOL_REQUIRE_WEBGPU=1 but ${webgpu.skipReason.split(';')[0]}`);
  });
});

describe.skipIf(!webgpu.available)('a webgpu training step, captured at the WebGPU API', () => {
  const rng = new Rng(7);
  let replica: Replica;
  let state: Float32Array;
  /** One eager step on new weights, a new shard of `batch` images and dropout seed `seed`, captured. */
  const step = async (seed: number, batch = 8): Promise<GpuOp[]> => {
    for (let i = 0; i < state.length; i++) state[i] += 1e-3 * (rng.next() - 0.5);
    const x = Float32Array.from({ length: batch * 32 * 32 * 3 }, () => rng.next() - 0.5);
    const labels = Uint8Array.from({ length: batch }, () => Math.floor(rng.next() * 10));
    const { ops, result } = await captureGpuWork(async () => {
      replica.setState(state);
      return replica.computeGradients({ x, labels }, seed);
    });
    expect(Number.isFinite(result.loss)).toBe(true);
    return ops;
  };

  it('is one program over steps with other weights, images, labels and dropout seeds; the changed uploads are exactly those', async () => {
    const handle = await setupBackend('webgpu');
    try {
      // Eager steps are what is captured here: replay (which records inside a capture of its own) off.
      replica = new Replica({ name: 'tiny', width: 32, height: 32, depth: 3, classes: 10, seed: 1 }, { replay: false });
      state = await replica.getState();
      await step(1); // the first step compiles pipelines and fills tfjs' buffer pool
      const tensors = tf.memory().numTensors;
      const [a, b, c] = [await step(2), await step(3), await step(4)];
      expect(tf.memory().numTensors).toBe(tensors);
      expect(summarizeCapture(a).dispatch).toBeGreaterThan(100);
      for (const [first, second] of [[a, b], [b, c]]) {
        const comparison = compareSteps(first, second);
        expect(comparison.firstDifference).toBeUndefined();
        expect(comparison.sameProgram).toBe(true);
        // One upload per variable of the layout (setState), the images, the labels, one mask per Dropout layer.
        expect(comparison.inputs).toHaveLength(replica.layout.entries.length + 2 + dropoutLayers(replica.model).length);
        const bytes = 4 * replica.layout.totalSize + 4 * 8 * 32 * 32 * 3;
        expect(comparison.inputBytes).toBeGreaterThanOrEqual(bytes);
        expect(comparison.inputBytes).toBeLessThan(bytes + 8 * 4 + 4096); // labels (int32) and the small mask
      }
      // Another batch size is another program, and the comparison says where they part.
      const other = compareSteps(c, await step(5, 4));
      expect(other.sameProgram).toBe(false);
      expect(other.firstDifference).toMatch(/^op \d+: .+ \| .+$/);
    } finally {
      replica?.dispose();
      await handle.close();
    }
  }, 120_000);

  it('names objects by first use, so that buffers from other places in the pool compare equal', () => {
    const ops = (offset: number): GpuOp[] => [
      { op: 'createBuffer', buffer: 10 + offset, size: 16, usage: 6, mapped: true },
      { op: 'upload', buffer: 10 + offset, bytes: new Uint8Array(16) },
      { op: 'copy', from: 10 + offset, fromOffset: 0, to: 3 + offset, toOffset: 0, size: 16 },
      { op: 'setPipeline', pipeline: 1 },
      { op: 'dispatch', x: 2, y: 1, z: 1 },
    ];
    expect(canonicalProgram(ops(0))).toEqual(['createBuffer b0 16 usage 6 mapped', 'upload b0 16', 'copy b0+0 → b1+0 16', 'setPipeline p0', 'dispatch 2×1×1']);
    expect(compareSteps(ops(0), ops(100)).sameProgram).toBe(true);
    const moved = ops(0);
    moved[2] = { op: 'copy', from: 10, fromOffset: 0, to: 10, toOffset: 0, size: 16 };
    expect(compareSteps(ops(0), moved)).toMatchObject({ sameProgram: false, firstDifference: 'op 2: copy b0+0 → b1+0 16 | copy b0+0 → b0+0 16' });
  });

  it('bench:engine reports the WebGPU calls of an eager step, that two steps were one program, and the replayed step', async () => {
    const r = await benchEngine({ backend: 'webgpu', batch: 4, steps: 1, model: 'tiny', kernels: 'project' });
    expect(r.sameProgramAcrossSteps).toBe(true);
    // Per dispatch at least a pipeline, a bind group made and set, and its uniforms written.
    expect(r.apiCallsPerStep!).toBeGreaterThan(5 * r.dispatchesPerStep!);
    // And replayed: no tfjs kernel, fewer calls (no buffers, bind groups or uniform writes made per step).
    expect(r.kernelsPerStep).toBeGreaterThan(100);
    expect(r.replayedKernelsPerStep).toBe(0);
    expect(r.replayedApiCallsPerStep!).toBeLessThan(0.7 * r.apiCallsPerStep!);
    expect(r.encodeMsPerStep).toBeGreaterThan(0);
    expect(r.encodeMsEachStep).toEqual([r.encodeMsPerStep]); // one step: its own time is the median
    // One step: its parts add up to its host time; the next step's commands and the weights' copy are apart.
    const { writeMs, commandsMs, submitMs, aheadMs, weightsMs } = r.encodePhases!;
    expect(writeMs + commandsMs + submitMs).toBeCloseTo(r.encodeMsPerStep!, 6);
    expect(Math.min(writeMs, submitMs, aheadMs, weightsMs)).toBeGreaterThan(0);
    expect(r.replayedBufferBytes!).toBeGreaterThan(4 * 4 * 32 * 32 * 3); // at least the images' buffer
  }, 120_000);

  it('does not nest', async () => {
    await expect(captureGpuWork(() => captureGpuWork(async () => 1))).rejects.toThrow('captureGpuWork is already recording; captures cannot nest');
  });
});
