/**
 * bench:engine's upload accounting (bench/engine.ts bytesLessInput): the input batch is taken out of a
 * step's uploads by size, once per input, and a step without such an upload is an error. No GPU needed.
 */
import { describe, expect, it } from 'vitest';
import { bytesLessInput } from '../bench/engine.js';
import type { Upload } from '../src/model/kernels/webgpu/counters.js';

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
