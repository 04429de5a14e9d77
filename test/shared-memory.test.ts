/**
 * Mapped bulk regions (protocol/shm.ts, shm.c): a region's bytes seen the same through every mapping and
 * through read/write, attachments decoded as views of the mapping, regions mapped inside the exchange
 * arena, and training through worker processes that gives the same bits mapped as read/written.
 *
 * Skipped where the addon is not built (no C compiler at `npm ci`); .ci/run sets TRAINPOOL_REQUIRE_SHM=1,
 * which turns that skip into a failure.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createExchange } from '../src/coordinator/exchange.js';
import { ExchangeArena } from '../src/coordinator/optim/kernels.js';
import { freshState, train, type StepInfo } from '../src/coordinator/trainer.js';
import { SupervisedWorker } from '../src/coordinator/supervisor.js';
import { BulkFile, RegionSink, RegionSource } from '../src/protocol/bulk.js';
import { encodeFrame, FrameDecoder } from '../src/protocol/frame.js';
import { regionMode, sharedMemory } from '../src/protocol/shm.js';
import type { WorkerConfig } from '../src/protocol/messages.js';
import type { Shard } from '../src/data/shard.js';

const shm = sharedMemory();
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-shm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PAGE = shm?.pageSize ?? 4096;

describe('the shared-memory addon', () => {
  it('is built, or the suite was not asked for it', () => {
    if (process.env.TRAINPOOL_REQUIRE_SHM === '1') expect(regionMode()).toBe('mapped shared memory');
    else expect(regionMode()).toMatch(/^(mapped shared memory|read\/write \(.+\))$/);
  });

  it('is off with TRAINPOOL_NO_MMAP=1, and says so', () => {
    const mode = execFileSync(process.execPath, ['--import', 'tsx', '-e', "import('./src/protocol/shm.ts').then((m) => console.log(m.regionMode(), m.sharedMemory() === null))"], {
      env: { ...process.env, TRAINPOOL_NO_MMAP: '1' },
      encoding: 'utf8',
    });
    expect(mode.trim()).toBe('read/write (TRAINPOOL_NO_MMAP=1) true');
  });
});

describe.skipIf(!shm)('mapped regions', () => {
  it('show every write to any mapping and to the file, and the file shows writes to the mappings', () => {
    const a = BulkFile.create(dir);
    expect(a.reserveAndMap(3 * PAGE - 100)).toBe(true);
    // A second descriptor of the same file, mapped as a worker maps what its coordinator reserved.
    const b = BulkFile.fromFd(openSync(`/proc/self/fd/${a.fd}`, 'r+'));
    expect(b.mapReserved()).toBe(true);
    a.write([Uint8Array.of(1, 2, 3), Uint8Array.of(4)], 10);
    expect(Array.from(b.view(10, 4)!)).toEqual([1, 2, 3, 4]);
    b.write([Uint8Array.of(9, 8)], PAGE - 1); // across a page boundary
    const back = new Uint8Array(2);
    readSync(a.fd, back, 0, 2, PAGE - 1);
    expect(Array.from(back)).toEqual([9, 8]);
    writeSync(a.fd, Uint8Array.of(7), 0, 1, 2 * PAGE + 5);
    const into = new Uint8Array(1);
    b.readInto(into, 2 * PAGE + 5);
    expect(into[0]).toBe(7);
    a.close();
    b.close();
  });

  it('fall back to read/write past the mapped size, and map nothing nobody reserved', () => {
    const a = BulkFile.create(dir);
    expect(a.reserveAndMap(PAGE)).toBe(true);
    const across = Uint8Array.from({ length: 300 }, (_, i) => i % 256);
    a.write([across], PAGE - 100); // 100 bytes inside the mapping, 200 past it
    expect(a.view(PAGE - 100, 300)).toBeUndefined();
    const back = new Uint8Array(300);
    a.readInto(back, PAGE - 100);
    expect(back).toEqual(across);
    const fresh = BulkFile.create(dir);
    expect(fresh.mapReserved()).toBe(false);
    expect(fresh.isMapped).toBe(false);
    a.close();
    fresh.close();
  });

  it('are not mapped when the reservation fails (a descriptor that cannot write): read/write instead', () => {
    const a = BulkFile.create(dir);
    const readOnly = BulkFile.fromFd(openSync(`/proc/self/fd/${a.fd}`, 'r'));
    const arena = new ExchangeArena(4 * PAGE, 1);
    expect(arena.mapSlot('weights', PAGE, readOnly)).toBeUndefined();
    expect(readOnly.reserveAndMap(PAGE)).toBe(false);
    expect(readOnly.isMapped).toBe(false);
    // The slot is still there, unmapped, for the read path.
    expect(arena.slot('weights', PAGE)?.length).toBe(PAGE);
    readOnly.close();
    a.close();
  });

  it('decode an attachment as a view of the mapping: no buffer, no copy', () => {
    const file = BulkFile.create(dir);
    expect(file.reserveAndMap(8 * 70_000)).toBe(true);
    const grads = Float32Array.from({ length: 70_000 }, (_, i) => Math.sin(i));
    const parts = encodeFrame({ type: 'x', grads, small: Float32Array.of(1, 2) }, new RegionSink(file));
    const source = new RegionSource({ 0: file });
    const [m] = new FrameDecoder(source).push(Buffer.concat(parts));
    const got = m.grads as Float32Array;
    expect(got).toEqual(grads);
    expect(got.buffer).toBe(file.view(0, 4)!.buffer);
    expect(m.small).toEqual(Float32Array.of(1, 2));
    // The writer writing the region again changes what the view shows: it is the region.
    file.write([new Uint8Array(new Float32Array([42]).buffer)], 0);
    expect(got[0]).toBe(42);
    file.close();
  });

  it('write a staged attachment ahead where the frame in flight does not read, and only for the next frame', () => {
    const shard = (seed: number) => Float32Array.from({ length: 20_000 }, (_, i) => seed + i);
    const file = BulkFile.create(dir);
    expect(file.reserveAndMap(3 * 4 * 20_000)).toBe(true);
    const sink = new RegionSink(file);
    const decode = (parts: Uint8Array[]) => new FrameDecoder(new RegionSource({ 0: file })).push(Buffer.concat(parts))[0].x as Float32Array;
    const writes: number[] = [];
    const write = file.write.bind(file);
    file.write = (parts, offset) => (writes.push(offset), write(parts, offset));
    const [a, b, c, d] = [shard(1), shard(2), shard(3), shard(4)];
    // Frame 1 is in flight at 0; b, staged for frame 2, goes past it.
    const one = encodeFrame({ type: 'x', x: a }, sink);
    expect(sink.stage(b)).toBe(true);
    expect(decode(one)).toEqual(a);
    writes.length = 0;
    const two = encodeFrame({ type: 'x', x: b }, sink);
    // Frame 2 wrote nothing: its images are where b was staged, not over frame 1's.
    expect([writes, sink.stagedHits, decode(two)]).toEqual([[], 1, b]);
    expect(file.view(0, 4 * a.length)).toEqual(new Uint8Array(a.buffer));
    // While frame 2 is in flight, c is staged at 0 (free again: frame 1 was answered)...
    expect(sink.stage(c)).toBe(true);
    expect(writes).toEqual([0]);
    // ...but frame 3 carries d instead: written as usual, past nothing it holds, and c is forgotten.
    const three = encodeFrame({ type: 'x', x: d }, sink);
    expect([decode(three), sink.stagedHits]).toEqual([d, 1]);
    // A staged value is for the next frame only: one frame later it is written again.
    expect(sink.stage(a)).toBe(true);
    encodeFrame({ type: 'y' }, sink);
    writes.length = 0;
    expect(decode(encodeFrame({ type: 'x', x: a }, sink))).toEqual(a);
    expect([writes.length, sink.stagedHits]).toEqual([1, 1]);
    // No room beside the frame in flight, or a region not mapped: nothing staged.
    expect(new RegionSink(file).stage(new Float32Array(4 * 20_000))).toBe(false);
    const plain = BulkFile.create(dir);
    expect(new RegionSink(plain).stage(b)).toBe(false);
    plain.close();
    file.close();
  });

  it('map inside the exchange arena: the slot is the region, and the kernels give the JavaScript path’s bits', () => {
    const n = 3 * 1024 + 7;
    const arena = ExchangeArena.forRun(n, 2);
    const files = [BulkFile.create(dir), BulkFile.create(dir), BulkFile.create(dir)];
    const weights = arena.mapSlot('weights', n, files[0])!;
    const grads = [arena.mapSlot('0:grads', n, files[1])!, arena.mapSlot('1:grads', n, files[2])!];
    expect(weights).toBeDefined();
    expect(grads.every((g) => g !== undefined && arena.holds(g))).toBe(true);
    expect(arena.slot('0:grads', n)).toBe(grads[0]);
    // A worker writes its gradients through its own mapping of the region...
    for (const [r, file] of [files[1], files[2]].entries()) {
      const worker = BulkFile.fromFd(openSync(`/proc/self/fd/${file.fd}`, 'r+'));
      expect(worker.mapReserved()).toBe(true);
      worker.write([new Uint8Array(Float32Array.from({ length: n }, (_, i) => Math.cos(i * (r + 1)) * 1e-2).buffer)], 0);
      worker.close();
    }
    // ...and the kernels read them there and write the weights every worker then reads.
    const start = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.1);
    arena.place('weights', start);
    const velocity = arena.place('velocity', new Float32Array(n).fill(1e-3));
    const js = new ExchangeArena(4 * n, 2);
    const jsWeights = start.slice();
    const jsVelocity = new Float32Array(n).fill(1e-3);
    expect(arena.meanSgd(weights, velocity, grads, 0.01, 0.9)).toBe(true);
    expect(js.meanSgd(jsWeights, jsVelocity, grads.map((g) => g.slice()), 0.01, 0.9)).toBe(true);
    expect(Buffer.from(weights.buffer, weights.byteOffset, 4 * n).equals(Buffer.from(jsWeights.buffer))).toBe(true);
    const seen = new Uint8Array(4 * n);
    readSync(files[0].fd, seen, 0, seen.length, 0);
    expect(Buffer.from(seen).equals(Buffer.from(jsWeights.buffer))).toBe(true);
    for (const f of files) f.close();
  });
});

describe.skipIf(!shm)('a run\'s exchange regions', () => {
  // A worker maps only a region of whole pages. Reply regions are preallocated for gradients and BN
  // statistics, of which the coordinator maps the gradients: before, such a file kept its odd size and
  // every worker wrote its gradients with pwrite (MiniGoogLeNet: 6,625,064 bytes, 1,832 past a page).
  it.each([
    ['MiniGoogLeNet', { totalSize: 1_656_250, trainableSize: 1_652_826 }],
    ['the tiny model', { totalSize: 40_024, trainableSize: 40_000 }],
    ['a state of whole pages', { totalSize: 3 * 1024, trainableSize: 2 * 1024 }],
  ] as const)('are all mapped by the workers too, for %s', (_, sizes) => {
    const exchange = createExchange(sizes, 2);
    try {
      expect(exchange.mapped).toBe(true);
      // The weights, and each reply whole (gradients and statistics, written with memcpy: no pwrite).
      const regions: [BulkFile, number][] = [[exchange.shared.file, 4 * sizes.totalSize], ...exchange.replies.map((f): [BulkFile, number] => [f, 4 * sizes.totalSize + 64])];
      for (const [file, bytes] of regions) {
        const worker = BulkFile.fromFd(openSync(`/proc/self/fd/${file.fd}`, 'r+'));
        expect(worker.mapReserved()).toBe(true);
        expect(worker.view(0, bytes)).toBeDefined();
        worker.close();
      }
    } finally {
      exchange.close();
    }
  });
});

/** Fake-compute workers (src/worker/fake.ts) trained for `steps` steps through `exchange`; one is killed mid-run when asked. */
async function trainFake(
  map: boolean,
  o: { killAtStep?: number; threads?: number } = {},
): Promise<{ weights: Float32Array; mapped: boolean; restarts: number; steps: StepInfo[]; threads: number; staged: number }> {
  const { killAtStep } = o;
  // Over SPLIT_MIN trainable values, so that an update on several threads is split.
  const sizes = { totalSize: 70_000 + 24, trainableSize: 70_000 };
  const G = 2;
  const exchange = createExchange(sizes, G, { map, threads: o.threads ?? 1 });
  await exchange.arena.ready();
  const config = (rank: number): WorkerConfig => ({
    rank,
    model: { name: 'tiny', width: 8, height: 8, depth: 3, classes: 4, seed: 1 },
    backend: 'cpu',
    gpu: null,
    compute: { kind: 'fake', delayMs: 0, trainableSize: sizes.trainableSize, statsSize: 24 },
    layoutHash: 'fake',
  });
  const workers = [0, 1].map(
    (rank) =>
      new SupervisedWorker({
        killAtSteps: rank === 1 && killAtStep ? new Set([killAtStep]) : undefined,
        worker: {
          config: config(rank),
          shared: exchange.shared,
          reply: exchange.replies[rank],
          receive: exchange.arena.receiver(rank, ['grads', 'stats']),
          // Room for two shards: the next one is written while the worker computes this one (RegionSink.stage).
          requestBytes: map ? 2 * 4 * 64 * 8 * 8 * 3 * 2 : undefined,
        },
      }),
  );
  // Shards of 96 KiB (two floats per pixel of 64 8×8×3 images): over the bulk threshold, so they travel in the request region.
  const shards = {
    makeShard: async ({ indices, seed }: { indices: Uint32Array; seed: number }): Promise<Shard> => ({
      x: Float32Array.from({ length: indices.length * 8 * 8 * 3 * 2 }, (_, i) => ((indices[i % indices.length] + i + seed) % 97) / 97),
      labels: Uint8Array.from(indices, (i) => i % 4),
    }),
  };
  const steps: StepInfo[] = [];
  try {
    await Promise.all(workers.map((w) => w.start()));
    const weights = Float32Array.from({ length: sizes.totalSize }, (_, i) => Math.sin(i) * 0.05);
    const { state } = await train(
      { clients: workers, shards, trainableSize: sizes.trainableSize, arena: exchange.arena },
      { epochs: 1, batchSize: 64, lr: 0.1, momentum: 0.9, scaleLr: false, warmupEpochs: 0, seed: 3, trainCount: 64 * G * 6, testCount: 0, testOffset: 0, evalChunk: 64, prefetch: 1 },
      freshState(weights, sizes.trainableSize),
      { onStep: (s) => steps.push(s) },
    );
    return { weights: state.weights.slice(), mapped: exchange.mapped, restarts: workers[1].restarts, steps, threads: exchange.arena.threads, staged: workers.reduce((n, w) => n + (w.worker?.stagedRequests ?? 0), 0) };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    exchange.close();
  }
}

describe.skipIf(!shm)('training through worker processes over mapped regions', () => {
  it('gives the same bits as read/write regions, with the update on two threads, and after a worker is killed mid-step and replaced', async () => {
    const [readWrite, mapped, replaced] = [await trainFake(false), await trainFake(true, { threads: 2 }), await trainFake(true, { killAtStep: 3 })];
    expect(readWrite.mapped).toBe(false);
    expect(mapped.mapped).toBe(true);
    expect([readWrite.threads, mapped.threads]).toEqual([1, 2]);
    // Shards staged ahead in the mapped runs (none can be in read/write regions), with the same bits.
    expect([readWrite.staged, mapped.staged > 0]).toEqual([0, true]);
    expect(mapped.steps).toHaveLength(6);
    // Training moved the weights (fake gradients depend on the shard and on weights[0])...
    expect(Buffer.from(mapped.weights.buffer).equals(Buffer.from(Float32Array.from({ length: mapped.weights.length }, (_, i) => Math.sin(i) * 0.05).buffer))).toBe(false);
    // ...identically whichever way the regions carried them, and through a replacement worker.
    expect(Buffer.from(mapped.weights.buffer).equals(Buffer.from(readWrite.weights.buffer))).toBe(true);
    expect(replaced.restarts).toBe(1);
    expect(Buffer.from(replaced.weights.buffer).equals(Buffer.from(mapped.weights.buffer))).toBe(true);
  }, 120_000);
});
