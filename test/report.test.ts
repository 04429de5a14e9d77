import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatEpochLine, formatMetric } from '../src/coordinator/report/epoch-line.js';
import { exportModel, loadExportedModel } from '../src/model/export.js';
import { historyCsv, historyJson, writeHistory } from '../src/coordinator/report/history.js';
import { plotSpec, renderPlot } from '../src/coordinator/report/plot.js';
import type { EpochRecord } from '../src/coordinator/trainer.js';
import { Replica } from '../src/model/replica.js';
import { useCpu } from './helpers/cpu.js';

beforeAll(useCpu);
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const record = (epoch: number, o: Partial<EpochRecord> = {}): EpochRecord => ({
  epoch, loss: 2 / epoch, acc: 1 - 0.5 / epoch, val_loss: 2.2 / epoch, val_acc: 0.9 - 0.5 / epoch, lr: 0.005 * (1 - (epoch - 1) / 70), seconds: 63.4, ...o,
});

describe('epoch line', () => {
  it('reads like Keras verbose=2 on one line', () => {
    const line = formatEpochLine({ epoch: 3, loss: 0.85544, acc: 0.69971, val_loss: 1.54733, val_acc: 0.55921, lr: 0.0048571428, seconds: 63.4 }, 70);
    expect(line).toBe('Epoch 3/70 - 63s - loss: 0.8554 - acc: 0.6997 - val_loss: 1.5473 - val_acc: 0.5592 - lr: 0.004857');
  });

  it('switches to scientific notation below 1e-3, as Keras’ progress bar does', () => {
    expect(formatMetric(0.0004567)).toBe('4.5670e-4');
    expect(formatMetric(0.5)).toBe('0.5000');
  });

  it('omits validation when there is no test set', () => {
    expect(formatEpochLine(record(1, { val_loss: NaN, val_acc: NaN }), 2)).not.toContain('val_');
  });
});

describe('history files', () => {
  const epochs = [record(1), record(2)];

  it('writes {config, epochs} JSON with the shared metric names', () => {
    const parsed = JSON.parse(historyJson({ model: 'tiny' }, epochs));
    expect(parsed.config).toEqual({ model: 'tiny' });
    expect(Object.keys(parsed.epochs[0])).toEqual(['epoch', 'loss', 'acc', 'val_loss', 'val_acc', 'lr', 'seconds']);
    expect(parsed.epochs[1].loss).toBe(1);
  });

  it('writes CSV with the same columns', () => {
    const lines = historyCsv(epochs).trim().split('\n');
    expect(lines[0]).toBe('epoch,loss,acc,val_loss,val_acc,lr,seconds');
    expect(lines[2].split(',').map(Number)).toEqual([2, 1, 0.75, 1.1, 0.65, 0.005 * (1 - 1 / 70), 63.4]);
  });

  it('writes null for a missing validation in JSON and an empty cell in CSV', () => {
    const e = [record(1, { val_loss: NaN, val_acc: NaN })];
    expect(JSON.parse(historyJson({}, e)).epochs[0].val_loss).toBeNull();
    expect(historyCsv(e).split('\n')[1].split(',')[3]).toBe('');
  });

  it('lands both files beside each other, replacing older ones whole', () => {
    const paths = { historyJson: path.join(dir, 'h.history.json'), historyCsv: path.join(dir, 'h.history.csv') };
    writeHistory(paths, {}, epochs);
    writeHistory(paths, {}, epochs.slice(0, 1));
    expect(JSON.parse(readFileSync(paths.historyJson, 'utf8')).epochs).toHaveLength(1);
    expect(readFileSync(paths.historyCsv, 'utf8').trim().split('\n')).toHaveLength(2);
  });
});

describe('plot', () => {
  it('is a valid, non-blank PNG of the expected size', async () => {
    const png = await renderPlot(Array.from({ length: 10 }, (_, i) => record(i + 1)), { title: 'tiny on synthetic' });
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    // IHDR: width and height at bytes 16..24. The spec is 720×440 plus axes, title and padding, at 2×.
    const width = png.readUInt32BE(16);
    const height = png.readUInt32BE(20);
    expect(width).toBeGreaterThan(1400);
    expect(width).toBeLessThan(2000);
    expect(height).toBeGreaterThan(900);
    expect(height).toBeLessThan(1300);
    // Not blank: a flat image compresses to almost nothing; lines, grid and text do not.
    expect(png.length).toBeGreaterThan(30_000);
  });

  it('puts ticks on whole epochs only, about ten of them', () => {
    const ticks = (n: number) => (plotSpec(Array.from({ length: n }, (_, i) => record(i + 1)), { title: 't' }) as { encoding: { x: { axis: { values: number[] } } } }).encoding.x.axis.values;
    expect(ticks(3)).toEqual([1, 2, 3]);
    expect(ticks(70)).toEqual([1, 10, 20, 30, 40, 50, 60, 70]);
    expect(ticks(12)).toEqual([1, 2, 4, 6, 8, 10, 12]);
  });

  it('draws a single epoch as a PNG of the same size as a longer run’s, with its points on it', async () => {
    const one = await renderPlot([record(1)], { title: 'one epoch' });
    const ten = await renderPlot(Array.from({ length: 10 }, (_, i) => record(i + 1)), { title: 'one epoch' });
    expect(one.subarray(0, 8)).toEqual(ten.subarray(0, 8)); // the PNG signature
    // The same frame (only the axis labels' widths differ by a few pixels).
    expect(Math.abs(one.readUInt32BE(16) - ten.readUInt32BE(16))).toBeLessThan(20);
    expect(one.readUInt32BE(20)).toBe(ten.readUInt32BE(20));
    // Not the ten-epoch picture, and not blank: axes, legend and the one epoch's points.
    expect(one.equals(ten)).toBe(false);
    expect(one.length).toBeGreaterThan(20_000);
  });
});

describe('model export', () => {
  it('reloads with tf.loadLayersModel and predicts what the trained replica predicts', async () => {
    const replica = new Replica({ name: 'tiny', width: 16, height: 16, depth: 3, classes: 4, seed: 5 });
    const state = await replica.getState();
    for (let i = 0; i < state.length; i++) state[i] += 0.01 * Math.sin(i); // not the initial weights
    replica.setState(state);
    const mean = Float32Array.from({ length: 16 * 16 * 3 }, (_, i) => i % 255);
    const out = path.join(dir, 'run.model');
    await exportModel(out, replica.model, { dataset: 'synthetic', classNames: ['a', 'b', 'c', 'd'], inputShape: [16, 16, 3], mean });
    const loaded = await loadExportedModel(out);
    expect(loaded.classNames).toEqual(['a', 'b', 'c', 'd']);
    expect(loaded.mean).toEqual(mean);
    expect(loaded.model.layers.map((l) => l.getClassName())).toEqual(replica.model.layers.map((l) => l.getClassName()));
    const x = tf.randomNormal([2, 16, 16, 3], 0, 1, 'float32', 1);
    const a = (replica.model.predict(x) as tf.Tensor).dataSync();
    const b = (loaded.model.predict(x) as tf.Tensor).dataSync();
    expect(Array.from(b)).toEqual(Array.from(a));
    const json = JSON.parse(readFileSync(path.join(out, 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest[0].paths).toEqual(['weights.bin']);
    replica.dispose();
    loaded.model.dispose();
    x.dispose();
  });
});
