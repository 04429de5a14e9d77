import { defineConfig } from 'vitest/config';

/**
 * The tests StrykerJS runs against each mutant of the core (stryker.config.json): the in-process unit tests
 * of those modules. Tests that run the code in child processes are left out: a mutant executed there is
 * invisible to Stryker's per-test coverage, so they would only cost time.
 */
export default defineConfig({
  test: {
    include: [
      'test/augment.test.ts',
      'test/bulk.test.ts',
      'test/checkpoint.test.ts',
      'test/cifar10.test.ts',
      'test/fashion-mnist.test.ts',
      'test/optimizer.test.ts',
      'test/options.test.ts',
      'test/partial-io.test.ts',
      'test/protocol.test.ts',
      'test/supervisor.test.ts',
      'test/trainer.test.ts',
    ],
    // The full-size CIFAR-10 read converts 60,000 images: with every statement of the reader instrumented
    // it runs for minutes, and the small files of the other reader tests reach the same code.
    testNamePattern: /^(?!.*on a full-size set)/,
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
