/**
 * The coordinator's per-element passes at memory speed: the mean of the replicas' gradients fused with
 * Keras momentum SGD and the divergence check (one pass instead of three), and the mean of their BN
 * statistics, in WebAssembly SIMD (kernels.wat) over one WebAssembly memory, the arena, that holds every
 * array they touch: the weights, the velocity and each rank's received gradients and statistics, which
 * the bulk regions read into directly (worker-handle.ts), so no pass copies its inputs first.
 *
 * Bit-identical to average.ts and sgd.ts, whose arithmetic kernels.wat repeats operation for operation;
 * test/exchange-arena.test.ts compares the two. Arrays outside the arena (in-process test clients, say) take
 * the JavaScript path, with the same results.
 */
import { averageInto } from './average.js';
import type { BulkFile } from '../../protocol/bulk.js';
import { roundUpToPage, sharedMemory } from '../../protocol/shm.js';
import { KERNELS_WASM_BASE64 } from './kernels-wasm.js';
import { sgdStep } from './sgd.js';

interface KernelExports {
  mean(out: number, parts: number, count: number, n: number): void;
  meanSgd(weights: number, velocity: number, parts: number, count: number, n: number, lr: number, momentum: number): number;
}

const PAGE = 65_536;
/** Every allocation starts on 16 bytes: a v128 load needs no alignment, but an aligned one is faster. */
const ALIGN = 16;
/** wasm32 addresses 4 GiB. */
const MAX_BYTES = 2 ** 32 - PAGE;

let compiled: WebAssembly.Module | null = null;

export class ExchangeArena {
  private readonly memory: WebAssembly.Memory;
  private readonly k: KernelExports;
  private readonly table: Int32Array;
  private readonly slots = new Map<string, Float32Array>();
  private top: number;
  private readonly end: number;
  private fallback = new Float32Array(0);

  /**
   * Room for `floats` float32 values in all (each array rounded up to 16 bytes) and means over up to
   * `maxParts` arrays. The memory is sized once and never grows: growing would detach every view of it.
   * Past WebAssembly's 4 GiB, or when the memory cannot be had, the arena holds less and what does not
   * fit takes the JavaScript path (tryAlloc, adopt and slot say so).
   */
  constructor(floats: number, maxParts: number) {
    const tableBytes = Math.ceil((4 * maxParts) / ALIGN) * ALIGN;
    const pages = Math.ceil(Math.min(tableBytes + 4 * floats + ALIGN * 64, MAX_BYTES) / PAGE);
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    } catch {
      memory = new WebAssembly.Memory({ initial: Math.ceil(tableBytes / PAGE) || 1 });
    }
    this.memory = memory;
    compiled ??= new WebAssembly.Module(Buffer.from(KERNELS_WASM_BASE64, 'base64'));
    this.k = new WebAssembly.Instance(compiled, { env: { memory } }).exports as unknown as KernelExports;
    this.table = new Int32Array(memory.buffer, 0, maxParts);
    this.top = tableBytes;
    this.end = memory.buffer.byteLength;
  }

  /**
   * Room for a run's exchange: the weights and BN statistics (`totalSize`), the velocity, and each of
   * `workers` ranks' gradients and statistics, with a page of slack around each array a region may be
   * mapped over (mapSlot).
   */
  static forRun(totalSize: number, workers: number): ExchangeArena {
    const page = (sharedMemory()?.pageSize ?? 4096) / 4;
    return new ExchangeArena(2 * totalSize + workers * (totalSize + 8) + 2 * page * (workers + 2), workers);
  }

  /** A new array of `length` zeros in the arena, or undefined when the arena is full. */
  tryAlloc(length: number): Float32Array | undefined {
    const bytes = Math.ceil((4 * length) / ALIGN) * ALIGN;
    if (this.top + bytes > this.end) return undefined;
    const a = new Float32Array(this.memory.buffer, this.top, length);
    this.top += bytes;
    return a;
  }

  /** A copy of `a` in the arena, or `a` itself when the arena is full. */
  adopt(a: Float32Array): Float32Array {
    const out = this.tryAlloc(a.length);
    if (!out) return a;
    out.set(a);
    return out;
  }

  /**
   * The arena's array for `key` (a rank and a field), `length` values long: the same one every time, so
   * a replacement worker's gradients land where its predecessor's did. Undefined when the arena is full.
   */
  slot(key: string, length: number): Float32Array | undefined {
    const kept = this.slots.get(key);
    if (kept && kept.length === length) return kept;
    const fresh = this.tryAlloc(length);
    if (fresh) this.slots.set(key, fresh);
    return fresh;
  }

  /**
   * The slot `key` (see slot) with the bulk region `file` mapped over it: the region's bytes are the
   * slot's, in this process and in the worker that maps the region (protocol/bulk.ts), so the kernels
   * read a worker's gradients and write the weights every worker reads with no copy in between. Undefined,
   * and nothing changed, without the shared-memory addon, when the arena is full or the region cannot be
   * reserved: the slot is then filled from the region by reads, as before.
   */
  mapSlot(key: string, length: number, file: BulkFile): Float32Array | undefined {
    const shm = sharedMemory();
    if (!shm || this.slots.has(key)) return undefined;
    const start = roundUpToPage(this.top, shm.pageSize);
    const bytes = roundUpToPage(4 * length, shm.pageSize);
    if (start + bytes > this.end || !file.mapAt(this.memory.buffer, start, bytes)) return undefined;
    this.top = start + bytes;
    const a = new Float32Array(this.memory.buffer, start, length);
    this.slots.set(key, a);
    return a;
  }

  /** `a` copied into the slot `key` (the trainer's weights and velocity), or `a` itself when the arena is full. */
  place(key: string, a: Float32Array): Float32Array {
    const home = this.slot(key, a.length);
    if (!home) return a;
    if (home !== a) home.set(a);
    return home;
  }

  /**
   * A bulk-region receiver (worker-handle.ts) for rank `rank`: its `fields` are read straight into the
   * rank's slots, where the kernels find them.
   */
  receiver(rank: number, fields: readonly string[]): (field: string, bytes: number) => Uint8Array<ArrayBuffer> | undefined {
    return (field, bytes) => {
      if (!fields.includes(field) || bytes % 4 !== 0) return undefined;
      const a = this.slot(`${rank}:${field}`, bytes / 4);
      return a && new Uint8Array(this.memory.buffer, a.byteOffset, a.byteLength);
    };
  }

  holds(a: Float32Array): boolean {
    return a.buffer === this.memory.buffer;
  }

  /** out = the element-wise mean of `parts` (average.ts's averageInto). */
  mean(out: Float32Array, parts: readonly Float32Array[]): Float32Array {
    if (!this.inArena(out, parts)) return averageInto(out, parts);
    this.k.mean(out.byteOffset, this.table.byteOffset, parts.length, out.length);
    return out;
  }

  /**
   * sgdStep(weights, mean of `parts`, { velocity }, lr, momentum) in one pass: updates `weights` and
   * `velocity` in place and returns false if any new velocity is NaN or infinite (sgd.ts).
   */
  meanSgd(weights: Float32Array, velocity: Float32Array, parts: readonly Float32Array[], lr: number, momentum: number): boolean {
    if (weights.length < velocity.length) {
      throw new Error(`meanSgd: ${velocity.length} velocities and ${weights.length} weights must agree: this is a bug`);
    }
    if (!this.holds(weights) || !this.holds(velocity) || !this.inArena(velocity, parts)) {
      if (this.fallback.length !== velocity.length) this.fallback = new Float32Array(velocity.length);
      averageInto(this.fallback, parts);
      return sgdStep(weights, this.fallback, { velocity }, lr, momentum);
    }
    return this.k.meanSgd(weights.byteOffset, velocity.byteOffset, this.table.byteOffset, parts.length, velocity.length, lr, momentum) === 1;
  }

  /** True when every array is in the arena; then the parts' addresses are in the table. Checks lengths. */
  private inArena(out: Float32Array, parts: readonly Float32Array[]): boolean {
    if (parts.length === 0) throw new Error('the exchange arena got no arrays to average: this is a bug');
    for (const p of parts) {
      if (p.length !== out.length) {
        throw new Error(`the exchange arena got arrays of ${parts.map((q) => q.length).join(', ')} values for ${out.length}: this is a bug`);
      }
    }
    if (parts.length > this.table.length || !this.holds(out) || !parts.every((p) => this.holds(p))) return false;
    for (let i = 0; i < parts.length; i++) this.table[i] = parts[i].byteOffset;
    return true;
  }
}
