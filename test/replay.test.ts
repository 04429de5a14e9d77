/**
 * Replayed webgpu training steps (src/engine/replay/replay.ts, model/replica.ts) against eager ones:
 * bit-identical gradients, BN statistics, loss and accuracy over steps with changing weights, shards and
 * dropout seeds, no tfjs kernel and no tensor in a replayed step, and evaluation afterwards on the right
 * weights. Runs on the software adapter (tools/soft-gpu.sh).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend } from '../src/engine/backend.js';
import { RecordingError, ReplayedStep, WeightStage, webgpuDevice } from '../src/engine/replay/replay.js';
import type { ShardGradients } from '../src/model/gradients.js';
import { Replica, type ReplicaOptions } from '../src/model/replica.js';
import { Rng } from '../src/util/random.js';
import { webgpuAvailability } from './helpers/webgpu.js';

const webgpu = await webgpuAvailability('replay.test.ts');

describe.runIf(!webgpu.available && webgpu.required)('webgpu replay, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('finds an adapter', () => {
    expect.fail(`TRAINPOOL_REQUIRE_WEBGPU=1 but ${webgpu.skipReason.split(';')[0]}`);
  });
});

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** A replayed step's gradients, BN statistics and loss against the eager step's, bit for bit. */
function expectSameStep(got: ShardGradients, want: ShardGradients): void {
  expect(bits(got.grads)).toEqual(bits(want.grads));
  expect(bits(got.stats)).toEqual(bits(want.stats));
  expect(Object.is(got.loss, want.loss)).toBe(true);
}

/** Runs `body` with a replica that replays and one that stays eager (the tiny model, `seed`) on a webgpu backend; closes all three. */
async function withPair(seed: number, body: (replayed: Replica, eager: Replica) => Promise<void>, options: ReplicaOptions = {}): Promise<void> {
  const handle = await setupBackend('webgpu');
  const spec = { name: 'tiny' as const, width: 32, height: 32, depth: 3, classes: 10, seed };
  const replayed = new Replica(spec, { ...options, replay: true });
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
        // The next step's seed as the trainer sends it, whose masks are drawn during this step's GPU work;
        // step 3 guesses wrong (as after a stop), so step 4 draws its own.
        const next = step === 3 ? 7 : seed + 1;
        eager.setState(state);
        const want = await eager.computeGradients(shard, seed);
        replayed.setState(state);
        const tensors = tf.memory().numTensors;
        const check = async () => {
          const got = await replayed.computeGradients(shard, seed, next);
          expectSameStep(got, want);
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
          // Each step submits the commands encoded during the GPU work of the step before it (the first one:
          // the recording's check of its probe).
          expect(replayed.replayStats(batch)!.encodedAhead).toBe(true);
          // Masks drawn ahead where the replayed step before guessed this seed (step 2 follows the eager step).
          expect(replayed.replayStats(batch)!.masksAhead).toBe(step === 3 || step === 5);
          // From the second replayed step on (the first has no GPU time to go by), the thread sleeps through
          // most of the GPU's work before asking for the results, instead of polling the device for all of it.
          if (step >= 3) expect(replayed.replayStats(batch)!.quietMs).toBeGreaterThan(0);
        }
        expect(replayed.replaying(batch)).toBe(true);
      }
      // Evaluation runs eagerly on the weights last set, though the variables missed the replayed steps.
      const test = { x: Float32Array.from({ length: 16 * 32 * 32 * 3 }, () => rng.next() - 0.5), labels: Uint8Array.from({ length: 16 }, (_, i) => i % 10) };
      expect(await replayed.evaluate(test)).toEqual(await eager.evaluate(test));
      expect(bits(await replayed.getState())).toEqual(bits(await eager.getState()));
    });
  }, 180_000);

  it('record a second batch size on the weights of the first, and go back and forth bit for bit', async () => {
    // An epoch's last batch is smaller: its recording binds the same WeightStage, whose probe weights must
    // not be left behind in the replica's state.
    await withPair(2, async (replayed, eager) => {
      const rng = new Rng(5);
      const state = await eager.getState();
      const shardOf = (n: number) => ({ x: Float32Array.from({ length: n * 32 * 32 * 3 }, () => rng.next() - 0.5), labels: Uint8Array.from({ length: n }, () => Math.floor(rng.next() * 10)) });
      // 8 records, 8 replays, 3 records on the stage that holds the replica's weights, 3 and 8 replay. The
      // step after the second recording gets no new state: it runs on what the recording put back, with the
      // BN statistics its eager step moved.
      for (const [step, batch] of [8, 8, 3, 3, 8].entries()) {
        const shard = shardOf(batch);
        if (step !== 3) {
          for (let i = 0; i < state.length; i++) state[i] += 1e-2 * (rng.next() - 0.5);
          eager.setState(state);
          replayed.setState(state);
        }
        const want = await eager.computeGradients(shard, 70 + step);
        const got = await replayed.computeGradients(shard, 70 + step);
        expectSameStep(got, want);
      }
      expect(replayed.replaying(8) && replayed.replaying(3)).toBe(true);
      // Without setState the next steps start from the BN statistics the last step moved, as eager ones do.
      const shard = shardOf(3);
      const want = await eager.computeGradients(shard, 99);
      expect(bits((await replayed.computeGradients(shard, 99)).grads)).toEqual(bits(want.grads));
      expect(bits(await replayed.getState())).toEqual(bits(await eager.getState()));
    });
  }, 180_000);

  it('keep the weights where the device can bind each variable, and keep them through a step on the GPU', async () => {
    const handle = await setupBackend('webgpu');
    const device = webgpuDevice();
    const variables = [
      { offset: 0, size: 3 },
      { offset: 3, size: 100 },
      { offset: 103, size: 1 },
    ];
    const stage = new WeightStage(device, variables);
    const readBack = device.createBuffer({ size: stage.bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      expect(stage.length).toBe(104);
      expect(stage.slots).toEqual([0, 256, 768]);
      const flat = Float32Array.from({ length: 104 }, (_, i) => i + 0.5);
      stage.write(0, flat);
      // A range across variables' borders, as the BN statistics after the trainable part are written.
      stage.write(2, Float32Array.of(-1, -2));
      flat.set([-1, -2], 2);
      expect(bits(stage.read())).toEqual(bits(flat));
      stage.unmap();
      expect(() => stage.write(0, flat)).toThrow('a step is running');
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(stage.host, 0, stage.gpu, 0, stage.bytes);
      encoder.copyBufferToBuffer(stage.gpu, 0, readBack, 0, stage.bytes);
      device.queue.submit([encoder.finish()]);
      stage.remap();
      await readBack.mapAsync(GPUMapMode.READ);
      const onGpu = new Float32Array(readBack.getMappedRange().slice(0));
      readBack.unmap();
      variables.forEach((v, i) => expect(bits(onGpu.subarray(stage.slots[i] / 4, stage.slots[i] / 4 + v.size))).toEqual(bits(flat.subarray(v.offset, v.offset + v.size))));
      // Mapped again for writing, it shows what it held: the replica's state survives the step.
      await stage.ready();
      expect(bits(stage.read())).toEqual(bits(flat));
      expect(() => stage.write(100, new Float32Array(5))).toThrow('values 100–105 of a 104-value state');
    } finally {
      readBack.destroy();
      stage.destroy();
      await handle.close();
    }
  }, 60_000);

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

  it('read their gradients back straight into the view a worker gives them (its reply region), bit for bit', async () => {
    let view: Float32Array | undefined;
    const gradientsInto = (values: number) => (view = new Float32Array(values));
    await withPair(
      4,
      async (replayed, eager) => {
        const state = await eager.getState();
        for (let step = 0; step < 3; step++) {
          const shard = { x: Float32Array.from({ length: 4 * 32 * 32 * 3 }, (_, i) => (((i + step) % 13) - 6) / 6), labels: new Uint8Array([step, 1, 4, 9]) };
          for (let i = 0; i < state.length; i++) state[i] *= 0.999;
          replayed.setState(state);
          eager.setState(state);
          const got = await replayed.computeGradients(shard, 70 + step);
          const want = await eager.computeGradients(shard, 70 + step);
          expectSameStep(got, want);
          // The first step is eager (tfjs' own array); the replayed ones are read into the view itself.
          expect(got.grads === view).toBe(step > 0);
        }
        expect(replayed.replaying(4)).toBe(true);
      },
      { gradientsInto },
    );
  }, 120_000);

  it('train to the same weights, byte for byte, as eager steps through a worker process (read back into its reply region)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-replay-'));
    const bin = fileURLToPath(new URL('../bin/train', import.meta.url));
    try {
      const run = (replay: '0' | '1') => {
        const output = path.join(dir, replay, 'plot.png');
        const args = ['--seed', '1', '--dataset', 'synthetic', '--model', 'tiny', '--backend', 'webgpu', '--gpus', '1', '--epochs', '1', '--batch-size', '8', '--limit-train', '64', '--limit-test', '16', '--output', output];
        // The software adapter is this machine's one GPU (its adapter's name); replay on (the default) or off.
        const r = spawnSync(bin, args, { encoding: 'utf8', env: { ...process.env, TRAINPOOL_GPUS: 'llvmpipe', TRAINPOOL_REPLAY: replay }, timeout: 120_000 });
        expect(r.status, r.stderr).toBe(0);
        expect(r.stderr).not.toMatch(/stay eager/);
        return { weights: readFileSync(path.join(dir, replay, 'plot.model', 'weights.bin')), history: readFileSync(path.join(dir, replay, 'plot.history.json'), 'utf8') };
      };
      const [replayed, eager] = [run('1'), run('0')];
      expect(replayed.weights.equals(eager.weights)).toBe(true);
      const metrics = (h: string) => (JSON.parse(h) as { epochs: Record<string, unknown>[] }).epochs.map(({ seconds: _, ...m }) => m);
      expect(metrics(replayed.history)).toEqual(metrics(eager.history));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);

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
