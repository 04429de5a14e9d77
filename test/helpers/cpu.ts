/**
 * Selects the cpu backend for a test file, with the project's kernels and gradients registered (as every
 * run has them). Tests that compare against stock tfjs use the stock backend explicitly instead.
 */
import { setupBackend } from '../../src/engine/backend.js';

export async function useCpu(): Promise<void> {
  await setupBackend('cpu');
}
