import { mkdirSync, mkdtempSync, rmSync, truncateSync, unlinkSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openFilesUnder } from './helpers/fds.js';
import {
  CIFAR10_CLASS_NAMES,
  checkCifar10,
  cifarRecordsToHwc,
  readCifar10,
  resolveCifar10Dir,
} from '../src/data/cifar10.js';
import { checkDataset, loadDataset } from '../src/data/load.js';
import { cifarFileBytes, fixtureLabel, fixturePixel, writeCifarFiles } from './helpers/cifar-files.js';
import { rejection } from './helpers/errors.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'trainpool-cifar-'));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

/** HWC value of channel c at (y, x) of image i. */
function at(images: Uint8Array, i: number, y: number, x: number, c: number): number {
  return images[i * 3072 + (y * 32 + x) * 3 + c];
}


describe('resolveCifar10Dir', () => {
  it('accepts the folder that holds the .bin files', () => {
    writeCifarFiles(root, 1);
    expect(resolveCifar10Dir(root)).toBe(root);
  });

  it('accepts the parent of cifar-10-batches-bin, as the archive unpacks', () => {
    mkdirSync(join(root, 'cifar-10-batches-bin'));
    writeCifarFiles(join(root, 'cifar-10-batches-bin'), 1);
    expect(resolveCifar10Dir(root)).toBe(join(root, 'cifar-10-batches-bin'));
  });

  it('names both places it looked and the download command when neither holds the set', async () => {
    const e = await rejection(() => resolveCifar10Dir(root));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toBe(
      `CIFAR-10 (binary version) not found: looked for data_batch_1.bin … test_batch.bin in ${root} and in ` +
        `${root}/cifar-10-batches-bin. Download it with: bin/train --dataset cifar10 --download --data-dir ${root} ...`,
    );
  });

  it('says when the folder itself does not exist, and quotes an odd path in the command', async () => {
    const dir = join(root, "my data's");
    const e = await rejection(() => resolveCifar10Dir(dir));
    expect(e.message).toContain(`(${dir} does not exist)`);
    expect(e.message).toContain(`--data-dir '${root}/my data'\\''s' ...`);
  });
});

describe('readCifar10 on small files (3 records each)', () => {
  it('transposes channel-major records to HWC and keeps the labels, train then test', async () => {
    writeCifarFiles(root, 3);
    const d = await readCifar10(root, { recordsPerFile: 3 });
    expect(d.name).toBe('cifar10');
    expect([d.height, d.width, d.depth, d.classes]).toEqual([32, 32, 3, 10]);
    expect(d.classNames).toEqual(CIFAR10_CLASS_NAMES);
    expect(d.classNames[0]).toBe('airplane');
    expect(d.classNames[9]).toBe('truck');
    expect(d.train.count).toBe(15);
    expect(d.train.images.length).toBe(15 * 3072);
    expect(Array.from(d.train.labels)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4]);
    expect(d.test.count).toBe(3);
    expect(Array.from(d.test.labels)).toEqual([5, 6, 7]); // global records 15..17

    // Record 7 (data_batch_3, second record): R at (0,0) is 7; G at (0,0) is 7 + 85; B at (31,31) is
    // (7 + 3·1023 + 170) & 255 = 3246 & 255 = 174.
    expect(at(d.train.images, 7, 0, 0, 0)).toBe(7);
    expect(at(d.train.images, 7, 0, 0, 1)).toBe(92);
    expect(at(d.train.images, 7, 31, 31, 2)).toBe(174);
    // Row-major planes: (y=1, x=0) is pixel 32, R = 7 + 32 = 39.
    expect(at(d.train.images, 7, 1, 0, 0)).toBe(39);
    for (const [i, y, x, c] of [[0, 5, 9, 2], [14, 31, 0, 1], [3, 17, 30, 0]]) {
      expect(at(d.train.images, i, y, x, c)).toBe(fixturePixel(i, c, y * 32 + x));
    }
    expect(at(d.test.images, 2, 4, 4, 1)).toBe(fixturePixel(17, 1, 4 * 32 + 4));
  });

  it('limitTrain 4 reads only data_batch_1 and 2: a bad label in data_batch_3 goes unseen', async () => {
    writeCifarFiles(root, 3);
    const bad = cifarFileBytes(6, 3);
    bad[0] = 200;
    writeFileSync(join(root, 'data_batch_3.bin'), bad);
    const d = await readCifar10(root, { recordsPerFile: 3, limitTrain: 4, limitTest: 1 });
    expect(d.train.count).toBe(4);
    expect(Array.from(d.train.labels)).toEqual([0, 1, 2, 3]);
    expect(at(d.train.images, 3, 0, 0, 0)).toBe(3);
    expect(d.test.count).toBe(1);
    expect(d.test.images.length).toBe(3072);
    await expect(readCifar10(root, { recordsPerFile: 3 })).rejects.toThrow(/data_batch_3\.bin record 0 /);
  });

  it('rejects a limit beyond the set with the rule and the value received', async () => {
    writeCifarFiles(root, 3);
    const e = await rejection(readCifar10(root, { recordsPerFile: 3, limitTrain: 16 }));
    expect(e.code).toBe('USAGE');
    expect(e.message).toBe('limitTrain must be an integer in [1, 15] for cifar10. Received: limitTrain=16');
    const e2 = await rejection(readCifar10(root, { recordsPerFile: 3, limitTest: -1 }));
    expect(e2.message).toBe('limitTest must be an integer in [0, 3] for cifar10. Received: limitTest=-1');
    const e3 = await rejection(readCifar10(root, { recordsPerFile: 3, limitTrain: 0 }));
    expect(e3.message).toBe('limitTrain must be an integer in [1, 15] for cifar10. Received: limitTrain=0');
    // the whole set is a limit too
    const d = await readCifar10(root, { recordsPerFile: 3, limitTrain: 15, limitTest: 3 });
    expect([d.train.count, d.test.count]).toEqual([15, 3]);
  });

  it('limitTest 0 gives an empty test set (no evaluation), as --limit-test 0 does', async () => {
    writeCifarFiles(root, 3);
    const d = await readCifar10(root, { recordsPerFile: 3, limitTest: 0 });
    expect(d.test).toEqual({ images: new Uint8Array(0), labels: new Uint8Array(0), count: 0 });
    expect(d.train.count).toBe(15);
  });
});

describe('cifarRecordsToHwc, and the files the reader opens', () => {
  it('writes exactly `count` records at `at`: neither the label nor the pixels of the next slot are touched', () => {
    const src = cifarFileBytes(0, 3);
    const images = new Uint8Array(4 * 3072).fill(0xee);
    const labels = new Uint8Array(4).fill(0xee);
    expect(cifarRecordsToHwc(src, 2, images, labels, 1)).toBe(-1);
    expect(Array.from(labels)).toEqual([0xee, fixtureLabel(0), fixtureLabel(1), 0xee]);
    expect(images.subarray(0, 3072).every((v) => v === 0xee)).toBe(true);
    expect(images.subarray(3 * 3072).every((v) => v === 0xee)).toBe(true);
    expect(at(images, 2, 31, 31, 2)).toBe(fixturePixel(1, 2, 1023));
  });

  it('closes every file it read', async () => {
    writeCifarFiles(root, 3);
    expect(openFilesUnder(root)).toEqual([]);
    await readCifar10(root, { recordsPerFile: 3 });
    await readCifar10(root, { recordsPerFile: 3, limitTrain: 4 });
    // FileHandle.close is awaited inside the reader, so nothing is still closing here.
    expect(openFilesUnder(root)).toEqual([]);
  });
});

describe('readCifar10 on broken files', () => {
  it('a missing test_batch.bin is DATA_MISSING naming the file, before any data is read', async () => {
    writeCifarFiles(root, 3);
    unlinkSync(join(root, 'test_batch.bin'));
    const e = await rejection(readCifar10(root, { recordsPerFile: 3 }));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toBe(
      `CIFAR-10 file ${root}/test_batch.bin is missing: the binary version has data_batch_1.bin … ` +
        `data_batch_5.bin and test_batch.bin in one folder. Download it again with: ` +
        `bin/train --dataset cifar10 --download --data-dir ${root} ...`,
    );
  });

  it('a truncated file says truncated, with the expected and actual sizes', async () => {
    writeCifarFiles(root, 3);
    truncateSync(join(root, 'data_batch_4.bin'), 5000);
    const e = await rejection(readCifar10(root, { recordsPerFile: 3 }));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(
      `CIFAR-10 file ${root}/data_batch_4.bin is truncated: expected 9219 bytes (3 records × 3073 bytes: ` +
        `1 label + 3072 pixels), got 5000 bytes`,
    );
  });

  it('a full-size file of 3,074-byte records (CIFAR-100 layout) is a wrong record size', async () => {
    writeCifarFiles(root, 3);
    writeFileSync(join(root, 'data_batch_1.bin'), Buffer.alloc(3 * 3074));
    const e = await rejection(() => checkCifar10(root, { recordsPerFile: 3 }));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(
      `CIFAR-10 file ${root}/data_batch_1.bin has the wrong record size or record count: expected 9219 bytes ` +
        `(3 records × 3073 bytes: 1 label + 3072 pixels), got 9222 bytes`,
    );
  });

  it('the real size rule is 10,000 records: 30,730,000 bytes', async () => {
    writeCifarFiles(root, 3);
    const e = await rejection(() => checkCifar10(root));
    expect(e.message).toBe(
      `CIFAR-10 file ${root}/data_batch_1.bin is truncated: expected 30730000 bytes (10000 records × 3073 ` +
        `bytes: 1 label + 3072 pixels), got 9219 bytes`,
    );
  });

  it('a label byte above 9 names the file, the record and its byte offset', async () => {
    writeCifarFiles(root, 3);
    const fd = openSync(join(root, 'test_batch.bin'), 'r+');
    writeSync(fd, Buffer.from([10]), 0, 1, 2 * 3073);
    closeSync(fd);
    const e = await rejection(readCifar10(root, { recordsPerFile: 3 }));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(
      `CIFAR-10 file ${root}/test_batch.bin record 2 (0-based, byte offset 6146) has label 10: labels must be in 0..9`,
    );
  });
});

describe('readCifar10 on a full-size set (6 × 30,730,000 bytes)', () => {
  it('reads 50,000 + 10,000 images and converts them to HWC exactly, across the files’ boundaries', async () => {
    writeCifarFiles(root, 10_000);
    expect(checkCifar10(root)).toEqual({ dir: root, trainCount: 50_000, testCount: 10_000 });
    const d = await readCifar10(root);
    expect(d.train.count).toBe(50_000);
    expect(d.test.count).toBe(10_000);
    for (const i of [0, 9_999, 10_000, 31_337, 49_999]) {
      expect(d.train.labels[i]).toBe(fixtureLabel(i));
      expect(at(d.train.images, i, 0, 0, 0)).toBe(i % 256);
      expect(at(d.train.images, i, 13, 21, 1)).toBe(fixturePixel(i, 1, 13 * 32 + 21));
      expect(at(d.train.images, i, 31, 31, 2)).toBe(fixturePixel(i, 2, 1023));
    }
    expect(d.test.labels[9_999]).toBe(fixtureLabel(59_999));

    const loaded = await loadDataset({ name: 'cifar10', dataDir: root, seed: 1, limitTrain: 12_000, limitTest: 5 });
    expect(loaded.train.count).toBe(12_000);
    expect(Buffer.compare(loaded.train.images, d.train.images.subarray(0, 12_000 * 3072))).toBe(0);
    expect(Array.from(loaded.test.labels)).toEqual(Array.from(d.test.labels.subarray(0, 5)));
    expect(at(d.test.images, 9_999, 7, 8, 2)).toBe(fixturePixel(59_999, 2, 7 * 32 + 8));

    // The conversion alone, on records already in memory, gives the same images (its speed is not a unit test's).
    const src = Buffer.concat([1, 2, 3, 4, 5].map((f) => cifarFileBytes((f - 1) * 10_000, 10_000)));
    const images = new Uint8Array(50_000 * 3072).fill(1);
    const labels = new Uint8Array(50_000);
    expect(cifarRecordsToHwc(src, 50_000, images, labels, 0)).toBe(-1);
    expect(Buffer.compare(images, d.train.images)).toBe(0);
  });
});

describe('loadDataset / checkDataset for cifar10', () => {
  it('a missing set fails the check with DATA_MISSING, unless download is on', async () => {
    await expect(checkDataset({ name: 'cifar10', dataDir: root, seed: 1 })).rejects.toThrow(/^CIFAR-10 \(binary version\) not found/);
    expect(await checkDataset({ name: 'cifar10', dataDir: root, seed: 1, download: true, limitTest: 100 })).toEqual({
      name: 'cifar10', height: 32, width: 32, depth: 3, classes: 10, trainCount: 50_000, testCount: 100, dir: root, willDownload: true,
    });
  });

  it('a truncated file fails the check even with download on (only missing files are downloaded)', async () => {
    writeCifarFiles(root, 3);
    await expect(checkDataset({ name: 'cifar10', dataDir: root, seed: 1, download: true })).rejects.toThrow(/is truncated/);
  });

  it('a limit beyond 50,000 fails before the files are looked at', async () => {
    await expect(checkDataset({ name: 'cifar10', dataDir: root, seed: 1, limitTrain: 60_000 })).rejects.toThrow(
      'limitTrain must be an integer in [1, 50000] for cifar10. Received: limitTrain=60000',
    );
  });

  it('without a data folder it is a usage error', async () => {
    const e = await rejection(checkDataset({ name: 'cifar10', seed: 1 }));
    expect(e.code).toBe('USAGE');
    expect(e.message).toBe(
      'cifar10 needs a data folder (--data-dir), where cifar-10-batches-bin/ is or will be downloaded to. Received: none',
    );
  });
});
