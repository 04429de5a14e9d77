import { expect } from 'vitest';
import { TrainpoolError } from '../../src/util/errors.js';

/**
 * The TrainpoolError a promise rejects with (or a function throws); fails the test if it settles fine or
 * fails with anything else.
 */
export async function rejection(p: Promise<unknown> | (() => unknown)): Promise<TrainpoolError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(TrainpoolError);
    return e as TrainpoolError;
  }
  throw new Error('expected a TrainpoolError, nothing was thrown');
}
