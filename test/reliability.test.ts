/**
 * A worker crash changes nothing; a coordinator crash loses at most an epoch; Ctrl-C stops cleanly.
 * Every case runs bin/train for real (cpu-class wasm workers, tiny model, synthetic data) and compares
 * the exported model byte for byte with an uninterrupted run of the same seed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, children, until } from './helpers/process.js';

const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-reliability-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RUN = ['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '2', '--epochs', '3', '--limit-train', '512', '--limit-test', '128', '--seed', '11'];
const env = (extra: NodeJS.ProcessEnv = {}) => ({ ...process.env, TRAINPOOL_GPUS: '', ...extra });

function train(args: string[], extra: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(BIN, args, { encoding: 'utf8', env: env(extra), timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const out = (name: string) => path.join(dir, name, 'plot.png');
const weights = (name: string) => readFileSync(path.join(dir, name, 'plot.model', 'weights.bin'));
const epochs = (name: string) =>
  (JSON.parse(readFileSync(path.join(dir, name, 'plot.history.json'), 'utf8')).epochs as { epoch: number; loss: number; val_loss: number; val_acc: number }[]);

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : null))));
}

/** bin/train started on RUN into `name`, once its first epoch line is out; its output so far, read on call. */
async function runPastEpoch1(name: string) {
  const child = spawn(BIN, [...RUN, '--output', out(name)], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += c));
  child.stderr!.on('data', (c) => (stderr += c));
  await until(() => stdout.includes('Epoch 1/3'));
  return { child, stdout: () => stdout, stderr: () => stderr };
}

beforeAll(() => {
  const r = train([...RUN, '--output', out('baseline')]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
}, 240_000);

describe('worker failure', () => {
  it('a run whose workers are killed at three different steps ends with byte-identical weights', () => {
    const r = train([...RUN, '--output', out('killed'), '--log-file', path.join(dir, 'killed.log')], {
      TRAINPOOL_CHAOS: 'kill-worker=0:2,1:5,0:9',
    });
    expect(r.code).toBe(0);
    const log = readFileSync(path.join(dir, 'killed.log'), 'utf8');
    expect(log.match(/chaos: killing the worker mid-step/g)).toHaveLength(3);
    expect(log.match(/"msg":"worker failed"/g)).toHaveLength(3);
    expect(weights('killed').equals(weights('baseline'))).toBe(true);
    expect(epochs('killed').map((e) => e.loss)).toEqual(epochs('baseline').map((e) => e.loss));
  });

  it('a worker killed during validation is replaced and the chunk re-run: the same val_loss, val_acc and weights', () => {
    const r = train([...RUN, '--output', out('killed-eval'), '--log-file', path.join(dir, 'killed-eval.log')], { TRAINPOOL_CHAOS: 'kill-eval=1:2' });
    expect(r.code).toBe(0);
    const log = readFileSync(path.join(dir, 'killed-eval.log'), 'utf8');
    expect(log.match(/chaos: killing the worker mid-validation/g)).toHaveLength(1);
    expect(log).toMatch(/"during":"evaluate"/);
    const validation = (name: string) => epochs(name).map((e) => [e.val_loss, e.val_acc]);
    expect(validation('killed-eval')).toEqual(validation('baseline'));
    expect(weights('killed-eval').equals(weights('baseline'))).toBe(true);
  });

  it('stops, naming the worker, its GPU and the last error, when a worker keeps dying', () => {
    // No WebGPU adapter exists for "GPU 0" here: every start fails, three times, then the run stops.
    const r = train(['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '1', '--backend', 'webgpu', '--output', out('dying')], {
      TRAINPOOL_GPUS: 'Imaginary GPU',
      VK_DRIVER_FILES: '/nonexistent.json',
    });
    expect(r.code).toBe(1);
    // stderr also carries the JSON log (warn level): the attempts and the worker's own stderr, by rank.
    const lines = r.stderr.trim().split('\n');
    const errors = lines.filter((l) => l.startsWith('train: error:'));
    expect(errors).toHaveLength(1);
    expect(lines.at(-1)).toBe(errors[0]);
    expect(errors[0]).toMatch(/^train: error: worker 0 \(GPU 0\) failed 3 times in a row, giving up; last error: worker 0 \(GPU 0, pid \d+\) failed: .*\[BACKEND_UNAVAILABLE\]$/);
    const log = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    expect(log.filter((l) => l.msg === 'worker failed').map((l) => l.attempt)).toEqual([1, 2, 3]);
    expect(log.some((l) => l.msg === 'worker stderr' && l.worker === 0 && /vkCreateInstance|Vulkan|driver/i.test(l.stderr))).toBe(true);
  });
});

describe('coordinator failure and resume', () => {
  it('after a SIGKILL of the coordinator, --resume finishes the run: every epoch once, the same weights, no process left', async () => {
    const child = spawn(BIN, [...RUN, '--output', out('sigkill')], { env: env(), stdio: 'ignore' });
    const checkpoints = path.join(dir, 'sigkill', 'plot.checkpoints');
    await until(() => existsSync(checkpoints) && readdirSync(checkpoints).some((f) => f.endsWith('.ckpt')));
    const workers = children(child.pid!);
    expect(workers.length).toBeGreaterThanOrEqual(2);
    child.kill('SIGKILL');
    await exited(child);
    // Workers notice their pipe close and exit by themselves.
    await until(() => workers.every((p) => !alive(p)), 10_000);

    const r = train(['--resume', '--output', out('sigkill')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/resuming after epoch [12] of 3/);
    expect(epochs('sigkill').map((e) => e.epoch)).toEqual([1, 2, 3]);
    expect(weights('sigkill').equals(weights('baseline'))).toBe(true);
  });

  it('Ctrl-C checkpoints mid-epoch, stops every worker and exits 130; --resume continues to the same weights', async () => {
    const { child, stdout } = await runPastEpoch1('sigint');
    const workers = children(child.pid!);
    child.kill('SIGINT');
    expect(await exited(child)).toBe(130);
    expect(stdout()).toMatch(/stopped after epoch \d, step \d: checkpoint .*\.ckpt; continue with the same command and --resume/);
    expect(workers.filter(alive)).toEqual([]);

    const r = train([...RUN, '--resume', '--output', out('sigint')]);
    expect(r.code).toBe(0);
    expect(epochs('sigint').map((e) => e.epoch)).toEqual([1, 2, 3]);
    expect(weights('sigint').equals(weights('baseline'))).toBe(true);
  });

  it('SIGTERM (docker stop, a Kubernetes eviction) stops the same way: a checkpoint, every worker stopped, exit 130', async () => {
    const { child, stdout, stderr } = await runPastEpoch1('sigterm');
    const workers = children(child.pid!);
    expect(workers).toHaveLength(2);
    child.kill('SIGTERM');
    expect(await exited(child)).toBe(130);
    expect(stderr()).toContain('SIGTERM: stopping after the current step');
    const saved = /stopped after epoch (\d), step (\d): checkpoint (.*\.ckpt); continue with the same command and --resume/.exec(stdout());
    expect(saved).not.toBeNull();
    expect(existsSync(saved![3])).toBe(true);
    expect(workers.filter(alive)).toEqual([]);
  });

  it('keeps the last two checkpoints', () => {
    const names = readdirSync(path.join(dir, 'baseline', 'plot.checkpoints'));
    expect(names.sort()).toEqual(['epoch-0002-step-000000.ckpt', 'epoch-0003-step-000000.ckpt']);
  });
});

describe('bad resumes and diverging runs fail with one line', () => {
  it('--resume with no checkpoint', () => {
    const r = train(['--dataset', 'synthetic', '--resume', '--output', out('nothing')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`train: error: --resume found no checkpoint in ${path.join(dir, 'nothing', 'plot.checkpoints')}; run without --resume to start afresh\n`);
  });

  it('--resume with other training settings than the checkpoint', () => {
    const r = train([...RUN.map((a) => (a === '3' ? '5' : a)), '--resume', '--output', out('baseline')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^train: error: --resume: the checkpoint in .* was trained with other settings: --epochs 5 \(the checkpoint has 3\); pass the checkpoint's values or start afresh\n$/);
  });

  it('--resume refuses a checkpoint of another weight layout (same settings, another model build), naming both', async () => {
    const { mkdirSync } = await import('node:fs');
    const { readCheckpoint, writeCheckpoint } = await import('../src/coordinator/checkpoint.js');
    const ckdir = path.join(dir, 'layout', 'plot.checkpoints');
    mkdirSync(ckdir, { recursive: true });
    const good = readCheckpoint(path.join(dir, 'baseline', 'plot.checkpoints', 'epoch-0002-step-000000.ckpt'));
    // Written by writeCheckpoint, so its digest is valid: only the layout differs.
    writeCheckpoint(ckdir, { ...good, layoutHash: 'a-layout-of-another-build' });
    const r = train([...RUN, '--resume', '--output', out('layout')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`train: error: --resume: the checkpoint's weight layout a-layout-of-another-build does not match this model's ${good.layoutHash}\n`);
    expect(readdirSync(ckdir)).toEqual(['epoch-0002-step-000000.ckpt']); // nothing removed or added
  });

  it('a corrupt checkpoint is refused when it is the only one, and skipped with a warning when an older one is good', async () => {
    const { writeFileSync, mkdirSync, copyFileSync } = await import('node:fs');
    const ckdir = path.join(dir, 'corrupt', 'plot.checkpoints');
    mkdirSync(ckdir, { recursive: true });
    const source = path.join(dir, 'baseline', 'plot.checkpoints');
    const bad = Buffer.from(readFileSync(path.join(source, 'epoch-0003-step-000000.ckpt')));
    bad[bad.length - 10] ^= 0xff;
    writeFileSync(path.join(ckdir, 'epoch-0003-step-000000.ckpt'), bad);
    const refused = train(['--resume', '--output', out('corrupt')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^train: error: --resume: no usable checkpoint in .*; checkpoint .*epoch-0003-step-000000\.ckpt is unusable: its contents fail the SHA-256 check \(corrupted\)\n$/);

    copyFileSync(path.join(source, 'epoch-0002-step-000000.ckpt'), path.join(ckdir, 'epoch-0002-step-000000.ckpt'));
    const resumed = train(['--resume', '--output', out('corrupt')]);
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(/^train: warning: skipped checkpoint .*epoch-0003-step-000000\.ckpt is unusable: its contents fail the SHA-256 check \(corrupted\)\n/);
    expect(resumed.stdout).toContain('resuming after epoch 2 of 3');
    expect(weights('corrupt').equals(weights('baseline'))).toBe(true);
  });

  it('a NaN loss stops the run at once, keeping the last good checkpoint', () => {
    // Worker 0's gradients of its 6th step (epoch 2, step 2) become NaN, as a diverging replica's would.
    const r = train([...RUN, '--output', out('nan')], { TRAINPOOL_CHAOS: 'nan-grad=0:6' });
    expect(r.code).toBe(1);
    // (the other stderr lines are the JSON log's warning about the injected fault)
    expect(r.stderr.split('\n').filter((l) => !l.startsWith('{'))).toEqual([
      `train: error: the weight update became NaN or infinite at epoch 2, step 2: training stopped (TerminateOnNaN); the last checkpoint, ${path.join(dir, 'nan', 'plot.checkpoints', 'epoch-0001-step-000000.ckpt')}, is kept`,
      '',
    ]);
    // The checkpoint the message names, and no lock left behind.
    expect(readdirSync(path.join(dir, 'nan', 'plot.checkpoints'))).toEqual(['epoch-0001-step-000000.ckpt']);
    expect(existsSync(path.join(dir, 'nan', 'plot.model'))).toBe(false);
  });
});
