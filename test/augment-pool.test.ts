import { existsSync, readdirSync } from 'node:fs';
import { transferableSymbol, valueSymbol } from 'piscina';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { AugmentPool } from '../src/data/augment-pool.js';
import { makeShard, type Shard, type ShardRequest } from '../src/data/shard.js';
import { isTrainpoolError } from '../src/util/errors.js';

// A small CIFAR-shaped data set with deterministic contents.
const height = 32;
const width = 32;
const depth = 3;
const size = height * width * depth;
const count = 200;
const images = Uint8Array.from({ length: count * size }, (_, k) => (k * 131 + (k >> 9) * 17) % 256);
const labels = Uint8Array.from({ length: count }, (_, k) => (k * 7) % 10);
const mean = Float32Array.from({ length: size }, (_, k) => 120 + (k % 97) / 7);
const source = { images, labels, mean, height, width, depth };

function request(seed: number, n = 64, augment = true): ShardRequest {
  return { indices: Uint32Array.from({ length: n }, (_, k) => (k * 13 + seed * 5) % count), seed, augment };
}

function sameBytes(a: Shard, b: Shard): boolean {
  const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return bytes(a.x).equals(bytes(b.x)) && bytes(a.labels).equals(bytes(b.labels));
}

/** OS threads of this process (Linux); a worker thread is one of them until it is joined. */
function osThreads(): number | undefined {
  return existsSync('/proc/self/task') ? readdirSync('/proc/self/task').length : undefined;
}

describe.each([1, 2])('AugmentPool with %i thread(s)', (threads) => {
  let pool: AugmentPool;
  beforeAll(() => {
    pool = new AugmentPool({ threads, ...source });
  });
  afterAll(() => pool.close());

  test('a training shard comes back with exactly the bytes of in-process makeShard', async () => {
    const req = request(1);
    expect(sameBytes(await pool.makeShard(req), makeShard({ ...source, ...req }))).toBe(true);
  });

  test('a validation shard (no augmentation) comes back with exactly the in-process bytes', async () => {
    const req = request(2, 50, false);
    expect(sameBytes(await pool.makeShard(req), makeShard({ ...source, ...req }))).toBe(true);
  });

  test('eight concurrent requests each come back matched to their own request', async () => {
    const reqs = Array.from({ length: 8 }, (_, k) => request(100 + k, 16 + 8 * k));
    const results = await Promise.all(reqs.map((r) => pool.makeShard(r)));
    results.forEach((got, k) => {
      expect(got.labels.length).toBe(reqs[k].indices.length);
      expect(sameBytes(got, makeShard({ ...source, ...reqs[k] }))).toBe(true);
    });
    expect(pool.stats.completed).toBeGreaterThanOrEqual(8);
  });

  test('the result is the buffer the thread made, transferred: not shared memory, exactly the shard long', async () => {
    const { x, labels: y } = await pool.makeShard(request(3));
    expect(x.buffer).toBeInstanceOf(ArrayBuffer);
    expect(x.buffer instanceof SharedArrayBuffer).toBe(false);
    expect(x.byteOffset).toBe(0);
    expect(x.buffer.byteLength).toBe(64 * size * 4);
    expect(y.buffer instanceof SharedArrayBuffer).toBe(false);
    expect(y.buffer.byteLength).toBe(64);
  });

  test('a recycled shard\u2019s buffer goes to the next shard of its size, which still has exactly the in-process bytes', async () => {
    const old = await pool.makeShard(request(5, 32));
    pool.recycle([old]);
    const other = await pool.makeShard(request(6, 16)); // another size: a buffer of its own
    expect(old.x.byteLength).toBe(32 * size * 4);
    const reused = await pool.makeShard(request(7, 32));
    // Transferred to the thread that wrote the new shard into it: the old view is detached.
    expect(old.x.byteLength).toBe(0);
    expect(sameBytes(reused, makeShard({ ...source, ...request(7, 32) }))).toBe(true);
    expect(sameBytes(other, makeShard({ ...source, ...request(6, 16) }))).toBe(true);
    // Only one spare: the next shard of that size is made in a new buffer, and the one in use is untouched.
    const fresh = await pool.makeShard(request(8, 32));
    expect(reused.x.byteLength).toBe(32 * size * 4);
    expect(sameBytes(fresh, makeShard({ ...source, ...request(8, 32) }))).toBe(true);
    // A view into a larger buffer is not taken back (the thread could not tell its bounds).
    const part = { x: new Float32Array(new ArrayBuffer(33 * size * 4), 0, 32 * size), labels: new Uint8Array(32) };
    pool.recycle([part]);
    await pool.makeShard(request(9, 32));
    expect(part.x.byteLength).toBe(32 * size * 4);
  });

  test('an index past the last image rejects with the rule and the index', async () => {
    await expect(pool.makeShard({ indices: Uint32Array.of(0, count), seed: 1, augment: true })).rejects.toThrow(
      `Shard index must be below the image count ${count}. Received: indices[1]=${count}`,
    );
    // The thread survives a refused request.
    expect(sameBytes(await pool.makeShard(request(4)), makeShard({ ...source, ...request(4) }))).toBe(true);
  });

  test('the pool reports the threads it was made with', () => {
    expect(pool.threads).toBe(threads);
    expect(pool.stats.liveThreads).toBe(threads);
  });
});

describe('the thread task', () => {
  test('hands its shard to Piscina to move, with its own x and labels buffers in the transfer list', async () => {
    // Run the task in this thread with the data set as its workerData: on the receiving side a
    // transferred and a copied ArrayBuffer look alike, so the transfer list is checked at the source.
    vi.doMock('node:worker_threads', async (importOriginal) => ({ ...(await importOriginal<object>()), workerData: source }));
    try {
      const { default: task } = await import('../src/data/augment-task.js');
      const req = request(10);
      const moved = task(req) as unknown as Record<symbol, unknown>;
      const shard = moved[valueSymbol] as Shard;
      const transferList = moved[transferableSymbol] as ArrayBuffer[];
      expect(transferList).toHaveLength(2);
      expect(transferList[0]).toBe(shard.x.buffer);
      expect(transferList[1]).toBe(shard.labels.buffer);
      expect(sameBytes(shard, makeShard({ ...source, ...req }))).toBe(true);
    } finally {
      vi.doUnmock('node:worker_threads');
    }
  });
});

describe('AugmentPool data sharing', () => {
  test('a data set already in shared memory is shared with the threads, not copied', async () => {
    const sharedImages = new Uint8Array(new SharedArrayBuffer(images.byteLength));
    sharedImages.set(images);
    const pool = new AugmentPool({ threads: 1, ...source, images: sharedImages });
    try {
      const req = request(5, 4, false);
      sharedImages.fill(9);
      // The thread sees the write made after the pool was built.
      const got = await pool.makeShard(req);
      expect(got.x[0]).toBe(Math.fround(9 - mean[0]));
    } finally {
      await pool.close();
    }
  });

  test('a data set in ordinary memory is copied once, so later writes to it are not seen', async () => {
    const own = images.slice();
    const pool = new AugmentPool({ threads: 1, ...source, images: own });
    try {
      own.fill(9);
      const req = request(6, 4, false);
      expect(sameBytes(await pool.makeShard(req), makeShard({ ...source, ...req }))).toBe(true);
    } finally {
      await pool.close();
    }
  });
});

describe('AugmentPool.close', () => {
  test('close() ends every thread and later requests are refused', async () => {
    const threads = 2;
    const pool = new AugmentPool({ threads, ...source });
    await Promise.all([pool.makeShard(request(7)), pool.makeShard(request(8))]);
    const open = osThreads();
    expect(pool.stats.liveThreads).toBe(threads);

    await pool.close();

    expect(pool.stats.liveThreads).toBe(0);
    const closed = osThreads();
    if (open !== undefined && closed !== undefined) expect(closed).toBeLessThanOrEqual(open - threads);
    await expect(pool.makeShard(request(9))).rejects.toThrow(
      'AugmentPool.makeShard must be called before close(). Received a request in state closed',
    );
    await pool.close(); // a second close is a no-op
  });

  test('a thread count below 1 is refused with a USAGE error', () => {
    let caught: unknown;
    try {
      new AugmentPool({ threads: 0, ...source });
    } catch (e) {
      caught = e;
    }
    expect(isTrainpoolError(caught, 'USAGE')).toBe(true);
    expect((caught as Error).message).toBe('Augmentation threads must be an integer >= 1. Received: threads=0');
  });
});
