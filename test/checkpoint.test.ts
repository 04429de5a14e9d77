/**
 * Checkpoint files (src/coordinator/checkpoint.ts): what reads back is what was written, bit for bit, and
 * every kind of damage is refused with a message naming it: a cut-off file, another magic, another
 * version, an edited header, a flipped byte in any array or in the digest. Format-1 files still read.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openFilesUnder } from './helpers/fds.js';
import type { ShapingConfig } from '../src/config/config.js';
import { isTrainpoolError } from '../src/util/errors.js';
import { listCheckpoints, newestValidCheckpoint, readCheckpoint, writeCheckpoint, type CheckpointData } from '../src/coordinator/checkpoint.js';
import { pad8 } from '../src/util/align.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'trainpool-ckpt-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const data = (epoch = 3, step = 0): CheckpointData => ({
  epoch,
  step,
  partial: { lossSum: 1.25, accSum: 0.5 },
  history: [{ epoch: 1, loss: 2.1, acc: 0.2, val_loss: 2.0, val_acc: 0.25, lr: 0.005, seconds: 1.5 }] as unknown as CheckpointData['history'],
  config: { model: 'tiny', seed: 7, epochs: 5 } as unknown as ShapingConfig,
  layoutHash: 'abc123',
  weights: Float32Array.of(1, -2.5, Math.PI, 1e-30),
  velocity: Float32Array.of(0.125, -0, 3),
  mean: Float32Array.of(120.5, 64, 7),
});
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/** The file of `data()`, with `edit` applied to its bytes, written back. */
function damaged(edit: (b: Buffer) => Buffer | void): string {
  const file = writeCheckpoint(dir, data());
  const b = Buffer.from(readFileSync(file));
  writeFileSync(file, edit(b) ?? b);
  return file;
}
const headerAt = (b: Buffer) => ({ start: 12, end: 12 + b.readUInt32LE(8) });
/** Rewrites the header's JSON text with `f`, keeping its length (so only the digest can tell). */
const editHeader = (b: Buffer, f: (json: string) => string) => {
  const { start, end } = headerAt(b);
  const json = f(b.toString('utf8', start, end));
  expect(Buffer.byteLength(json)).toBe(end - start);
  b.write(json, start, 'utf8');
};
/** The digest recomputed over the edited bytes: a well-formed file whose header says something else. */
const redigest = (b: Buffer) => createHash('sha256').update(b.subarray(0, b.length - 32)).digest().copy(b, b.length - 32);

describe('checkpoint files', () => {
  it('read back exactly as written: position, partial sums, history, config, layout and the three arrays bit for bit', () => {
    const file = writeCheckpoint(dir, data());
    expect(path.basename(file)).toBe('epoch-0003-step-000000.ckpt');
    const back = readCheckpoint(file);
    const want = data();
    expect({ ...back, weights: bits(back.weights), velocity: bits(back.velocity), mean: bits(back.mean) }).toEqual({
      ...want,
      weights: bits(want.weights),
      velocity: bits(want.velocity),
      mean: bits(want.mean),
    });
    expect(readdirSync(dir)).toEqual(['epoch-0003-step-000000.ckpt']); // no temporary file left
  });

  it('refuses a header edited in place ("epoch":3 → 7), which format 1 accepted', () => {
    const file = damaged((b) => editHeader(b, (j) => j.replace('"epoch":3', '"epoch":7')));
    expect(() => readCheckpoint(file)).toThrow(`checkpoint ${file} is unusable: its contents fail the SHA-256 check (corrupted)`);
  });

  it('refuses an edited step, history entry or partial sum', () => {
    for (const [from, to] of [
      ['"step":0', '"step":9'],
      ['"val_acc":0.25', '"val_acc":0.95'],
      ['"lossSum":1.25', '"lossSum":9.25'],
    ]) {
      const file = damaged((b) => editHeader(b, (j) => j.replace(from, to)));
      expect(() => readCheckpoint(file), `${from} → ${to}`).toThrow('its contents fail the SHA-256 check (corrupted)');
    }
  });

  it('refuses a flipped byte in the weights, the velocity, the mean or the digest itself', () => {
    const start = (b: Buffer) => pad8(headerAt(b).end);
    const offsets: [string, (b: Buffer) => number][] = [
      ['weights', (b) => start(b) + 5],
      ['velocity', (b) => start(b) + 4 * 4 + 2],
      ['mean', (b) => start(b) + 4 * 7 + 1],
      ['digest', (b) => b.length - 1],
    ];
    for (const [what, at] of offsets) {
      const file = damaged((b) => void (b[at(b)] ^= 0x01));
      expect(() => readCheckpoint(file), what).toThrow('its contents fail the SHA-256 check (corrupted)');
    }
  });

  it('refuses a truncated file, one padded at the end, and one cut inside its header', () => {
    const whole = readFileSync(writeCheckpoint(dir, data())).length;
    const truncated = damaged((b) => b.subarray(0, b.length - 1));
    expect(() => readCheckpoint(truncated)).toThrow(`is unusable: ${whole - 1} bytes where its header promises ${whole} (truncated or padded)`);
    const padded = damaged((b) => Buffer.concat([b, Buffer.alloc(4)]));
    expect(() => readCheckpoint(padded)).toThrow(`is unusable: ${whole + 4} bytes where its header promises ${whole} (truncated or padded)`);
    const cut = damaged((b) => b.subarray(0, 40));
    expect(() => readCheckpoint(cut)).toThrow(/is unusable: its header of \d+ bytes is cut off at 40 bytes$/);
    const empty = damaged(() => Buffer.alloc(0));
    expect(() => readCheckpoint(empty)).toThrow('is unusable: it does not start with TPCKPT02');
  });

  it('refuses another magic, a header that is not JSON, and a version it does not read, naming each', () => {
    const magic = damaged((b) => void b.write('NOTACKPT', 0, 'latin1'));
    expect(() => readCheckpoint(magic)).toThrow(`checkpoint ${magic} is unusable: it does not start with TPCKPT02`);
    const json = damaged((b) => void (b[12] = 0x5b)); // '{' → '['
    expect(() => readCheckpoint(json)).toThrow('is unusable: its header is not valid JSON');
    const version = damaged((b) => {
      editHeader(b, (j) => j.replace('"version":2', '"version":3'));
      redigest(b);
    });
    expect(() => readCheckpoint(version)).toThrow('is unusable: its header says version 3 in a file of format 2 (TPCKPT02); this trainpool reads versions 1 and 2');
  });

  it('still reads a format-1 file (digest of the arrays in its header), and refuses one whose arrays changed', () => {
    const d = data();
    const sha = createHash('sha256');
    for (const a of [d.weights, d.velocity, d.mean]) sha.update(new Uint8Array(a.buffer));
    const { weights, velocity, mean, ...rest } = d;
    const json = Buffer.from(JSON.stringify({ ...rest, version: 1, createdAt: '2026-11-30T00:00:00.000Z', sizes: { weights: 4, velocity: 3, mean: 3 }, sha256: sha.digest('hex') }));
    const head = Buffer.alloc(pad8(12 + json.length));
    head.write('TPCKPT01', 0, 'latin1');
    head.writeUInt32LE(json.length, 8);
    json.copy(head, 12);
    const file = path.join(dir, 'epoch-0003-step-000000.ckpt');
    const bytes = Buffer.concat([head, ...[weights, velocity, mean].map((a) => Buffer.from(a.buffer))]);
    writeFileSync(file, bytes);
    expect(bits(readCheckpoint(file).velocity)).toEqual(bits(velocity));
    expect(readCheckpoint(file).epoch).toBe(3);
    bytes[bytes.length - 2] ^= 0x10;
    writeFileSync(file, bytes);
    expect(() => readCheckpoint(file)).toThrow('its contents fail the SHA-256 check (corrupted)');
  });

  it('keeps the newest two, and resumes from the newest that reads back whole, saying what it skipped', () => {
    for (const [epoch, step] of [
      [1, 0],
      [2, 0],
      [2, 40],
      [3, 0],
    ]) writeCheckpoint(dir, data(epoch, step));
    expect(listCheckpoints(dir)).toEqual(['epoch-0003-step-000000.ckpt', 'epoch-0002-step-000040.ckpt']);
    const newest = path.join(dir, 'epoch-0003-step-000000.ckpt');
    const b = readFileSync(newest);
    b[b.length - 40] ^= 0xff;
    writeFileSync(newest, b);
    const found = newestValidCheckpoint(dir)!;
    expect(found.file).toBe(path.join(dir, 'epoch-0002-step-000040.ckpt'));
    expect(found.data.step).toBe(40);
    expect(found.skipped).toEqual([`checkpoint ${newest} is unusable: its contents fail the SHA-256 check (corrupted)`]);
  });

  it('finds nothing in an empty or missing folder, and refuses a folder whose only checkpoint is bad', () => {
    expect(newestValidCheckpoint(dir)).toBeNull();
    expect(newestValidCheckpoint(path.join(dir, 'missing'))).toBeNull();
    const file = damaged((b) => b.subarray(0, b.length - 8));
    expect(() => newestValidCheckpoint(dir)).toThrow(`--resume: no usable checkpoint in ${dir}; checkpoint ${file} is unusable:`);
  });
});

describe('checkpoint edges', () => {
  it('closes its file after writing', () => {
    expect(openFilesUnder(dir)).toEqual([]);
    for (let i = 0; i < 5; i++) writeCheckpoint(dir, data(i + 1));
    expect(openFilesUnder(dir)).toEqual([]);
  });

  it('gives every refusal the CHECKPOINT code, and a --resume refusal lists each bad file, separated by "; "', () => {
    const file = damaged((b) => b.subarray(0, b.length - 8));
    const caught = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e;
      }
      throw new Error('expected a throw');
    };
    expect(isTrainpoolError(caught(() => readCheckpoint(file)), 'CHECKPOINT')).toBe(true);
    const other = writeCheckpoint(dir, data(1));
    writeFileSync(other, 'NOTACKPT and some more bytes');
    const e = caught(() => newestValidCheckpoint(dir));
    expect(isTrainpoolError(e, 'CHECKPOINT')).toBe(true);
    expect((e as Error).message).toBe(
      `--resume: no usable checkpoint in ${dir}; checkpoint ${file} is unusable: ${readFileSync(file).length} bytes where its header promises ${readFileSync(file).length + 8} (truncated or padded); checkpoint ${other} is unusable: it does not start with TPCKPT02`,
    );
  });

  it('tells a file shorter than magic and header length from one whose header is cut off', () => {
    const short = damaged((b) => b.subarray(0, 11)); // the magic whole, the header length not
    expect(() => readCheckpoint(short)).toThrow('is unusable: it does not start with TPCKPT02');
    const twelve = damaged((b) => b.subarray(0, 12));
    expect(() => readCheckpoint(twelve)).toThrow(/is unusable: its header of \d+ bytes is cut off at 12 bytes$/);
  });

  it('reads a header that ends exactly at the end of the file, then refuses the missing arrays', () => {
    const file = damaged((b) => b.subarray(0, headerAt(b).end));
    expect(() => readCheckpoint(file)).toThrow(/is unusable: \d+ bytes where its header promises \d+ \(truncated or padded\)$/);
  });
});

describe('listCheckpoints', () => {
  it('lists only finished checkpoints, newest first: not temporary files, other names or folders', () => {
    const d = mkdtempSync(path.join(tmpdir(), 'trainpool-list-'));
    try {
      for (const name of ['epoch-0002-step-000000.ckpt', 'epoch-0001-step-000040.ckpt', 'epoch-0002-step-000010.ckpt', '.epoch-0003-step-000000.ckpt.123.tmp', 'epoch-0003-step-000000.ckpt.123.tmp', 'epoch-0003-step-000000.ckpt.bak', 'notes-epoch-0004-step-000000.ckpt', 'epoch-3-step-0.ckpt']) {
        writeFileSync(path.join(d, name), '');
      }
      expect(listCheckpoints(d)).toEqual(['epoch-0002-step-000010.ckpt', 'epoch-0002-step-000000.ckpt', 'epoch-0001-step-000040.ckpt']);
      expect(listCheckpoints(path.join(d, 'missing'))).toEqual([]);
      // A folder that exists but cannot be read is not "no checkpoint" (EACCES cannot be had as root: ENOTDIR).
      const under = path.join(d, 'epoch-0002-step-000000.ckpt', 'sub');
      expect(() => listCheckpoints(under)).toThrow(`cannot read the checkpoint folder ${under}: a part of the path is not a folder (ENOTDIR)`);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
