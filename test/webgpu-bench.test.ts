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
  it('the main thread’s CPU clock advances with the CPU time the loop spends, and not while it sleeps', async () => {
    // Spin until the process has spent 30 ms of CPU (its own clock, not the wall's: with both cores busy a
    // 30 ms wall-clock loop may get half of that). The main thread's clock must have counted nearly all of it.
    const cpuMs = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e3;
    };
    const start = mainThreadCpuNs()!;
    const processStart = cpuMs();
    while (cpuMs() - processStart < 30); // 30 ms on the CPU, most of it this thread's
    const busy = (mainThreadCpuNs()! - start) / 1e6;
    const spent = cpuMs() - processStart;
    await new Promise((resolve) => setTimeout(resolve, 60));
    const slept = (mainThreadCpuNs()! - start) / 1e6 - busy;
    expect(busy).toBeGreaterThan(20);
    expect(busy).toBeLessThanOrEqual(spent + 5); // the main thread is part of the process (schedstat ticks: + 5)
    expect(slept).toBeLessThan(10);
  });

  it('bench:engine on wasm reports a host time per step that is positive and within the step’s wall time', async () => {
    const r = await benchEngine({ backend: 'wasm', batch: 4, steps: 2, model: 'tiny', kernels: 'project' });
    expect(r.hostMsPerStep).not.toBeNull();
    // One thread's CPU time cannot exceed the wall time it ran in (how nearly it fills it is a benchmark's figure).
    expect(r.hostMsPerStep!).toBeGreaterThan(0);
    expect(r.hostMsPerStep!).toBeLessThanOrEqual(r.msPerStep * 1.02);
    expect(r.dispatchesPerStep).toBeNull();
    expect(r.apiCallsPerStep).toBeNull();
    expect(r.sameProgramAcrossSteps).toBeNull();
    expect(r.replayedMsPerStep).toBeNull();
    expect(r.encodeMsPerStep).toBeNull();
    expect(r.encodeMsEachStep).toBeNull();
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
