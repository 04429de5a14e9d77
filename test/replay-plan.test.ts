/**
 * The replay plan (src/engine/replay/plan.ts) on small hand-made recordings: what a step writes, which
 * buffers it owns, and which commands it encodes. No GPU: the plan is made from the captured calls alone
 * (test/replay.test.ts checks its results bit for bit on the software adapter).
 */
import { describe, expect, it } from 'vitest';
import type { GpuOp } from '../src/engine/replay/capture.js';
import { RecordingError, type Source } from '../src/engine/replay/inputs.js';
import { mergePasses, planStep, READ_BACK, type PlanCommand } from '../src/engine/replay/plan.js';

const STORAGE = 0x80;
const COPY_SRC = 0x04;
const COPY_DST = 0x08;
const MAP_READ = 0x01;
const MAP_WRITE = 0x02;
const UNIFORM = 0x40;
const TENSOR = STORAGE | COPY_SRC | COPY_DST;

/** Buffers 1–9: tensors of 16 bytes; 20–29: staging (map-write) of 16; 30: uniforms of 8; 40–42: read-back. */
const facts = (id: number) => {
  if (id >= 20 && id < 30) return { size: 16, usage: MAP_WRITE | COPY_SRC };
  if (id === 30) return { size: 8, usage: UNIFORM | COPY_DST };
  if (id === 40) return { size: 16, usage: MAP_READ | COPY_DST };
  if (id === 41 || id === 42) return { size: 4, usage: MAP_READ | COPY_DST };
  return { size: 16, usage: TENSOR };
};
const bytes = (n: number, fill = 0) => new Uint8Array(n).fill(fill);

/**
 * One program: variable 0 uploaded through staging buffer 20 into tensor 1, the images written into 2, a
 * uniform into 30; program p7 reads 1, 2 and 30 and writes 3; then 3 is copied to read-back 40, and
 * scalars 4 and 5 to 41 and 42, each behind a submit as tfjs does.
 */
function recording(): { ops: GpuOp[]; sources: Map<number, Source> } {
  const ops: GpuOp[] = [
    { op: 'createBuffer', buffer: 20, size: 16, usage: MAP_WRITE | COPY_SRC, mapped: true },
    { op: 'upload', buffer: 20, bytes: bytes(16, 1) },
    { op: 'copy', from: 20, fromOffset: 0, to: 1, toOffset: 0, size: 16 },
    { op: 'submit', commandBuffers: 1 },
    { op: 'writeBuffer', buffer: 2, offset: 0, bytes: bytes(16, 2) },
    { op: 'writeBuffer', buffer: 30, offset: 0, bytes: bytes(8, 3) },
    { op: 'createBindGroup', group: 50, layout: 60, entries: [0, 1, 2, 30].map((b, i) => ({ binding: i, buffer: b === 0 ? 3 : b, offset: 0, size: undefined })) },
    { op: 'setPipeline', pipeline: 7 },
    { op: 'setBindGroup', index: 0, group: 50 },
    { op: 'dispatch', x: 4, y: 1, z: 1 },
    { op: 'endPass' },
    { op: 'submit', commandBuffers: 1 },
    { op: 'copy', from: 3, fromOffset: 0, to: 40, toOffset: 0, size: 16 },
    { op: 'copy', from: 4, fromOffset: 0, to: 41, toOffset: 0, size: 4 },
    { op: 'copy', from: 5, fromOffset: 0, to: 42, toOffset: 0, size: 4 },
    { op: 'submit', commandBuffers: 1 },
    { op: 'mapRead', buffer: 40 },
    { op: 'mapRead', buffer: 41 },
    { op: 'mapRead', buffer: 42 },
  ];
  const sources = new Map<number, Source>([
    [1, { kind: 'variable', index: 0 }],
    [4, { kind: 'x' }],
    [5, { kind: 'constant' }],
  ]);
  return { ops, sources };
}

describe('planStep', () => {
  it('writes each input straight into a buffer of its own, drops the staging copy and the submits, and reads back once', () => {
    const { ops, sources } = recording();
    const plan = planStep(ops, sources, facts, 16);
    // The staging upload became a version of tensor 1 holding variable 0; the staging buffer is not made.
    const versions = plan.buffers.filter((b) => b.kind === 'version');
    expect(versions.map((v) => [v.of, v.source.kind])).toEqual([
      [1, 'variable'],
      [2, 'x'],
      [30, 'constant'],
    ]);
    expect(plan.buffers.some((b) => b.of === 20)).toBe(false);
    expect(versions.find((v) => v.of === 30)!.usage).toBe(UNIFORM | COPY_DST);
    // The program reads the versions, writes the twin of 3.
    expect(plan.groups.get(50)!.entries.map((e) => e.buffer)).toEqual(['t3', 'v2', 'v4', 'v5']);
    // One pass, then the three results into one read-back buffer: values at 0, loss at 16, accuracy at 20.
    expect(plan.commands).toEqual([
      { kind: 'pipeline', pipeline: 7 },
      { kind: 'bindGroup', index: 0, group: 50 },
      { kind: 'dispatch', x: 4, y: 1, z: 1 },
      { kind: 'endPass' },
      { kind: 'copy', from: 't3', fromOffset: 0, to: READ_BACK, toOffset: 0, size: 16 },
      { kind: 'copy', from: 't4', fromOffset: 0, to: READ_BACK, toOffset: 16, size: 4 },
      { kind: 'copy', from: 't5', fromOffset: 0, to: READ_BACK, toOffset: 20, size: 4 },
    ]);
    expect(plan.results).toEqual({ flat: 0, flatBytes: 16, loss: 16, acc: 20, size: 24 });
  });

  it('copies a buffer the step reads before writing it from the original, once; one it writes first needs nothing', () => {
    const { ops, sources } = recording();
    const plan = planStep(ops, sources, facts, 16);
    // 4 and 5 were made before the step and only read in it: their contents are part of the program.
    expect(plan.buffers.filter((b) => b.kind === 'twin' && b.snapshot).map((b) => b.of)).toEqual([4, 5]);
    expect(plan.buffers.find((b) => b.of === 3)).toMatchObject({ kind: 'twin', snapshot: false });
  });

  it('gives a buffer written twice by the CPU a version per write, each read by the bind groups made after it', () => {
    const { ops, sources } = recording();
    // The uniform buffer is written again (another program's constants) and read by a second program.
    ops.splice(
      10,
      0,
      { op: 'writeBuffer', buffer: 30, offset: 0, bytes: bytes(8, 9) },
      { op: 'createBindGroup', group: 51, layout: 61, entries: [{ binding: 0, buffer: 6, offset: 0, size: undefined }, { binding: 1, buffer: 30, offset: 0, size: 8 }] },
      { op: 'setPipeline', pipeline: 8 },
      { op: 'setBindGroup', index: 0, group: 51 },
      { op: 'dispatch', x: 1, y: 1, z: 1 },
    );
    sources.set(10, { kind: 'constant' });
    const plan = planStep(ops, sources, facts, 16);
    expect(plan.groups.get(50)!.entries[3].buffer).toBe('v5');
    expect(plan.groups.get(51)!.entries[1].buffer).toBe('v10');
    const uniforms = plan.buffers.filter((b) => b.of === 30);
    expect(uniforms.map((b) => b.kind === 'version' && b.bytes[0])).toEqual([3, 9]);
  });

  it('after the GPU writes a buffer the CPU had written, later reads use the twin', () => {
    const { ops, sources } = recording();
    // Program p8 writes tensor 2 (which held the images), program p9 reads it.
    ops.splice(
      10,
      0,
      { op: 'createBindGroup', group: 51, layout: 61, entries: [{ binding: 0, buffer: 2, offset: 0, size: undefined }] },
      { op: 'setPipeline', pipeline: 8 },
      { op: 'setBindGroup', index: 0, group: 51 },
      { op: 'dispatch', x: 1, y: 1, z: 1 },
      { op: 'createBindGroup', group: 52, layout: 62, entries: [{ binding: 0, buffer: 6, offset: 0, size: undefined }, { binding: 1, buffer: 2, offset: 0, size: undefined }] },
      { op: 'setPipeline', pipeline: 9 },
      { op: 'setBindGroup', index: 0, group: 52 },
      { op: 'dispatch', x: 1, y: 1, z: 1 },
    );
    const plan = planStep(ops, sources, facts, 16);
    expect(plan.groups.get(50)!.entries[2].buffer).toBe('v4');
    expect(plan.groups.get(51)!.entries[0].buffer).toBe('t2');
    expect(plan.groups.get(52)!.entries[1].buffer).toBe('t2');
  });

  it('refuses what it cannot replay exactly: a partial write, and a buffer read first and then written', () => {
    const partial = recording();
    partial.ops[4] = { op: 'writeBuffer', buffer: 2, offset: 4, bytes: bytes(12, 2) };
    expect(() => planStep(partial.ops, partial.sources, facts, 16)).toThrow(new RecordingError('write 4 covers bytes 4–16 of a 16-byte buffer, not all of it'));

    const overwritten = recording();
    // Tensor 4 is read (snapshot of the original), then a copy writes it: the next step would read that.
    overwritten.ops.splice(16, 0, { op: 'copy', from: 3, fromOffset: 0, to: 4, toOffset: 0, size: 16 });
    expect(() => planStep(overwritten.ops, overwritten.sources, facts, 16)).toThrow(/buffer 4 is read before the step writes it, and then written/);
  });

  it('gives a staging buffer the step reads without uploading to it a twin a copy can fill (map-write buffers cannot be copy targets)', () => {
    const { ops, sources } = recording();
    ops.splice(12, 0, { op: 'copy', from: 21, fromOffset: 0, to: 6, toOffset: 0, size: 16 });
    const plan = planStep(ops, sources, facts, 16);
    expect(plan.buffers.find((b) => b.of === 21)).toMatchObject({ kind: 'twin', usage: COPY_SRC | COPY_DST, snapshot: true });
  });

  it('fails when the step does not read back the values, the loss and the accuracy', () => {
    const { ops, sources } = recording();
    const withoutAccuracy = ops.filter((o) => !(o.op === 'mapRead' && o.buffer === 42));
    expect(() => planStep(withoutAccuracy, sources, facts, 16)).toThrow('the step read 2 buffers, not the values, the loss and the accuracy');
  });
});

describe('mergePasses', () => {
  const p = (pipeline: number): PlanCommand => ({ kind: 'pipeline', pipeline });
  const g = (group: number): PlanCommand => ({ kind: 'bindGroup', index: 0, group });
  const d: PlanCommand = { kind: 'dispatch', x: 1, y: 1, z: 1 };
  const end: PlanCommand = { kind: 'endPass' };
  const copy: PlanCommand = { kind: 'copy', from: 't1', fromOffset: 0, to: 't2', toOffset: 0, size: 4 };

  it('joins passes with nothing between them, and keeps the end before a copy', () => {
    expect(mergePasses([p(1), g(1), d, end, p(2), g(2), d, end, end, copy, p(2), g(3), d, end])).toEqual([p(1), g(1), d, p(2), g(2), d, end, copy, p(2), g(3), d, end]);
  });

  it('sets a pipeline or bind group only where it changes within a pass, and again after a pass ends', () => {
    expect(mergePasses([p(1), g(1), d, end, p(1), g(1), d, g(2), d, end, copy, p(1), g(2), d])).toEqual([p(1), g(1), d, d, g(2), d, end, copy, p(1), g(2), d]);
  });
});
