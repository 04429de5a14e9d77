/**
 * Writes and reads that move fewer bytes than asked, as the kernel may (signals, writes over 2 GiB):
 * node:fs is wrapped so that every writev, write and read moves at most 5 bytes, and what bulk regions
 * and checkpoints write must still read back whole.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';

const MOST = 5;
const calls = { writev: 0, write: 0, read: 0 };
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  /** The first MOST bytes of `parts`, as the list of views a short writev would have taken. */
  const firstBytes = (parts: readonly NodeJS.ArrayBufferView[]) => {
    const out: Uint8Array[] = [];
    let left = MOST;
    for (const p of parts) {
      if (left === 0) break;
      const u = new Uint8Array(p.buffer, p.byteOffset, Math.min(p.byteLength, left));
      out.push(u);
      left -= u.length;
    }
    return out;
  };
  const short = {
    ...fs,
    writevSync: (fd: number, parts: readonly NodeJS.ArrayBufferView[], position?: number) => {
      calls.writev++;
      return fs.writevSync(fd, firstBytes(parts), position);
    },
    writeSync: (fd: number, buffer: Uint8Array, offset?: number, length?: number, position?: number | null) => {
      calls.write++;
      return fs.writeSync(fd, buffer, offset, Math.min(length ?? buffer.length - (offset ?? 0), MOST), position);
    },
    readSync: (fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null) => {
      calls.read++;
      return fs.readSync(fd, buffer, offset, Math.min(length, MOST), position);
    },
  };
  return { ...short, default: short };
});

const { BulkFile } = await import('../src/protocol/bulk.js');
const { readCheckpoint, writeCheckpoint } = await import('../src/coordinator/checkpoint.js');

const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-partial-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('short writes and reads', () => {
  it('a bulk region written in pieces of several parts reads back whole, at its offset', () => {
    const file = BulkFile.create(dir);
    const parts = [Uint8Array.of(1, 2, 3), new Uint8Array(0), Uint8Array.from({ length: 17 }, (_, i) => 10 + i), Uint8Array.of(99)];
    const before = calls.writev;
    file.write(parts, 8);
    expect(calls.writev - before).toBe(Math.ceil(21 / MOST));
    const back = new Uint8Array(21);
    file.readInto(back, 8);
    expect(Array.from(back)).toEqual(parts.flatMap((p) => Array.from(p)));
    file.close();
  });

  it('a checkpoint written in pieces is the same file, and reads back', () => {
    const data = {
      epoch: 2, step: 0, partial: { lossSum: 0, accSum: 0 }, history: [], config: {} as never, layoutHash: 'h',
      weights: Float32Array.of(1, 2, 3), velocity: Float32Array.of(4, 5), mean: Float32Array.of(6),
    };
    const before = calls.write;
    const file = writeCheckpoint(dir, data);
    const bytes = readFileSync(file);
    expect(calls.write - before).toBeGreaterThanOrEqual(Math.ceil(bytes.length / MOST));
    const back = readCheckpoint(file);
    expect([Array.from(back.weights), Array.from(back.velocity), Array.from(back.mean), back.epoch]).toEqual([[1, 2, 3], [4, 5], [6], 2]);
  });
});
