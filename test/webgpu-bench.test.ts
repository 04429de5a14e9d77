/**
 * bench:engine's accounting (bench/engine.ts): the input batch is taken out of a step's uploads by size,
 * once per input, and a step without such an upload is an error; the host time of a step is the main
 * thread's CPU time in its synchronous part. No GPU needed.
 */
import { describe, expect, it } from 'vitest';
import { benchEngine, bytesLessInput, kernelTimes, mainThreadCpuNs } from '../bench/engine.js';
import type { Upload } from '../src/engine/diagnostics/webgpu-counters.js';

const mapped = (bytes: number): Upload => ({ bytes, via: 'mapped' });
const uniforms = (bytes: number): Upload => ({ bytes, via: 'writeBuffer' });

describe('bytesLessInput', () => {
  it('takes out one write-mapped upload per input size: 3,072 + 8 + 96 + 3,072 less 3,072 and 8 is 3,168', () => {
    expect(bytesLessInput([mapped(3072), mapped(8), uniforms(96), mapped(3072)], [3072, 8])).toBe(3168);
  });

  it('never takes a uniform write for an input, even of the same size', () => {
    expect(bytesLessInput([uniforms(8), mapped(8)], [8])).toBe(8);
  });

  it('fails naming the size when the step uploaded nothing of an input’s size', () => {
    expect(() => bytesLessInput([mapped(4), uniforms(96)], [3072])).toThrow(
      'the step uploaded no buffer of 3072 bytes, the size of one of its inputs, so the input batch cannot be told apart: this is a bug (uploads: 2, largest 96 bytes)',
    );
  });
});

describe('host time', () => {
  it('the main thread’s CPU clock advances by about the time a busy loop runs, and not while it sleeps', async () => {
    const start = mainThreadCpuNs()!;
    const until = performance.now() + 30;
    while (performance.now() < until); // 30 ms on the CPU
    const busy = mainThreadCpuNs()! - start;
    await new Promise((resolve) => setTimeout(resolve, 60));
    const slept = mainThreadCpuNs()! - start - busy;
    expect(busy / 1e6).toBeGreaterThan(20);
    expect(busy / 1e6).toBeLessThan(45);
    expect(slept / 1e6).toBeLessThan(10);
  });

  it('bench:engine on wasm reports a host time per step within the step’s wall time, which the synchronous wasm step nearly fills', async () => {
    const r = await benchEngine({ backend: 'wasm', batch: 4, steps: 2, model: 'tiny', kernels: 'project' });
    expect(r.hostMsPerStep).not.toBeNull();
    expect(r.hostMsPerStep!).toBeGreaterThan(0.5 * r.msPerStep);
    expect(r.hostMsPerStep!).toBeLessThanOrEqual(r.msPerStep * 1.02);
    expect(r.dispatchesPerStep).toBeNull();
    expect(r.apiCallsPerStep).toBeNull();
    expect(r.sameProgramAcrossSteps).toBeNull();
    expect(r.replayedMsPerStep).toBeNull();
    expect(r.encodeMsPerStep).toBeNull();
    expect(r.kernelsPerStep).toBeGreaterThan(10);
  });
});

describe('kernelTimes', () => {
  it('sums kernel times without the op wrappers that contain a kernel, and ranks kernels by total time', () => {
    const r = kernelTimes(
      [
        { name: 'fusedConv2d__op', kernelTimeMs: 9 },
        { name: 'FusedConv2D', kernelTimeMs: 8 },
        { name: 'Relu', kernelTimeMs: 1 },
        { name: 'FusedConv2D', kernelTimeMs: 2 },
        { name: 'Reshape', kernelTimeMs: { error: 'not timed' } },
      ],
      true,
    );
    expect(r).toEqual({
      profiledKernelMs: 11,
      profiledKernelClock: 'gpu',
      topKernels: [
        { name: 'FusedConv2D', ms: 10, calls: 2 },
        { name: 'Relu', ms: 1, calls: 1 },
        { name: 'Reshape', ms: 0, calls: 1 },
      ],
    });
  });
});
