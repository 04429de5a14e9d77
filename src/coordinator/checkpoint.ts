/**
 * Checkpoints: everything needed to continue a run exactly where it stopped.
 *
 *     8 bytes   "TPCKPT02"
 *     u32 LE    header length
 *     header    JSON: version, epoch, step, partial epoch sums, history, config, sizes, layout hash
 *     pad       to 8
 *     weights   float32 (trainable weights, then BN moving statistics: the flat layout)
 *     velocity  float32 (SGD momentum buffer)
 *     mean      float32 (the per-pixel mean image)
 *     32 bytes  SHA-256 of every byte before it
 *
 * The digest covers the header too: an edited epoch, step or history is as corrupt as a flipped weight.
 * (Format 1, "TPCKPT01", kept its digest in the header and covered only the three arrays; such files are
 * still read, with that weaker check, so that a run started before format 2 can be resumed.)
 *
 * Random state needs no bytes: every stream is derived from (seed, epoch, step, rank) (util/random.ts),
 * so the seed in the config and the position (epoch, step) restore the shuffle, augmentation and dropout
 * draws exactly.
 *
 * Written to a temporary file, fsync'd and renamed, so a checkpoint is either whole or absent; the two
 * newest are kept. A file that fails its checksum or its header (a partial copy, a disk error) is
 * skipped with a warning when resuming.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { ShapingConfig } from '../config/config.js';
import { TrainpoolError } from '../util/errors.js';
import type { EpochRecord } from './trainer.js';
import { pad8 } from '../util/align.js';
import { bytesOf } from '../util/bytes.js';
import { fsCause, writeFileAtomic } from '../util/files.js';

const MAGIC = 'TPCKPT02';
const VERSION = 2;
/** Format 1's magic: read (with its header's digest of the arrays only), never written. */
const MAGIC_1 = 'TPCKPT01';
const DIGEST_BYTES = 32;
const KEEP = 2;

export interface CheckpointData {
  /** Epochs completed. */
  epoch: number;
  /** Steps completed in epoch `epoch` (0 at an epoch boundary). */
  step: number;
  /** Sums of the step losses and accuracies of the unfinished epoch, so its record comes out whole. */
  partial: { lossSum: number; accSum: number };
  history: EpochRecord[];
  /** The options that shape training (model, data, batch, workers, optimizer, seed, ...): config.ts SHAPING_KEYS. */
  config: ShapingConfig;
  layoutHash: string;
  /**
   * The run's id (cli/ownership.ts), kept by a resumed run: checkpoints of another run in the same folder
   * are never taken for this one's. Absent in checkpoints written before it existed.
   */
  runId?: string;
  /** Hosts the run spans (coordinator/hosts/), where more than one: the global batch depends on it. */
  hosts?: number;
  weights: Float32Array;
  velocity: Float32Array;
  mean: Float32Array;
}

interface Header extends Omit<CheckpointData, 'weights' | 'velocity' | 'mean'> {
  version: number;
  createdAt: string;
  sizes: { weights: number; velocity: number; mean: number };
  /** Format 1 only: the SHA-256 of the three arrays. */
  sha256?: string;
}

function fileName(epoch: number, step: number): string {
  return `epoch-${String(epoch).padStart(4, '0')}-step-${String(step).padStart(6, '0')}.ckpt`;
}

function digest(parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Writes a checkpoint atomically and removes all but the newest two. Returns its path. */
export function writeCheckpoint(dir: string, data: CheckpointData): string {
  const { weights, velocity, mean, ...rest } = data;
  const header: Header = {
    ...rest,
    version: VERSION,
    createdAt: new Date().toISOString(),
    sizes: { weights: weights.length, velocity: velocity.length, mean: mean.length },
  };
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(pad8(12 + json.length));
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32LE(json.length, 8);
  json.copy(head, 12);
  const parts = [head, bytesOf(weights), bytesOf(velocity), bytesOf(mean)];
  parts.push(digest(parts));
  const file = path.join(dir, fileName(data.epoch, data.step));
  // A full or read-only disk: one line naming the file, the temporary file removed, the older two kept.
  writeFileAtomic(file, parts, 'the checkpoint', { fsync: true });
  for (const old of listCheckpoints(dir).slice(KEEP)) rmSync(path.join(dir, old), { force: true });
  return file;
}

/**
 * Checkpoint file names in `dir`, newest (highest epoch, then step) first; none when `dir` does not
 * exist. A folder that cannot be read is an error naming it and why (not "no checkpoint").
 */
export function listCheckpoints(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TrainpoolError('CHECKPOINT', `cannot read the checkpoint folder ${dir}: ${fsCause(e)}`);
  }
  return names.filter((n) => CHECKPOINT_NAME.test(n)).sort().reverse();
}

const CHECKPOINT_NAME = /^epoch-\d{4}-step-\d{6}\.ckpt$/;

/**
 * Removes the checkpoints a killed run was writing (their temporary names, util/files.ts): never anyone's
 * to resume. Only for the holder of the folder's lock, so that no live run is writing them.
 */
export function removeUnfinishedCheckpoints(dir: string): void {
  for (const n of readdirSync(dir)) {
    // writeFileAtomic's temporary name: `<file>.<pid>.tmp`.
    const finished = n.replace(/\.\d+\.tmp$/, '');
    if (finished !== n && CHECKPOINT_NAME.test(finished)) rmSync(path.join(dir, n), { force: true });
  }
}

/** Reads and verifies one checkpoint; throws CHECKPOINT naming the file and what is wrong with it. */
export function readCheckpoint(file: string): CheckpointData {
  const bad = (why: string) => new TrainpoolError('CHECKPOINT', `checkpoint ${file} is unusable: ${why}`);
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw bad(`it cannot be read: ${fsCause(e)}`);
  }
  const magic = buf.length < 12 ? '' : buf.toString('latin1', 0, 8);
  const format = magic === MAGIC ? VERSION : magic === MAGIC_1 ? 1 : undefined;
  if (format === undefined) throw bad(`it does not start with ${MAGIC}`);
  const headLength = buf.readUInt32LE(8);
  if (12 + headLength > buf.length) throw bad(`its header of ${headLength} bytes is cut off at ${buf.length} bytes`);
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', 12, 12 + headLength)) as Header;
  } catch {
    throw bad('its header is not valid JSON');
  }
  if (header.version !== format) throw bad(`its header says version ${header.version} in a file of format ${format} (${magic}); this trainpool reads versions 1 and ${VERSION}`);
  const { weights: nw, velocity: nv, mean: nm } = header.sizes;
  const start = pad8(12 + headLength);
  const end = start + 4 * (nw + nv + nm);
  const expected = end + (format === VERSION ? DIGEST_BYTES : 0);
  if (buf.length !== expected) throw bad(`${buf.length} bytes where its header promises ${expected} (truncated or padded)`);
  const corrupted = () => bad('its contents fail the SHA-256 check (corrupted)');
  if (format === VERSION && !digest([buf.subarray(0, end)]).equals(buf.subarray(end))) throw corrupted();
  // Copy out of the file buffer: a Float32Array view needs 4-byte alignment, which Buffer pooling breaks.
  const take = (at: number, n: number) => new Float32Array(buf.buffer.slice(buf.byteOffset + at, buf.byteOffset + at + 4 * n));
  const weights = take(start, nw);
  const velocity = take(start + 4 * nw, nv);
  const mean = take(start + 4 * (nw + nv), nm);
  if (format === 1 && digest([weights, velocity, mean].map(bytesOf)).toString('hex') !== header.sha256) throw corrupted();
  const { version: _v, createdAt: _c, sizes: _s, sha256: _h, ...rest } = header;
  return { ...rest, weights, velocity, mean };
}

export interface NewestCheckpoint {
  file: string;
  data: CheckpointData;
  /** Newer files that were skipped, each with the reason. */
  skipped: string[];
}

/** The newest checkpoint in `dir` that reads back whole, or null if there is none. */
export function newestValidCheckpoint(dir: string): NewestCheckpoint | null {
  const skipped: string[] = [];
  for (const name of listCheckpoints(dir)) {
    const file = path.join(dir, name);
    try {
      return { file, data: readCheckpoint(file), skipped };
    } catch (e) {
      skipped.push((e as Error).message);
    }
  }
  if (skipped.length) {
    throw new TrainpoolError('CHECKPOINT', `--resume: no usable checkpoint in ${dir}; ${skipped.join('; ')}`);
  }
  return null;
}
