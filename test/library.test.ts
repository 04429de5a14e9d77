/**
 * trainpool as a library (package.json `exports` → src/index.ts): train() is bin/train's run as a function,
 * returning the history; its options obey bin/train's rules; loadExportedModel reads what it exported.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu'; // for tf.memory() before train() sets a backend of its own
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTrainpoolError, loadExportedModel, train, type EpochRecord, type TrainOptions } from 'trainpool';

const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-library-'));
const gpusBefore = process.env.TRAINPOOL_GPUS;
// No GPUs visible, whatever machine the tests run on: CPU workers, as in the other end-to-end tests.
beforeAll(() => void (process.env.TRAINPOOL_GPUS = ''));
afterAll(() => {
  if (gpusBefore === undefined) delete process.env.TRAINPOOL_GPUS;
  else process.env.TRAINPOOL_GPUS = gpusBefore;
  rmSync(dir, { recursive: true, force: true });
});

const small = { dataset: 'synthetic', model: 'tiny', gpus: 0, workers: 1, epochs: 2, limitTrain: 256, limitTest: 128, seed: 11 } as const;
const metrics = (h: EpochRecord[]) => h.map(({ seconds: _, ...rest }) => rest);

describe('train(options)', () => {
  let history: EpochRecord[];
  let lines: string[];
  let tensorsBefore: number;
  beforeAll(async () => {
    tensorsBefore = tf.memory().numTensors;
    lines = [];
    history = await train({ ...small, output: path.join(dir, 'api', 'plot.png'), log: (line) => lines.push(line) });
  }, 300_000);

  it('resolves with one record per epoch, the numbers bin/train prints for the same options', () => {
    expect(history.map((r) => r.epoch)).toEqual([1, 2]);
    const cli = spawnSync(
      BIN,
      ['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '1', '--epochs', '2', '--limit-train', '256', '--limit-test', '128', '--seed', '11',
        '--output', path.join(dir, 'cli', 'plot.png')],
      { encoding: 'utf8', env: { ...process.env, TRAINPOOL_GPUS: '' }, timeout: 300_000 },
    );
    expect(cli.stderr).toBe('');
    expect(cli.status).toBe(0);
    const fromCli = JSON.parse(readFileSync(path.join(dir, 'cli', 'plot.history.json'), 'utf8')).epochs as EpochRecord[];
    expect(metrics(history)).toEqual(metrics(fromCli));
    // The same lines too, but for the seconds they took.
    const timeless = (text: string) => text.replace(/ - \d+s - /g, ' - ').replace(/done in .*/, '').replace(/\/(api|cli)\//g, '/');
    expect(timeless(lines.join('\n'))).toBe(timeless(cli.stdout.trim()));
  }, 300_000);

  it('writes bin/train’s outputs, which loadExportedModel reads back, and leaves no tensor behind', async () => {
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    for (const f of ['plot.png', 'plot.history.json', 'plot.history.csv']) expect(existsSync(path.join(dir, 'api', f))).toBe(true);
    expect(readdirSync(path.join(dir, 'api', 'plot.checkpoints')).filter((n) => n.endsWith('.ckpt'))).toHaveLength(2);
    const { model, mean, inputShape } = await loadExportedModel(path.join(dir, 'api', 'plot.model'));
    expect(inputShape).toEqual([32, 32, 3]);
    expect(mean).toHaveLength(32 * 32 * 3);
    const probs = tf.tidy(() => (model.predict(tf.zeros([2, 32, 32, 3])) as tf.Tensor).arraySync() as number[][]);
    expect(probs.map((p) => p.reduce((a, b) => a + b, 0))).toEqual([expect.closeTo(1, 5), expect.closeTo(1, 5)]);
    model.dispose();
  });
});

describe('train(options) stopped by an AbortSignal', () => {
  it('returns the epochs done, and resume: true finishes the run with the same history', async () => {
    const output = path.join(dir, 'abort', 'plot.png');
    const stop = new AbortController();
    const first = await train({ ...small, epochs: 3, output, log: (line) => line.startsWith('Epoch 1/') && stop.abort(), signal: stop.signal });
    expect(first.map((r) => r.epoch)).toEqual([1]);
    const rest = await train({ output, resume: true, log: () => {} });
    expect(rest.map((r) => r.epoch)).toEqual([1, 2, 3]);
    expect(metrics(rest.slice(0, 1))).toEqual(metrics(first));
  }, 300_000);
});

describe('train(options) with bad options', () => {
  const rejection = async (options: TrainOptions) => {
    const e = await train({ ...options, log: () => {} }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(isTrainpoolError(e, 'USAGE')).toBe(true);
    return (e as Error).message;
  };

  it.each([
    [{ output: 'p.jpg' }, 'output must be a .png path. Received: output=p.jpg'],
    [{ output: 'p.png', epochs: 0 }, 'epochs must be an integer from 1 to 100000. Received: epochs=0'],
    [{ output: 'p.png', epochs: 2.5 }, 'epochs must be an integer from 1 to 100000. Received: epochs=2.5'],
    [{ output: 'p.png', lr: -1 }, 'lr must be a number in (0, 10]. Received: lr=-1'],
    [{ output: 'p.png', momentum: 1 }, 'momentum must be a number in [0, 1). Received: momentum=1'],
    [{ output: 'p.png', momentum: -0.1 }, 'momentum must be a number in [0, 1). Received: momentum=-0.1'],
    [{ output: 'p.png', seed: 2 ** 32 }, 'seed must be an integer from 0 to 4294967295. Received: seed=4294967296'],
    [{ output: 'p.png', model: 'resnet' as 'tiny' }, 'model must be one of minigooglenet, small, tiny. Received: model=resnet'],
    [{ output: 'p.png', gpus: 2 }, 'gpus 2 asks for more GPUs than this machine has. Found 0: none'],
    [{ output: 'p.png', download: 'yes' as unknown as boolean }, 'download must be true or false. Received: download=yes'],
    [{ output: 'p.png', preset: 'fast' as 'quick' }, 'preset must be one of quick. Received: preset=fast'],
  ])('%j → %s', async (options, message) => {
    expect(await rejection(options)).toBe(message);
  });

  it('refuses a launcher’s several hosts (bin/train serves those), naming this host', async () => {
    const set = { GROUP_RANK: '0', GROUP_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1' };
    Object.assign(process.env, set);
    try {
      const e = await train({ output: path.join(os.tmpdir(), 'never', 'p.png'), dataset: 'synthetic', gpus: 0, log: () => {} }).then(() => null, (err: unknown) => err);
      expect(isTrainpoolError(e, 'LAUNCH')).toBe(true);
      expect((e as Error).message).toBe('train() runs on one host; this is host 0 of 2 (torchrun: GROUP_RANK=0, GROUP_WORLD_SIZE=2, MASTER_ADDR=127.0.0.1); global rank 0; the coordinator, listening on port 29600: run bin/train on every host instead');
    } finally {
      for (const k of Object.keys(set)) delete process.env[k];
    }
  });

  it('names an option it does not know, and lists the ones it does', async () => {
    expect(await rejection({ output: 'p.png', epoch: 3 } as TrainOptions)).toMatch(/^unknown option "epoch"; the options are output, gpus, workers, dataset, .*, logFile$/);
    expect(await rejection({ output: 'p.png', summary: true } as TrainOptions)).toMatch(/^unknown option "summary"/);
  });
});
