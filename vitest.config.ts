import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Worker processes and tfjs backends are heavyweight; forks keep each test file's native
    // add-ons (Dawn, wasm) in a process of its own.
    pool: 'forks',
    // After the summary, a line saying whether WebGPU files were skipped and how to run them.
    reporters: ['default', './test/helpers/webgpu-reporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
