/**
 * Each kind of broken input, fed to bin/train: one line on stderr naming the thing, what was expected
 * and what was found, a non-zero status, and no training time spent (every case answers in about the
 * time the program takes to start). Data files are sparse files of the right or wrong size: the checks
 * that run before training look at names, sizes and headers only.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-bad-input-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RECORD = 3073;
const FILES = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin'];

/** A CIFAR-10 folder of sparse files: `sizes` overrides a file's size, null leaves it out. */
function cifarDir(name: string, sizes: Record<string, number | null> = {}): string {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  for (const f of FILES) {
    const size = f in sizes ? sizes[f] : 10_000 * RECORD;
    if (size === null) continue;
    closeSync(openSync(path.join(d, f), 'w'));
    truncateSync(path.join(d, f), size);
  }
  return d;
}

function train(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(BIN, [...args, '--output', path.join(dir, 'out', 'p.png')], {
    encoding: 'utf8',
    env: { ...process.env, TRAINPOOL_GPUS: '', ...env },
    timeout: 60_000,
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

function expectOneLine(r: ReturnType<typeof train>, code: number, pattern: RegExp) {
  expect(r.stdout).toBe('');
  expect(r.code).toBe(code);
  expect(r.stderr.split('\n')).toHaveLength(2); // one line and its newline
  expect(r.stderr).toMatch(pattern);
  // Refused before any worker, pool or epoch started: no file (checkpoint, plot, history, log) where the
  // run's outputs go; only the folders the start-up checks made writable may be there.
  const out = path.join(dir, 'out');
  const files = existsSync(out) ? readdirSync(out, { recursive: true, withFileTypes: true }).filter((e) => !e.isDirectory()) : [];
  expect(files.map((e) => path.join(e.parentPath, e.name))).toEqual([]);
}

describe('launchers', () => {
  const args = ['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '2'];

  it('several hosts beyond loopback without the shared secret: refused at the start, on host 0 and on the others', () => {
    const torchrun = { GROUP_WORLD_SIZE: '2', MASTER_ADDR: 'n0', LOCAL_WORLD_SIZE: '1' };
    const line = /^train: error: TRAINPOOL_SECRET_FILE must name the run's shared secret \(the same file on every host: openssl rand -hex 32 > secret\) when host 0 is reached at n0, beyond loopback\. Received: nothing$/m;
    expectOneLine(train(args, { ...torchrun, GROUP_RANK: '0' }), 2, line);
    expectOneLine(train(args, { ...torchrun, GROUP_RANK: '1' }), 2, line);
    const short = path.join(dir, 'short-secret');
    writeFileSync(short, 'too short\n');
    expectOneLine(train(args, { ...torchrun, GROUP_RANK: '1', TRAINPOOL_SECRET_FILE: short }), 2, /^train: error: TRAINPOOL_SECRET_FILE must hold at least 32 bytes .*Received: 9 bytes in /);
  });

  it('an inconsistent launcher environment', () => {
    expectOneLine(train(args, { RANK: '3', WORLD_SIZE: '2', MASTER_ADDR: 'n0' }), 2, /^train: error: RANK must be below WORLD_SIZE \(2\) for env\. Received: RANK=3$/m);
  });
});

describe('data sets', () => {
  it('a missing data folder', () => {
    expectOneLine(train(['--data-dir', path.join(dir, 'absent')]), 1, /^train: error: CIFAR-10 \(binary version\) not found: .*does not exist\)\. Download it with: bin\/train --dataset cifar10 --download/);
  });

  it('one CIFAR-10 batch file missing', () => {
    const d = cifarDir('one-missing', { 'data_batch_3.bin': null });
    expectOneLine(train(['--data-dir', d]), 1, new RegExp(`^train: error: CIFAR-10 file ${d}/data_batch_3.bin is missing: .*Download it again with: bin/train --dataset cifar10 --download`));
  });

  it('a truncated CIFAR-10 file', () => {
    const d = cifarDir('truncated', { 'test_batch.bin': 10_000 * RECORD - 100 });
    expectOneLine(train(['--data-dir', d]), 1, new RegExp(`^train: error: CIFAR-10 file ${d}/test_batch.bin is truncated: expected 30730000 bytes \\(10000 records × 3073 bytes: 1 label \\+ 3072 pixels\\), got 30729900 bytes`));
  });

  it('a CIFAR-10 file with the wrong record size', () => {
    const d = cifarDir('record-size', { 'data_batch_1.bin': 10_000 * 3074 });
    expectOneLine(train(['--data-dir', d]), 1, new RegExp(`^train: error: CIFAR-10 file ${d}/data_batch_1.bin has the wrong record size or record count: expected 30730000 bytes .* got 30740000 bytes`));
  });

  it('an IDX file with the wrong magic number', () => {
    const d = path.join(dir, 'fmnist');
    mkdirSync(d, { recursive: true });
    const header = (magic: number, dims: number[]) => {
      const b = Buffer.alloc(4 + 4 * dims.length);
      b.writeUInt32BE(magic, 0);
      dims.forEach((n, i) => b.writeUInt32BE(n, 4 + 4 * i));
      return b;
    };
    for (const split of ['train', 't10k']) {
      const n = split === 'train' ? 60_000 : 10_000;
      // Images and labels swapped: the labels' magic where the images' is expected.
      writeFileSync(path.join(d, `${split}-images-idx3-ubyte.gz`), gzipSync(Buffer.concat([header(0x801, [n]), Buffer.alloc(n)])));
      writeFileSync(path.join(d, `${split}-labels-idx1-ubyte.gz`), gzipSync(Buffer.concat([header(0x801, [n]), Buffer.alloc(n)])));
    }
    expectOneLine(train(['--dataset', 'fashion-mnist', '--data-dir', d]), 1, /^train: error: Fashion-MNIST file .*train-images-idx3-ubyte\.gz is not an IDX image file: expected magic 0x00000803 \(unsigned bytes, 3 dimensions\), got 0x00000801/);
  });
});

describe('options', () => {
  it.each([
    [['--epochs', 'many'], /^train: error: --epochs must be an integer from 1 to 100000\. Received: --epochs=many$/m],
    [['--epochs', '-5'], /^train: error: --epochs must be an integer from 1 to 100000\. Received: --epochs=-5$/m],
    [['--lr', 'x'], /^train: error: --lr must be a number in \(0, 10\]\. Received: --lr=x$/m],
    [['--lr', '-1'], /^train: error: --lr must be a number in \(0, 10\]\. Received: --lr=-1$/m],
    [['--batch-size', '0'], /^train: error: --batch-size must be an integer from 1 to 65536\. Received: --batch-size=0$/m],
    [['--batch-size', 'big'], /^train: error: --batch-size must be an integer from 1 to 65536\. Received: --batch-size=big$/m],
    [['--gpus', '2'], /^train: error: --gpus 2 asks for more GPUs than this machine has\. Found 0: none$/m],
    [['--backend', 'metal'], /^train: error: --backend must be one of auto, webgpu, tensorflow, wasm, cpu\. Received: --backend=metal$/m],
    [['--dataset', 'imagenet'], /^train: error: --dataset must be one of cifar10, fashion-mnist, synthetic\. Received: --dataset=imagenet$/m],
    [['--model', 'vgg'], /^train: error: --model must be one of minigooglenet, small, tiny\. Received: --model=vgg$/m],
  ])('%j', (args, pattern) => {
    expectOneLine(train(args), 2, pattern);
  });

  it('an output folder that cannot be written', () => {
    const r = spawnSync(BIN, ['--dataset', 'synthetic', '--output', '/dev/null/plots/p.png'], { encoding: 'utf8', env: { ...process.env, TRAINPOOL_GPUS: '' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('train: error: --output must name a writable folder. Received: /dev/null/plots: a part of the path is not a folder (ENOTDIR)\n');
  });
});
