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
 *
 * The memory is shared, so that helper threads (kernel-thread.mjs) run the fused pass on their share of
 * the arrays while this thread runs its own: each value's arithmetic is the same whoever computes it, so
 * the result is the same bits with one thread or four. Alone, two threads were 1.5–2× faster than one for 1
 * to 4 replicas of MiniGoogLeNet's gradients on this 2-core VM (`npm run bench -- --only passes`); a run
 * uses one per core, up to four (exchangeThreads).
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
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
/**
 * Int32 values in a helper thread's control slot (kernel-thread.mjs): 0 generation, 1 done, 2 weights,
 * 3 velocity, 4 table, 5 count, 6 length, 7 lr (f32), 8 momentum (f32), 9 result, 10 ready; 64 bytes.
 */
const THREAD_SLOT = 16;
/** Below this many values a pass is not split: waking a thread costs tens of microseconds. */
export const SPLIT_MIN = 65_536;
/** How long the coordinator waits for a helper's share before calling it a bug (a helper never takes this long). */
const HELPER_TIMEOUT_MS = 60_000;

/**
 * Threads for a run's update: this one and a helper per core, up to four in all (memory bandwidth saturates
 * before more). Every worker waits for the update (synchronous data parallelism: they have replied and want
 * the new weights), and the augmentation pool builds the next shards beside the workers' compute
 * (prefetch.ts `ahead`), so the update has the cores to itself. When the pool's prefetch still started with
 * each step, a helper waited for cores the pool held: one worker's step was 0.3–0.6 ms slower with two
 * threads; now two threads are 1–4 ms faster for 1–4 workers on the 2-core VM (bench/RUNTIME.md).
 */
export function exchangeThreads(cores = os.availableParallelism()): number {
  return Math.max(1, Math.min(4, cores));
}

const NO_HELPERS: readonly Helper[] = [];

interface Helper {
  worker: Worker;
  /** Int32 index of its control slot. */
  slot: number;
  /** Byte offset of its table of part pointers. */
  table: number;
  exited: Promise<void>;
}
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
  private readonly helpers: Helper[] = [];
  private readonly control: Int32Array;
  private readonly controlF: Float32Array;
  private generation = 0;
  /** Threads that took part in the last meanSgd (1: this one alone). */
  threadsUsed = 1;

  /**
   * Room for `floats` float32 values in all (each array rounded up to 16 bytes) and means over up to
   * `maxParts` arrays. The memory is sized once and never grows: growing would detach every view of it.
   * Past WebAssembly's 4 GiB, or when the memory cannot be had, the arena holds less and what does not
   * fit takes the JavaScript path (tryAlloc, adopt and slot say so).
   */
  constructor(floats: number, maxParts: number, threads = 1) {
    const tableBytes = Math.ceil((4 * maxParts) / ALIGN) * ALIGN;
    // Then, per helper thread, its control slot and its own table (its share's part pointers).
    const helperBytes = 4 * THREAD_SLOT + tableBytes;
    const headerBytes = tableBytes + (threads - 1) * helperBytes;
    const pages = Math.ceil(Math.min(headerBytes + 4 * floats + ALIGN * 64, MAX_BYTES) / PAGE);
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    } catch {
      const header = Math.ceil(headerBytes / PAGE) || 1;
      memory = new WebAssembly.Memory({ initial: header, maximum: header, shared: true });
    }
    this.memory = memory;
    compiled ??= new WebAssembly.Module(Buffer.from(KERNELS_WASM_BASE64, 'base64'));
    this.k = new WebAssembly.Instance(compiled, { env: { memory } }).exports as unknown as KernelExports;
    this.table = new Int32Array(memory.buffer, 0, maxParts);
    this.control = new Int32Array(memory.buffer);
    this.controlF = new Float32Array(memory.buffer);
    for (let h = 0; h < threads - 1; h++) {
      const slotBytes = tableBytes + h * helperBytes;
      const worker = new Worker(new URL('./kernel-thread.mjs', import.meta.url), { workerData: { memory, module: compiled, slot: slotBytes / 4 } });
      // A helper never keeps the process alive, and one that fails to start is simply never asked.
      worker.unref();
      worker.on('error', () => {});
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      this.helpers.push({ worker, slot: slotBytes / 4, table: slotBytes + 4 * THREAD_SLOT, exited });
    }
    this.top = headerBytes;
    this.end = memory.buffer.byteLength;
  }

  /** Threads the fused update may use: this one and its helpers. */
  get threads(): number {
    return this.helpers.length + 1;
  }

  /** Resolves once every helper thread is waiting for work (or `timeoutMs` passed): tests and benchmarks. */
  async ready(timeoutMs = 10_000): Promise<number> {
    const until = performance.now() + timeoutMs;
    while (this.readyHelpers().length < this.helpers.length && performance.now() < until) await new Promise((r) => setTimeout(r, 2));
    return this.readyHelpers().length + 1;
  }

  /** Ends the helper threads. */
  async close(): Promise<void> {
    for (const h of this.helpers) {
      // Held by the event loop until it has exited (an unref'd thread's exit would not be waited for).
      h.worker.ref();
      Atomics.store(this.control, h.slot, -1);
      Atomics.notify(this.control, h.slot);
    }
    await Promise.all(this.helpers.map((h) => h.exited));
    this.helpers.length = 0;
  }

  private readyHelpers(): Helper[] {
    return this.helpers.filter((h) => Atomics.load(this.control, h.slot + 10) === 1);
  }

  /**
   * Room for a run's exchange: the weights and BN statistics (`totalSize`), the velocity, and each of
   * `workers` ranks' gradients and statistics, with a page of slack around each array a region may be
   * mapped over (mapSlot).
   */
  static forRun(totalSize: number, workers: number, threads = exchangeThreads()): ExchangeArena {
    const page = (sharedMemory()?.pageSize ?? 4096) / 4;
    return new ExchangeArena(2 * totalSize + workers * (totalSize + 8) + 2 * page * (workers + 2), workers, threads);
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
      // Over the shared memory: the frame decoder reads into it and views it, as it would an ArrayBuffer.
      return a && (new Uint8Array(this.memory.buffer, a.byteOffset, a.byteLength) as Uint8Array<ArrayBuffer>);
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
    return this.split(weights.byteOffset, velocity.byteOffset, parts, velocity.length, lr, momentum);
  }

  /**
   * meanSgd over [0, n), this thread taking the first share and each ready helper one of the others (cut
   * at multiples of four values, so every share but the last is whole SIMD lanes). Blocks until all are
   * done: the shares are a few milliseconds, and the step cannot go on without them.
   */
  private split(w: number, v: number, parts: readonly Float32Array[], n: number, lr: number, momentum: number): boolean {
    const helpers = n >= SPLIT_MIN && this.helpers.length > 0 ? this.readyHelpers() : NO_HELPERS;
    const share = Math.ceil(n / (helpers.length + 1) / 4) * 4;
    const c = this.control;
    const generation = ++this.generation;
    const asked: Helper[] = [];
    for (const [i, h] of helpers.entries()) {
      const from = (i + 1) * share;
      const to = Math.min(n, from + share);
      if (from >= to) break;
      for (let p = 0; p < parts.length; p++) c[h.table / 4 + p] = parts[p].byteOffset + 4 * from;
      c[h.slot + 2] = w + 4 * from;
      c[h.slot + 3] = v + 4 * from;
      c[h.slot + 4] = h.table;
      c[h.slot + 5] = parts.length;
      c[h.slot + 6] = to - from;
      this.controlF[h.slot + 7] = lr;
      this.controlF[h.slot + 8] = momentum;
      Atomics.store(c, h.slot, generation);
      Atomics.notify(c, h.slot);
      asked.push(h);
    }
    let ok = this.k.meanSgd(w, v, this.table.byteOffset, parts.length, Math.min(n, share), lr, momentum) === 1;
    for (const h of asked) {
      const started = performance.now();
      for (let done = Atomics.load(c, h.slot + 1); done !== generation; done = Atomics.load(c, h.slot + 1)) {
        if (Atomics.wait(c, h.slot + 1, done, HELPER_TIMEOUT_MS) === 'timed-out' && performance.now() - started >= HELPER_TIMEOUT_MS) {
          throw new Error(`an exchange helper thread did not finish its share of the update in ${HELPER_TIMEOUT_MS / 1000} s: this is a bug`);
        }
      }
      ok = c[h.slot + 9] === 1 && ok;
    }
    this.threadsUsed = asked.length + 1;
    return ok;
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
