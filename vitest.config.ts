import os from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Worker processes and tfjs backends are heavyweight; forks keep each test file's native
    // add-ons (Dawn, wasm) in a process of its own.
    pool: 'forks',
    // Two files at once even on two cores (vitest's default is cores − 1): most files wait on the processes
    // they spawn (bin/train, workers, hosts), so two share two cores well. Measured on the 2-core VM, whole
    // suite: 602 s one at a time, 465 s two at a time, every test passing in both.
    maxWorkers: Math.max(2, os.availableParallelism() - 1),
    // After the summary, a line saying whether WebGPU files were skipped and how to run them.
    reporters: ['default', './test/helpers/webgpu-reporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
