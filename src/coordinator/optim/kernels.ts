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
  meanSgd(weights: number, velocity: number, parts: number, count: number, from: number, to: number, lr: number, momentum: number): number;
  meanSgdShared(control: number, generation: number, bit: number): number;
}

const PAGE = 65_536;
/**
 * Int32 indices in the threads' control block (kernels.wat meanSgdShared, kernel-thread.mjs), 64 bytes:
 * the update's generation, its ticket (generation << 8 | next chunk), chunks done, a non-finite flag, the
 * threads that took a chunk (a bit each), the arguments, and how many helpers started.
 */
const CONTROL = { gen: 0, ticket: 1, done: 2, bad: 3, used: 4, w: 5, v: 6, parts: 7, count: 8, n: 9, chunk: 10, chunks: 11, lr: 12, momentum: 13, ready: 14 } as const;
const CONTROL_BYTES = 64;
/** Below this many values a pass is not split: waking a thread costs tens of microseconds. */
export const SPLIT_MIN = 65_536;
/**
 * Values per chunk of a shared update: 64 KB of each array (at four replicas, 384 KB a chunk: within a
 * core's L2), ~100 chunks for MiniGoogLeNet. At most 255 chunks (the ticket's low byte): longer arrays
 * take longer chunks.
 */
const CHUNK = 16_384;
const MAX_CHUNKS = 255;
/** Generations wrap below 2^23, so that `generation << 8` stays a positive int32. */
const GENERATIONS = 1 << 23;
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

interface Helper {
  worker: Worker;
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
  /** Int32 index of the threads' control block (CONTROL). */
  private readonly ctl: number;
  private generation = 0;
  /** Threads that took part in the last meanSgd (1: one thread alone, this one or a helper). */
  threadsUsed = 1;
  /** Chunks the helpers ran over the arena's life (tests: the helpers do take part). */
  helperChunks = 0;

  /**
   * Room for `floats` float32 values in all (each array rounded up to 16 bytes) and means over up to
   * `maxParts` arrays. The memory is sized once and never grows: growing would detach every view of it.
   * Past WebAssembly's 4 GiB, or when the memory cannot be had, the arena holds less and what does not
   * fit takes the JavaScript path (tryAlloc, adopt and slot say so).
   */
  constructor(floats: number, maxParts: number, threads = 1) {
    const tableBytes = Math.ceil((4 * maxParts) / ALIGN) * ALIGN;
    // Then the threads' control block: every thread reads the same table of part pointers.
    const headerBytes = tableBytes + CONTROL_BYTES;
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
    this.ctl = tableBytes / 4;
    for (let h = 0; h < threads - 1; h++) {
      // Bit 0 is this thread's; helper h's is bit h + 1.
      const worker = new Worker(new URL('./kernel-thread.mjs', import.meta.url), { workerData: { memory, module: compiled, control: this.ctl, gen: this.ctl + CONTROL.gen, ready: this.ctl + CONTROL.ready, bit: 2 << h } });
      // A helper never keeps the process alive, and one that fails to start simply never takes a chunk.
      worker.unref();
      worker.on('error', () => {});
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      this.helpers.push({ worker, exited });
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
    while (this.readyHelpers() < this.helpers.length && performance.now() < until) await new Promise((r) => setTimeout(r, 2));
    return this.readyHelpers() + 1;
  }

  /** Ends the helper threads. */
  async close(): Promise<void> {
    // Held by the event loop until they have exited (an unref'd thread's exit would not be waited for).
    for (const h of this.helpers) h.worker.ref();
    Atomics.store(this.control, this.ctl + CONTROL.gen, -1);
    Atomics.notify(this.control, this.ctl + CONTROL.gen);
    await Promise.all(this.helpers.map((h) => h.exited));
    this.helpers.length = 0;
  }

  private readyHelpers(): number {
    return Atomics.load(this.control, this.ctl + CONTROL.ready);
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
   * meanSgd over [0, n). Long arrays are cut in chunks that this thread and the helpers take from a common
   * ticket (kernels.wat meanSgdShared): a helper that wakes late, or is descheduled for a while on a busy
   * host, takes fewer chunks, and this thread more, instead of this thread waiting for a fixed share. Each
   * value's arithmetic is the same whoever runs its chunk, so the bits do not depend on the split. Blocks
   * until every chunk is done: a few milliseconds, and the step cannot go on without them.
   */
  private split(w: number, v: number, parts: readonly Float32Array[], n: number, lr: number, momentum: number): boolean {
    const table = this.table.byteOffset;
    if (n < SPLIT_MIN || this.helpers.length === 0) {
      this.threadsUsed = 1;
      return this.k.meanSgd(w, v, table, parts.length, 0, n, lr, momentum) === 1;
    }
    const c = this.control;
    const at = this.ctl;
    const chunk = Math.max(CHUNK, Math.ceil(n / MAX_CHUNKS / 4) * 4);
    const chunks = Math.ceil(n / chunk);
    this.generation = (this.generation % (GENERATIONS - 1)) + 1;
    const generation = this.generation;
    // The last update's ticket cleared first: a helper that read it before it ran out cannot take a chunk of
    // this one with the last one's arguments (its compare-and-swap fails on the cleared ticket).
    Atomics.store(c, at + CONTROL.ticket, 0);
    c.set([w, v, table, parts.length, n, chunk, chunks], at + CONTROL.w);
    this.controlF[at + CONTROL.lr] = lr;
    this.controlF[at + CONTROL.momentum] = momentum;
    c[at + CONTROL.done] = 0;
    c[at + CONTROL.bad] = 0;
    c[at + CONTROL.used] = 0;
    Atomics.store(c, at + CONTROL.ticket, generation << 8);
    // The arguments and the ticket are written before the generation: a helper that sees it sees them.
    Atomics.store(c, at + CONTROL.gen, generation);
    Atomics.notify(c, at + CONTROL.gen);
    const mine = this.k.meanSgdShared(4 * at, generation, 1);
    const started = performance.now();
    for (let done = Atomics.load(c, at + CONTROL.done); done !== chunks; done = Atomics.load(c, at + CONTROL.done)) {
      if (Atomics.wait(c, at + CONTROL.done, done, HELPER_TIMEOUT_MS) === 'timed-out' && performance.now() - started >= HELPER_TIMEOUT_MS) {
        throw new Error(`an exchange helper thread did not finish its chunk of the update in ${HELPER_TIMEOUT_MS / 1000} s: this is a bug`);
      }
    }
    const used = c[at + CONTROL.used];
    let threads = 0;
    for (let b = used; b !== 0; b &= b - 1) threads++;
    this.threadsUsed = threads;
    this.helperChunks += chunks - mine;
    return c[at + CONTROL.bad] === 0;
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
