/**
 * Replayed webgpu training steps (src/engine/replay/replay.ts, model/replica.ts) against eager ones:
 * bit-identical gradients, BN statistics, loss and accuracy over steps with changing weights, shards and
 * dropout seeds, no tfjs kernel and no tensor in a replayed step, and evaluation afterwards on the right
 * weights. Runs on the software adapter (tools/soft-gpu.sh).
 */
import { describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend } from '../src/engine/backend.js';
import { RecordingError, ReplayedStep } from '../src/engine/replay/replay.js';
import { Replica } from '../src/model/replica.js';
import { Rng } from '../src/util/random.js';
import { webgpuAvailability } from './helpers/webgpu.js';

const webgpu = await webgpuAvailability('replay.test.ts');

describe.runIf(!webgpu.available && webgpu.required)('webgpu replay, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('finds an adapter', () => {
    expect.fail(`TRAINPOOL_REQUIRE_WEBGPU=1 but ${webgpu.skipReason.split(';')[0]}`);
  });
});

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** Runs `body` with a replica that replays and one that stays eager (the tiny model, `seed`) on a webgpu backend; closes all three. */
async function withPair(seed: number, body: (replayed: Replica, eager: Replica) => Promise<void>): Promise<void> {
  const handle = await setupBackend('webgpu');
  const spec = { name: 'tiny' as const, width: 32, height: 32, depth: 3, classes: 10, seed };
  const replayed = new Replica(spec, { replay: true });
  const eager = new Replica(spec, { replay: false });
  try {
    await body(replayed, eager);
  } finally {
    replayed.dispose();
    eager.dispose();
    await handle.close();
  }
}

describe.skipIf(!webgpu.available)('replayed webgpu training steps', () => {
  it('equal eager steps bit for bit, run no tfjs kernel, and leave evaluation on the weights last set', async () => {
    await withPair(1, async (replayed, eager) => {
      const rng = new Rng(11);
      const state = await eager.getState();
      const batch = 8;
      for (let step = 1; step <= 5; step++) {
        // Other weights (as SGD would move them), another shard, another dropout seed every step.
        for (let i = 0; i < state.length; i++) state[i] += 1e-2 * (rng.next() - 0.5);
        const shard = { x: Float32Array.from({ length: batch * 32 * 32 * 3 }, () => rng.next() - 0.5), labels: Uint8Array.from({ length: batch }, () => Math.floor(rng.next() * 10)) };
        const seed = 1000 + step;
        eager.setState(state);
        const want = await eager.computeGradients(shard, seed);
        replayed.setState(state);
        const tensors = tf.memory().numTensors;
        const check = async () => {
          const got = await replayed.computeGradients(shard, seed);
          expect(bits(got.grads)).toEqual(bits(want.grads));
          expect(bits(got.stats)).toEqual(bits(want.stats));
          expect(Object.is(got.loss, want.loss)).toBe(true);
          expect(Object.is(got.acc, want.acc)).toBe(true);
        };
        // The first step of a batch size is eager, and records (outside tf.profile, which times every
        // program alone and so changes the program); every later one replays, without tfjs.
        if (step === 1) {
          await check();
          // Recorded: tfjs' spare buffers were given back (the recording owns its own).
          expect((tf.backend() as unknown as { bufferManager: { getNumFreeBuffers(): number } }).bufferManager.getNumFreeBuffers()).toBe(0);
        } else {
          const profile = await tf.profile(check);
          expect(profile.kernels).toHaveLength(0);
          expect(profile.newTensors).toBe(0);
          expect(tf.memory().numTensors).toBe(tensors);
        }
        expect(replayed.replaying(batch)).toBe(true);
      }
      // Evaluation runs eagerly on the weights last set, though the variables missed the replayed steps.
      const test = { x: Float32Array.from({ length: 16 * 32 * 32 * 3 }, () => rng.next() - 0.5), labels: Uint8Array.from({ length: 16 }, (_, i) => i % 10) };
      expect(await replayed.evaluate(test)).toEqual(await eager.evaluate(test));
      expect(bits(await replayed.getState())).toEqual(bits(await eager.getState()));
    });
  }, 180_000);

  it('stays eager, with one line on stderr, where a step cannot be recorded, and its steps still equal eager ones', async () => {
    await withPair(3, async (replica, eager) => {
      const record = vi.spyOn(ReplayedStep, 'record').mockRejectedValue(new RecordingError('write 9 covers bytes 4–16 of a 16-byte buffer, not all of it'));
      const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
      try {
        const state = await eager.getState();
        const shard = { x: Float32Array.from({ length: 4 * 32 * 32 * 3 }, (_, i) => ((i % 17) - 8) / 8), labels: new Uint8Array([3, 1, 4, 1]) };
        replica.setState(state);
        eager.setState(state);
        for (let step = 0; step < 3; step++) {
          const got = await replica.computeGradients(shard, 40 + step);
          const want = await eager.computeGradients(shard, 40 + step);
          expect(bits(got.grads)).toEqual(bits(want.grads));
          expect(Object.is(got.loss, want.loss)).toBe(true);
        }
        expect(replica.replaying(4)).toBe(false);
        expect(record).toHaveBeenCalledTimes(1); // not tried again every step
        const lines = stderr.mock.calls.map((c) => String(c[0])).filter((l) => l.startsWith('trainpool:'));
        expect(lines).toEqual(['trainpool: webgpu steps of 4 images stay eager: recording them failed (write 9 covers bytes 4–16 of a 16-byte buffer, not all of it)\n']);
      } finally {
        record.mockRestore();
        stderr.mockRestore();
      }
    });
  }, 120_000);

  it('stays eager when turned off', async () => {
    const handle = await setupBackend('webgpu');
    const replica = new Replica({ name: 'tiny', width: 32, height: 32, depth: 3, classes: 10, seed: 2 }, { replay: false });
    try {
      replica.setState(await replica.getState());
      const shard = { x: new Float32Array(4 * 32 * 32 * 3).fill(0.25), labels: new Uint8Array([1, 2, 3, 4]) };
      for (let i = 0; i < 2; i++) await replica.computeGradients(shard, i);
      expect(replica.replaying(4)).toBe(false);
    } finally {
      replica.dispose();
      await handle.close();
    }
  }, 120_000);
});
