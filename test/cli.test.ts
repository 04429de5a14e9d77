/** bin/train as a user runs it: the end-to-end run, the outputs, and bad input. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadExportedModel } from '../src/model/export.js';
import { useCpu } from './helpers/cpu.js';

const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(useCpu);

/** Runs bin/train with no GPUs visible, whatever machine the tests run on. */
function train(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(BIN, args, { encoding: 'utf8', env: { ...process.env, TRAINPOOL_GPUS: '', ...env }, timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('bin/train end to end (synthetic data, tiny model, 2 CPU workers)', () => {
  const out = path.join(dir, 'run', 'plot.png');
  let result: ReturnType<typeof train>;
  beforeAll(() => {
    result = train([
      '--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '2', '--epochs', '2',
      '--limit-train', '512', '--limit-test', '256', '--seed', '7', '--output', out,
    ]);
  }, 300_000);

  it('exits 0 and prints the configuration, one Keras line per epoch and where the outputs went', () => {
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toBe('trainpool: tiny on synthetic (512 train / 256 test, 32×32×3), seed 7');
    expect(lines[1]).toMatch(/^workers: 2 \(\[0\] wasm: CPU .*; \[1\] wasm: CPU .*\)$/);
    expect(lines[2]).toBe('global batch 128 (64 × 2), 4 steps/epoch, 2 epochs, lr 0.005, momentum 0.9');
    const epochLine = /^Epoch (\d)\/2 - \d+s - loss: \d+\.\d{4} - acc: \d\.\d{4} - val_loss: \d+\.\d{4} - val_acc: \d\.\d{4} - lr: [\d.e-]+$/;
    expect(lines.filter((l) => epochLine.test(l)).map((l) => epochLine.exec(l)![1])).toEqual(['1', '2']);
    expect(lines.find((l) => l.startsWith('Epoch 2/2'))).toContain('lr: 0.0025');
    expect(lines).toContain(`plot: ${out}`);
    expect(lines.some((l) => /^done in \d+\.\ds, \d+ img\/s over 2 epochs$/.test(l))).toBe(true);
  });

  it('writes the history as JSON and CSV with the same columns', () => {
    const json = JSON.parse(readFileSync(path.join(dir, 'run', 'plot.history.json'), 'utf8'));
    expect(json.config).toMatchObject({ model: 'tiny', dataset: 'synthetic', workers: 2, epochs: 2, seed: 7, global_batch_size: 128 });
    expect(json.epochs.map((e: { epoch: number }) => e.epoch)).toEqual([1, 2]);
    const csv = readFileSync(path.join(dir, 'run', 'plot.history.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('epoch,loss,acc,val_loss,val_acc,lr,seconds');
    expect(csv.slice(1).map((l) => Number(l.split(',')[1]))).toEqual(json.epochs.map((e: { loss: number }) => e.loss));
  });

  it('writes a PNG plot', () => {
    const png = readFileSync(out);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(png.readUInt32BE(16)).toBeGreaterThan(1000);
  });

  it('exports a model that tf.loadLayersModel loads and that predicts probabilities', async () => {
    const { model, mean, inputShape } = await loadExportedModel(path.join(dir, 'run', 'plot.model'));
    expect(inputShape).toEqual([32, 32, 3]);
    expect(mean.length).toBe(32 * 32 * 3);
    const p = model.predict(tf.zeros([2, 32, 32, 3])) as tf.Tensor;
    const rows = (await p.array()) as number[][];
    for (const row of rows) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    model.dispose();
  });
});

describe('bin/train --scale-lr (linear scaling with warmup, Goyal et al.)', () => {
  it('trains epoch e at the poly-decayed lr × (1 + (G − 1)·e/warmup), and says so at the start', () => {
    const out = path.join(dir, 'scaled', 'plot.png');
    const r = train([
      '--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '2', '--epochs', '3',
      '--limit-train', '256', '--limit-test', '64', '--seed', '7', '--scale-lr', '--output', out,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('global batch 128 (64 × 2), 2 steps/epoch, 3 epochs, lr 0.005 × 2 (warmup 5 epochs), momentum 0.9\n');
    // Worked by hand, G = 2, warmup 5, E = 3: 0.005·(1 − e/3)·(1 + e/5) = 0.005, 0.004, 0.002333;
    // without --scale-lr they would be 0.005, 0.003333, 0.001667.
    const lrs = r.stdout.split('\n').filter((l) => l.startsWith('Epoch ')).map((l) => / - lr: ([\d.e-]+)$/.exec(l)![1]);
    expect(lrs).toEqual(['0.005', '0.004', '0.002333']);
    const history = JSON.parse(readFileSync(path.join(dir, 'scaled', 'plot.history.json'), 'utf8'));
    expect(history.config).toMatchObject({ scale_lr: true });
    const want = [0.005, 0.005 * (2 / 3) * 1.2, 0.005 * (1 / 3) * 1.4];
    history.epochs.forEach((e: { lr: number }, i: number) => expect(e.lr, `epoch ${i + 1}`).toBeCloseTo(want[i], 12));
  }, 300_000);
});

describe('bin/train refuses bad input at once, with one line and status 2', () => {
  let refusals = 0;
  it.each([
    [['--epochs', '-1', '--output', 'x.png'], '--epochs must be an integer from 1 to 100000. Received: --epochs=-1'],
    [['--gpus', '4', '--output', 'x.png'], '--gpus 4 asks for more GPUs than this machine has. Found 0: none'],
    [['--backend', 'cuda', '--output', 'x.png'], '--backend must be one of auto, webgpu, tensorflow, wasm, cpu. Received: --backend=cuda'],
    [['--dataset', 'synthetic', '--gpus', '0', '--workers', '2', '--limit-train', '100', '--output', 'x.png'],
      '--batch-size 64 × 2 workers = 128 images per step is more than the 100 training images'],
  ])('%j', (args, message) => {
    // Into a folder of its own that does not exist yet: a refused run must not leave it (or x.checkpoints/) behind.
    const out = path.join(dir, `refused-${refusals++}`);
    const r = train(args.map((a) => (a === 'x.png' ? path.join(out, 'x.png') : a)));
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`train: error: ${message}\n`);
    expect(r.stdout).toBe('');
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an output path under a file', () => {
    const r = train(['--dataset', 'synthetic', '--output', '/dev/null/sub/p.png']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('train: error: --output must name a writable folder. Received: /dev/null/sub: a part of the path is not a folder (ENOTDIR)\n');
  });

  it('says how to fetch CIFAR-10 when it is missing', () => {
    const r = train(['--data-dir', path.join(dir, 'nothing-here'), '--output', path.join(dir, 'p.png')]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('bin/train --dataset cifar10 --download --data-dir');
  });
});

describe('bin/train --summary', () => {
  it('prints the Keras table ending in the tutorial counts', () => {
    const r = train(['--summary']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n').slice(-4, -1)).toEqual([
      'Total params: 1,656,250',
      'Trainable params: 1,652,826',
      'Non-trainable params: 3,424',
    ]);
  });
});
