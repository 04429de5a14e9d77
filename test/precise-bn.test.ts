/**
 * --precise-bn: the batch statistics a replica reports are those of a direct computation, the trainer
 * averages the same batches whatever worker computes them, and through bin/train the recomputed statistics
 * reach the checkpoint, a resumed run and the exported model while the trained weights stay untouched.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkStatisticsBatches, statisticsBatches } from '../src/coordinator/plan.js';
import { freshState, train, type TrainerOptions } from '../src/coordinator/trainer.js';
import { makeShard, type ShardSource } from '../src/data/shard.js';
import { makeSynthetic } from '../src/data/synthetic.js';
import { meanImage } from '../src/data/mean.js';
import { setupBackend, type BackendHandle } from '../src/engine/backend.js';
import { statsPart } from '../src/model/flat.js';
import { batchStatistics } from '../src/model/gradients.js';
import { Replica } from '../src/model/replica.js';
import { DirectShardMaker, InProcessClient } from './helpers/in-process.js';

const SPEC = { name: 'tiny' as const, width: 16, height: 16, depth: 3, classes: 10, seed: 5 };

let handle: BackendHandle;
let source: ShardSource;
beforeAll(async () => {
  handle = await setupBackend('wasm');
  const data = makeSynthetic({ trainCount: 96, testCount: 16, height: 16, width: 16, seed: 3 });
  const images = new Uint8Array([...data.train.images, ...data.test.images]);
  const labels = new Uint8Array([...data.train.labels, ...data.test.labels]);
  source = { images, labels, mean: meanImage(data.train, 16, 16, 3), height: 16, width: 16, depth: 3 };
});
afterAll(async () => {
  await handle?.close();
});

const shardOf = (indices: number[], seed = 1) => makeShard({ ...source, indices: Uint32Array.from(indices), seed, augment: true });

/** Each BN layer's input in training mode (the BN layers before it normalizing with batch statistics), then its mean and biased variance in float64. */
function directStatistics(replica: Replica, x: Float32Array, count: number): number[] {
  const bns = replica.model.layers.filter((l) => l.getClassName() === 'BatchNormalization');
  const probe = tfl.model({ inputs: replica.model.inputs, outputs: bns.map((l) => l.input as tfl.SymbolicTensor) });
  const inputs = tf.tidy(() => probe.apply(tf.tensor4d(x, [count, SPEC.height, SPEC.width, SPEC.depth]), { training: true }) as tf.Tensor[]);
  const out: number[] = [];
  for (const t of inputs) {
    const values = t.dataSync();
    const c = t.shape.at(-1)!;
    const rows = values.length / c;
    const mean = new Float64Array(c);
    const variance = new Float64Array(c);
    for (let i = 0; i < values.length; i++) mean[i % c] += values[i] / rows;
    for (let i = 0; i < values.length; i++) variance[i % c] += (values[i] - mean[i % c]) ** 2 / rows;
    out.push(...mean, ...variance);
  }
  tf.dispose(inputs);
  return out;
}

describe('batch statistics of a replica', () => {
  it('are each BN input’s batch mean and biased variance, in layout order, and leave the model as it was', async () => {
    const replica = new Replica(SPEC, { replay: false });
    try {
      // Moving statistics far from the batch's, so that a value read back from them would show.
      const state = await replica.getState();
      statsPart(replica.layout, state).fill(7);
      replica.setState(state);
      const shard = shardOf([0, 5, 9, 17, 33, 40, 41, 60]);
      const before = tf.memory().numTensors;
      const stats = await replica.batchStatistics(shard);
      expect(tf.memory().numTensors).toBe(before);
      // The model's moving statistics and momenta are restored (read before the probe below, whose
      // training-mode forward moves them as any would).
      expect(Array.from(statsPart(replica.layout, await replica.getState()))).toEqual(Array.from(statsPart(replica.layout, state)));
      expect(Array.from(await replica.batchStatistics(shard))).toEqual(Array.from(stats));

      const direct = directStatistics(replica, shard.x, 8);
      expect(stats.length).toBe(direct.length);
      expect(stats.length).toBe(replica.layout.totalSize - replica.layout.trainableSize);
      for (let i = 0; i < direct.length; i++) expect(Math.abs(stats[i] - direct[i])).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(direct[i])));
      // Real statistics, not the 7s: variances of ReLU-fed activations are positive and differ by channel.
      expect(new Set(stats).size).toBeGreaterThan(stats.length / 2);

      const momenta = replica.model.layers.filter((l) => l.getClassName() === 'BatchNormalization').map((l) => (l.getConfig() as { momentum: number }).momentum);
      expect(new Set(momenta)).toEqual(new Set([0.99]));
    } finally {
      replica.dispose();
    }
  });

  it('are empty for a model without BatchNormalization', async () => {
    const replica = new Replica({ ...SPEC, batchNorm: false }, { replay: false });
    try {
      expect(await batchStatistics(replica.model, replica.layout, shardOf([1, 2, 3]))).toEqual(new Float32Array(0));
    } finally {
      replica.dispose();
    }
  });
});

describe('the batches', () => {
  it('are distinct training images of one worker batch each, fixed by seed and epoch, other each epoch', () => {
    const o = { seed: 4, trainCount: 96, batchSize: 8 };
    const batches = statisticsBatches(o, 0, 12);
    expect(new Set(batches.flatMap((b) => Array.from(b.indices))).size).toBe(96);
    expect(batches.every((b) => b.indices.length === 8)).toBe(true);
    expect(statisticsBatches(o, 0, 12)).toEqual(batches);
    expect(Array.from(statisticsBatches(o, 1, 1)[0].indices)).not.toEqual(Array.from(batches[0].indices));
  });

  it('must fit in the training set', () => {
    expect(() => checkStatisticsBatches({ trainCount: 96, batchSize: 8 }, 13)).toThrow(
      '--precise-bn 13 needs 13 batches × 8 images = 104 training images; the training set has 96: pass at most 12',
    );
  });
});

describe('the trainer with --precise-bn', () => {
  const options = (o: Partial<TrainerOptions>): TrainerOptions => ({
    epochs: 1, batchSize: 8, lr: 0.05, momentum: 0.9, scaleLr: false, warmupEpochs: 5, seed: 2,
    trainCount: 96, testCount: 16, testOffset: 96, evalChunk: 16, prefetch: 1, ...o,
  });

  it('replaces the statistics with the mean over its batches, averaged across two workers as one replica computes them', async () => {
    const clients = [0, 1].map((r) => new InProcessClient(r, new Replica(SPEC, { replay: false })));
    const master = new Replica(SPEC, { replay: false });
    try {
      const start = freshState(await master.getState(), master.layout.trainableSize);
      const o = options({ preciseBn: 5 });
      const asked = [0, 0];
      for (const c of clients) {
        const inner = c.batchStatistics.bind(c);
        c.batchStatistics = (shard, version) => (asked[c.rank]++, inner(shard, version));
      }
      const { state } = await train({ clients, shards: new DirectShardMaker(source), trainableSize: master.layout.trainableSize }, o, start);

      // The same five batches, one replica, the final weights: the mean of its statistics.
      master.setState(state.weights.slice());
      const expected = new Float64Array(state.weights.length - master.layout.trainableSize);
      for (const b of statisticsBatches(o, 0, 5)) {
        const stats = await master.batchStatistics(makeShard({ ...source, indices: b.indices, seed: b.augmentSeed, augment: true }));
        for (let j = 0; j < expected.length; j++) expected[j] += stats[j];
      }
      expect(Array.from(statsPart(master.layout, state.weights))).toEqual(Array.from(Float32Array.from(expected, (v) => v / 5)));
      // Batch b went to worker b mod 2.
      expect(asked).toEqual([3, 2]);
    } finally {
      master.dispose();
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

describe('bin/train --precise-bn', () => {
  const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-precise-bn-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const RUN = ['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '2', '--epochs', '3', '--limit-train', '256', '--limit-test', '64', '--seed', '8'];
  const env = { ...process.env, TRAINPOOL_GPUS: '' };
  const run = (args: string[]) => spawnSync(BIN, args, { encoding: 'utf8', env, timeout: 240_000 });
  const out = (name: string) => path.join(dir, name, 'plot.png');
  const weightsBin = (name: string) => readFileSync(path.join(dir, name, 'plot.model', 'weights.bin'));
  /** The exported weights by name, from the model's manifest (tfjs' order: per layer, not the layout's). */
  const weights = (name: string): Map<string, Float32Array> => {
    const manifest = JSON.parse(readFileSync(path.join(dir, name, 'plot.model', 'model.json'), 'utf8')).weightsManifest[0].weights as { name: string; shape: number[] }[];
    const bin = weightsBin(name);
    const all = new Float32Array(bin.buffer, bin.byteOffset, bin.length / 4);
    let offset = 0;
    return new Map(manifest.map((w) => {
      const size = w.shape.reduce((a, b) => a * b, 1);
      offset += size;
      return [w.name, all.slice(offset - size, offset)];
    }));
  };
  const history = (name: string) => JSON.parse(readFileSync(path.join(dir, name, 'plot.history.json'), 'utf8'));

  beforeAll(() => {
    for (const [name, extra] of [['plain', []], ['precise', ['--precise-bn', '4']]] as const) {
      const r = run([...RUN, ...extra, '--output', out(name)]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  }, 480_000);

  it('changes the exported BN statistics and nothing that was trained, and says so in the start lines and the history', () => {
    const [plain, precise] = [weights('plain'), weights('precise')];
    expect([...precise.keys()]).toEqual([...plain.keys()]);
    const moving = [...plain.keys()].filter((n) => /moving_(mean|variance)$/.test(n));
    expect(moving.length).toBeGreaterThan(0);
    for (const [name, values] of plain) {
      // Training normalizes with batch statistics, so the recomputed ones change no trained weight.
      if (moving.includes(name)) expect(Array.from(precise.get(name)!)).not.toEqual(Array.from(values));
      else expect(Array.from(precise.get(name)!)).toEqual(Array.from(values));
    }
    expect(history('precise').config.precise_bn).toBe(4);
    expect(history('plain').config.precise_bn).toBe(0);
  });

  it('is kept by a checkpoint: a run killed after its first checkpoint and resumed exports the same bytes', async () => {
    const child = spawn(BIN, [...RUN, '--precise-bn', '4', '--output', out('killed')], { env, stdio: 'ignore' });
    const checkpoints = path.join(dir, 'killed', 'plot.checkpoints');
    const deadline = Date.now() + 120_000;
    while (!(existsSync(checkpoints) && readdirSync(checkpoints).some((f) => f.endsWith('.ckpt')))) {
      if (Date.now() > deadline) throw new Error('no checkpoint within 120 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const r = run(['--resume', '--output', out('killed')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/resuming after epoch [12] of 3/);
    expect(r.stdout).toContain('precise BN from 4 batches before each validation');
    expect(weightsBin('killed').equals(weightsBin('precise'))).toBe(true);
    expect(history('killed').epochs.map((e: { val_acc: number }) => e.val_acc)).toEqual(history('precise').epochs.map((e: { val_acc: number }) => e.val_acc));
  });

  it('refuses more batches than the training set holds, before any worker starts', () => {
    const r = run([...RUN, '--precise-bn', '33', '--output', out('too-many')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('train: error: --precise-bn 33 needs 33 batches × 64 images = 2112 training images; the training set has 256: pass at most 4\n');
    expect(existsSync(path.join(dir, 'too-many', 'plot.checkpoints'))).toBe(false);
  });
});
