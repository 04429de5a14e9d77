/**
 * Bulk regions: large frame attachments (weights, gradients, image shards) cross between coordinator and
 * worker through memory-backed files rather than through the pipe.
 *
 * Why: measured here, 6.6 MB through the fd-3 socket pair took 7–40 ms (Node reads 64 KiB per callback
 * and the socket buffer holds ~200 KiB, so both processes ping-pong through ~100 wake-ups on two busy
 * cores), while a write and a read of a /dev/shm file took ~1 ms each. The pipe still carries every
 * message, in order; an attachment in a region is referenced from the frame header and read
 * synchronously when the frame is decoded, so the two paths cannot disagree about ordering.
 *
 * Each region is written by one side only, and strictly alternating request/reply traffic means a region
 * is never rewritten before its reader has read it: the coordinator writes a worker's request region only
 * after that worker answered the previous request, and the shared state region only after every worker
 * answered the step. Files are unlinked as soon as they are opened and reach the worker as inherited file
 * descriptors, so no file outlives the run, whatever kills it.
 *
 * Where the shared-memory addon is built (shm.ts), the regions that carry the weights and the gradients
 * are mapped: the coordinator reserves them and maps them inside its exchange arena, the worker maps them
 * at start, and an attachment in a mapped region is a memcpy to write and a view to read.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, statfsSync, unlinkSync, writeSync, writevSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BulkSink, BulkSource } from './frame.js';
import { roundUpToPage, sharedMemory, type SharedMemory } from './shm.js';
import { pad8 } from '../util/align.js';
import { TrainpoolError } from '../util/errors.js';
import { fsCause } from '../util/files.js';

/** Attachments at least this large go through a region; smaller ones ride in the frame. */
export const BULK_THRESHOLD = 64 * 1024;

/** Where regions live: tmpfs (/dev/shm) when it has room, else the temp folder (page cache). */
export function bulkDirectory(bytesNeeded: number): string {
  try {
    if (existsSync('/dev/shm')) {
      const s = statfsSync('/dev/shm');
      // Docker's default /dev/shm is 64 MB: fall back rather than fail with ENOSPC mid-run.
      if (s.bavail * s.bsize > 2 * bytesNeeded) return '/dev/shm';
    }
  } catch {
    // not Linux, or no statfs: use the temp folder
  }
  return os.tmpdir();
}

export class BulkFile {
  /** The file's first bytes, mapped (shm.ts); null when it is read and written with system calls. */
  private mapped: Uint8Array<ArrayBuffer> | null = null;

  private constructor(
    readonly fd: number,
    /** Its folder, for messages (the descriptor's, for an inherited one). */
    private readonly where: string,
  ) {}

  /** Creates an anonymous region: the file is unlinked at once, only the descriptor keeps it. */
  static create(dir: string): BulkFile {
    const file = path.join(dir, `trainpool-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
    unlinkSync(file);
    return new BulkFile(fd, dir);
  }

  /**
   * A region in `dir` with its first `bytes` allocated (preallocate), so that no write within them meets a
   * full disk mid-run; where `dir` has no room for them, in the temp folder instead. Throws OUTPUT, one
   * line, when neither has: at the start of a run, not at its hundredth step.
   */
  static createReserved(dir: string, bytes: number): BulkFile {
    const dirs = path.resolve(dir) === path.resolve(os.tmpdir()) ? [dir] : [dir, os.tmpdir()];
    for (const [i, d] of dirs.entries()) {
      const file = BulkFile.create(d);
      try {
        file.preallocate(bytes);
        return file;
      } catch (e) {
        file.close();
        if (i === dirs.length - 1) throw e;
      }
    }
    throw new Error('createReserved: no folder tried: this is a bug');
  }

  /**
   * Writes zeros over the file's first `bytes` where it is shorter: a file system then holds those blocks
   * (tmpfs its pages), so later writes within them cannot fail for room. Plain writes rather than
   * posix_fallocate (shm.c's reserve, which the mapped regions use) so that this works without the addon,
   * and leaves the size as asked: a worker maps only a region reserved in whole pages (mapReserved).
   */
  preallocate(bytes: number): void {
    try {
      const { size } = fstatSync(this.fd);
      if (size >= bytes) return;
      const zeros = Buffer.alloc(Math.min(1 << 20, bytes - size));
      for (let at = size; at < bytes; ) at += writeSync(this.fd, zeros, 0, Math.min(zeros.length, bytes - at), at);
    } catch (e) {
      throw new TrainpoolError('OUTPUT', `could not reserve ${(bytes / 1e6).toFixed(1)} MB for an exchange region in ${this.where}: ${fsCause(e)}`);
    }
  }

  /** Wraps an inherited descriptor (the worker's side). */
  static fromFd(fd: number): BulkFile {
    fstatSync(fd); // fails now, with EBADF, rather than at the first read
    return new BulkFile(fd, `descriptor ${fd}`);
  }

  /**
   * Reserves the file's first `bytes` and maps them over `bytes` bytes of `buffer` at `byteOffset` (the
   * coordinator's exchange arena). False, and nothing mapped, without the addon or when the reservation
   * fails (a full /dev/shm): the file is then read and written as before.
   */
  mapAt(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, bytes: number): boolean {
    return this.reserved(bytes, (shm) => {
      shm.mapInto(buffer, byteOffset, bytes, this.fd);
      return new Uint8Array(buffer as ArrayBuffer, byteOffset, bytes);
    });
  }

  /** Reserves the file's first `bytes` (rounded up to pages) and maps them here; false where it cannot. */
  reserveAndMap(bytes: number): boolean {
    return this.reserved(bytes, (shm, reserved) => new Uint8Array(shm.map(this.fd, reserved)));
  }

  /**
   * Reserves whole pages for `bytes`, then maps them with `map`; false (nothing mapped) where either fails.
   * The file ends on a page boundary afterwards, also where it was already longer than `bytes` (a reply
   * region preallocated for gradients and statistics, of which the coordinator maps the gradients): the
   * worker maps only a file of whole pages (mapReserved), and one that did not end on one was written with
   * pwrite, one 6.6 MB copy per MiniGoogLeNet step that the mapping exists to avoid.
   */
  private reserved(bytes: number, map: (shm: SharedMemory, reserved: number) => Uint8Array<ArrayBuffer>): boolean {
    const shm = sharedMemory();
    if (!shm || this.mapped) return false;
    const reserved = roundUpToPage(bytes, shm.pageSize);
    try {
      shm.reserve(this.fd, roundUpToPage(Math.max(bytes, fstatSync(this.fd).size), shm.pageSize));
      this.mapped = map(shm, reserved);
    } catch {
      return false;
    }
    return true;
  }

  /**
   * Maps the whole file if its peer reserved it (a size of whole pages: the worker's side of mapAt). A file
   * nobody reserved has size 0 and stays unmapped; so does everything written past the mapped size.
   */
  mapReserved(): boolean {
    const shm = sharedMemory();
    if (!shm || this.mapped) return false;
    const { size } = fstatSync(this.fd);
    if (size === 0 || size % shm.pageSize !== 0) return false;
    try {
      this.mapped = new Uint8Array(shm.map(this.fd, size));
    } catch {
      return false;
    }
    return true;
  }

  get isMapped(): boolean {
    return this.mapped !== null;
  }

  /** The mapped bytes at `offset`, undefined where the file is not mapped. Valid until the writer rewrites them. */
  view(offset: number, bytes: number): Uint8Array<ArrayBuffer> | undefined {
    const m = this.mapped;
    if (!m || offset + bytes > m.length) return undefined;
    return m.subarray(offset, offset + bytes);
  }

  write(parts: readonly Uint8Array[], offset: number): void {
    const m = this.mapped;
    const total = parts.reduce((n, p) => n + p.length, 0);
    if (m && offset + total <= m.length) {
      let at = offset;
      for (const p of parts) {
        // Already in place: the weights the exchange's kernels updated inside the mapped region itself.
        if (p.buffer !== m.buffer || p.byteOffset !== m.byteOffset + at) m.set(p, at);
        at += p.length;
      }
      return;
    }
    let at = offset;
    let rest = parts.filter((p) => p.length > 0);
    try {
      while (rest.length) {
        const n = writevSync(this.fd, rest, at);
        at += n;
        rest = advance(rest, n);
      }
    } catch (e) {
      // One line naming the region and the cause; the run stops on it at once (worker-handle.ts).
      throw new TrainpoolError('OUTPUT', `could not write an exchange region (${this.where}): ${fsCause(e)}`);
    }
  }

  /** Reads `length` bytes at `offset` into `into` (from its start). */
  readInto(into: Uint8Array, offset: number): void {
    const m = this.mapped;
    if (m && offset + into.length <= m.length) {
      if (into.buffer !== m.buffer || into.byteOffset !== m.byteOffset + offset) into.set(m.subarray(offset, offset + into.length));
      return;
    }
    let done = 0;
    while (done < into.length) {
      const n = readSync(this.fd, into, done, into.length - done, offset + done);
      if (n === 0) throw new Error(`bulk region ended at ${offset + done} bytes, ${into.length - done} short of an attachment: this is a bug`);
      done += n;
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

function advance(parts: Uint8Array[], n: number): Uint8Array[] {
  let skip = n;
  const out: Uint8Array[] = [];
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    out.push(skip ? p.subarray(skip) : p);
    skip = 0;
  }
  return out;
}


/** Region numbers in frame headers. */
export const OWN_REGION = 0;
export const SHARED_REGION = 1;

/**
 * The coordinator's weights, written once per version for every worker to read: with G workers the
 * state costs one 6.6 MB write per step instead of G.
 */
export class SharedState {
  private version = -1;
  private current: object | null = null;

  constructor(readonly file: BulkFile) {}

  /** Makes `data` (of `version`) readable by every worker; writes only when the version changed. */
  publish(version: number, data: Float32Array): void {
    if (version !== this.version || data !== this.current) {
      this.file.write([new Uint8Array(data.buffer, data.byteOffset, data.byteLength)], 0);
      this.version = version;
      this.current = data;
    }
  }

  holds(value: object): boolean {
    return value === this.current;
  }
}

/**
 * Places one side's large attachments in its own region, one after another from 0 in every frame, and, for
 * the coordinator's requests, an attachment of the next frame written ahead (stage): a shard is ready
 * while its worker computes the step before it, so its copy need not wait for the update between them.
 */
export class RegionSink implements BulkSink {
  readonly threshold = BULK_THRESHOLD;
  private at = 0;
  /** Frames begun so far. */
  private frames = 0;
  /** The byte ranges the latest frame placed: its reader may be reading them until it answers. */
  private ranges: [number, number][] = [];
  /** An attachment written ahead for frame `frame`, at `offset`. */
  private staged: { value: object; offset: number; bytes: number; frame: number } | null = null;
  /** Attachments placed from what was staged (tests and the benchmark). */
  stagedHits = 0;

  constructor(
    private readonly own: BulkFile,
    private readonly shared?: SharedState,
  ) {}

  /**
   * Writes `value`'s bytes now where the next frame can find them, if that frame carries `value` itself:
   * in a range of the mapped region that the latest frame does not use (the peer may be reading it), and
   * only for the next frame, whose predecessor has been answered by the time it is sent (one request in
   * flight per channel). The caller must not change `value` before then. False, and nothing written, where
   * the region is not mapped or has no such room; the frame then writes it as usual.
   */
  stage(value: Float32Array | Uint8Array): boolean {
    const bytes = value.byteLength;
    if (bytes < this.threshold) return false;
    const offset = [0, ...this.ranges.map(([, end]) => pad8(end))].find(
      (o) => this.own.view(o, bytes) !== undefined && !this.ranges.some(([a, b]) => o < b && a < o + bytes),
    );
    if (offset === undefined) return false;
    this.own.write([new Uint8Array(value.buffer, value.byteOffset, bytes)], offset);
    this.staged = { value, offset, bytes, frame: this.frames + 1 };
    return true;
  }

  begin(): void {
    this.at = 0;
    this.frames++;
    this.ranges = [];
    if (this.staged && this.staged.frame !== this.frames) this.staged = null;
  }

  place(_field: string, bytes: Uint8Array, value: object): { region: number; offset: number } {
    if (this.shared?.holds(value)) return { region: SHARED_REGION, offset: 0 };
    const staged = this.staged;
    if (staged && staged.value === value && staged.bytes === bytes.length) {
      this.staged = null;
      this.stagedHits++;
      return this.taken(staged.offset, bytes.length);
    }
    let offset = this.at;
    // Past a range this frame already holds (what was staged for it).
    for (const [a, b] of this.ranges) if (offset < b && a < offset + bytes.length) offset = pad8(b);
    if (staged && offset < staged.offset + staged.bytes && staged.offset < offset + bytes.length) this.staged = null;
    this.own.write([bytes], offset);
    this.at = pad8(offset + bytes.length);
    return this.taken(offset, bytes.length);
  }

  private taken(offset: number, bytes: number): { region: number; offset: number } {
    this.ranges.push([offset, offset + bytes]);
    return { region: OWN_REGION, offset };
  }
}

/**
 * Reads the peer's attachments from its regions, by region number, into buffers it keeps per field and
 * reuses: a fresh 6.6 MB buffer per frame costs ~20 ms of page faults in the VMs measured here, ten
 * times the read itself. So an attachment decoded from a region is valid until the next frame on this
 * channel carries the same field; with one request in flight per worker, every reader here consumes or
 * copies it before then. An attachment in a mapped region is a view of the region itself, valid until its
 * writer writes the region again: the coordinator only after every worker answered the step, a worker
 * only after it was asked again, and each reader has used the view by then.
 */
export class RegionSource implements BulkSource {
  private readonly buffers = new Map<string, Uint8Array<ArrayBuffer>>();

  /**
   * `receive`, when given, places fields itself (the coordinator reads gradients straight into the
   * memory it averages them in, optim/kernels.ts); it answers undefined for the fields it leaves here.
   */
  constructor(
    private readonly regions: Partial<Record<number, BulkFile>>,
    private readonly receive?: (field: string, bytes: number) => Uint8Array<ArrayBuffer> | undefined,
  ) {}

  /** Mapped regions need no buffer: the attachment is read where it lies. */
  view(region: number, offset: number, bytes: number): Uint8Array<ArrayBuffer> | undefined {
    return this.regions[region]?.view(offset, bytes);
  }

  buffer(field: string, bytes: number): Uint8Array<ArrayBuffer> {
    const placed = this.receive?.(field, bytes);
    if (placed && placed.byteLength === bytes && placed.byteOffset % 8 === 0) return placed;
    const kept = this.buffers.get(field);
    if (kept && kept.byteLength === bytes) return kept;
    const fresh = new Uint8Array(bytes);
    this.buffers.set(field, fresh);
    return fresh;
  }

  read(region: number, offset: number, into: Uint8Array): void {
    const file = this.regions[region];
    if (!file) throw new Error(`no bulk region ${region} on this side of the channel: this is a bug`);
    file.readInto(into, offset);
  }
}
