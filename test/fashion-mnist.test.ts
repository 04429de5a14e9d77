import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openFilesUnder } from './helpers/fds.js';
import {
  FASHION_MNIST_CLASS_NAMES,
  FASHION_MNIST_DEFAULT_DIR,
  checkFashionMnist,
  readFashionMnist,
} from '../src/data/fashion-mnist.js';
import { checkDataset, loadDataset } from '../src/data/load.js';
import { rejection } from './helpers/errors.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'trainpool-fashion-'));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

/** Source pixel (y, x) of image i in the fixtures; never 0, so the padding is told apart. */
function pixel(i: number, y: number, x: number): number {
  return 1 + ((i * 7 + y * 28 + x) % 255);
}

function idxImages(count: number, options: { magic?: number; rows?: number; columns?: number; stored?: number } = {}): Buffer {
  const { magic = 0x803, rows = 28, columns = 28, stored = count } = options;
  const out = Buffer.alloc(16 + stored * rows * columns);
  out.writeUInt32BE(magic, 0);
  out.writeUInt32BE(count, 4);
  out.writeUInt32BE(rows, 8);
  out.writeUInt32BE(columns, 12);
  for (let i = 0; i < stored; i++) {
    for (let y = 0; y < rows; y++) for (let x = 0; x < columns; x++) out[16 + (i * rows + y) * columns + x] = pixel(i, y, x);
  }
  return out;
}

function idxLabels(labels: number[], magic = 0x801): Buffer {
  const out = Buffer.alloc(8 + labels.length);
  out.writeUInt32BE(magic, 0);
  out.writeUInt32BE(labels.length, 4);
  labels.forEach((l, i) => (out[8 + i] = l));
  return out;
}

const TRAIN_IMAGES = 'train-images-idx3-ubyte.gz';
const TRAIN_LABELS = 'train-labels-idx1-ubyte.gz';
const TEST_IMAGES = 't10k-images-idx3-ubyte.gz';
const TEST_LABELS = 't10k-labels-idx1-ubyte.gz';

/** A valid set of 3 training and 2 test images; `overrides` replaces files by name (uncompressed bytes). */
function writeSet(overrides: Record<string, Buffer> = {}): void {
  const files: Record<string, Buffer> = {
    [TRAIN_IMAGES]: idxImages(3),
    [TRAIN_LABELS]: idxLabels([9, 0, 3]),
    [TEST_IMAGES]: idxImages(2),
    [TEST_LABELS]: idxLabels([1, 8]),
    ...overrides,
  };
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(root, name), gzipSync(bytes));
}


describe('readFashionMnist on small IDX files', () => {
  it('pads 28×28 to 32×32 with 2 zero pixels each side and keeps the labels', async () => {
    writeSet();
    const d = await readFashionMnist(root);
    expect(d.name).toBe('fashion-mnist');
    expect([d.height, d.width, d.depth, d.classes]).toEqual([32, 32, 1, 10]);
    expect(d.classNames).toEqual(FASHION_MNIST_CLASS_NAMES);
    expect(d.classNames[9]).toBe('Ankle boot');
    expect(d.train.count).toBe(3);
    expect(Array.from(d.train.labels)).toEqual([9, 0, 3]);
    expect(Array.from(d.test.labels)).toEqual([1, 8]);
    expect(d.train.images.length).toBe(3 * 1024);
    const img = (set: Uint8Array, i: number, y: number, x: number) => set[i * 1024 + y * 32 + x];
    // Source (0,0) lands at (2,2); source (27,27) at (29,29).
    expect(img(d.train.images, 2, 2, 2)).toBe(pixel(2, 0, 0));
    expect(img(d.train.images, 2, 29, 29)).toBe(pixel(2, 27, 27));
    expect(img(d.train.images, 1, 10, 20)).toBe(pixel(1, 8, 18));
    expect(img(d.test.images, 1, 2, 29)).toBe(pixel(1, 0, 27));
    for (const [y, x] of [[0, 0], [1, 15], [2, 1], [2, 30], [30, 5], [31, 31], [15, 0], [15, 31]]) {
      expect(img(d.train.images, 2, y, x)).toBe(0);
    }
    // The bottom padding of an image that is not the last stays zero too (the next image's rows follow).
    for (let x = 0; x < 32; x++) expect([img(d.train.images, 0, 30, x), img(d.train.images, 0, 31, x)]).toEqual([0, 0]);
  });

  it('limitTrain 2 reads only the first two examples: a bad third label goes unseen', async () => {
    writeSet({ [TRAIN_LABELS]: idxLabels([9, 0, 12]) });
    const d = await readFashionMnist(root, { limitTrain: 2, limitTest: 1 });
    expect(d.train.count).toBe(2);
    expect(d.train.images.length).toBe(2 * 1024);
    expect(Array.from(d.train.labels)).toEqual([9, 0]);
    expect(d.test.count).toBe(1);
    await expect(readFashionMnist(root)).rejects.toThrow(/label 12 at index 2/);
  });

  it('limitTrain 1 still checks the whole file: a flipped byte of its gzip checksum is refused', async () => {
    writeSet();
    const file = join(root, TRAIN_IMAGES);
    const bytes = readFileSync(file);
    bytes[bytes.length - 8] ^= 0xff; // the trailer's CRC-32 (RFC 1952), checked only at the end of the stream
    writeFileSync(file, bytes);
    const e = await rejection(readFashionMnist(root, { limitTrain: 1, limitTest: 1 }));
    expect(e.message).toBe(`Fashion-MNIST file ${file} is not a readable gzip file: incorrect data check`);
  });

  it('a folder where a file should be is named as such, not as missing or truncated', async () => {
    writeSet();
    unlinkSync(join(root, TEST_LABELS));
    mkdirSync(join(root, TEST_LABELS));
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(`Fashion-MNIST file ${join(root, TEST_LABELS)} is a folder; the data set's file should be there`);
  });

  it('rejects a limit beyond the set; limitTest 0 is an empty test set', async () => {
    writeSet();
    const e = await rejection(readFashionMnist(root, { limitTest: 3 }));
    expect(e.code).toBe('USAGE');
    expect(e.message).toBe('limitTest must be an integer in [0, 2] for fashion-mnist. Received: limitTest=3');
    const d = await readFashionMnist(root, { limitTest: 0 });
    expect(d.test.count).toBe(0);
    expect(d.test.images.length).toBe(0);
  });

  it.each([
    [{ limitTrain: 0 }, 'limitTrain must be an integer in [1, 3] for fashion-mnist. Received: limitTrain=0'],
    [{ limitTrain: 4 }, 'limitTrain must be an integer in [1, 3] for fashion-mnist. Received: limitTrain=4'],
    [{ limitTrain: 1.5 }, 'limitTrain must be an integer in [1, 3] for fashion-mnist. Received: limitTrain=1.5'],
    [{ limitTest: -1 }, 'limitTest must be an integer in [0, 2] for fashion-mnist. Received: limitTest=-1'],
  ])('refuses %o, naming the limit and its range', async (limits, message) => {
    writeSet();
    const e = await rejection(readFashionMnist(root, limits));
    expect(e.code).toBe('USAGE');
    expect(e.message).toBe(message);
  });

  it('takes limits equal to the whole set', async () => {
    writeSet();
    const d = await readFashionMnist(root, { limitTrain: 3, limitTest: 2 });
    expect([d.train.count, d.test.count]).toEqual([3, 2]);
  });
});

describe('readFashionMnist on broken or missing files', () => {
  const install =
    `expected train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and ` +
    `t10k-labels-idx1-ubyte.gz in DIR. Install them with: apt-get install dataset-fashion-mnist ` +
    `(into /usr/share/datasets/fashion-mnist), or name their folder with --data-dir`;

  it('a missing folder is DATA_MISSING with the apt-get command', async () => {
    const dir = join(root, 'nowhere');
    const e = await rejection(checkFashionMnist(dir));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toBe(`Fashion-MNIST folder ${dir} does not exist: ${install.replace('DIR', dir)}`);
  });

  it('a missing file is DATA_MISSING naming it', async () => {
    writeSet();
    unlinkSync(join(root, TEST_LABELS));
    const e = await rejection(readFashionMnist(root));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toBe(`Fashion-MNIST file ${root}/${TEST_LABELS} is missing: ${install.replace('DIR', root)}`);
  });

  it('a label file where the images belong fails the magic check', async () => {
    writeSet({ [TRAIN_IMAGES]: idxLabels([1, 2, 3]) });
    const e = await rejection(readFashionMnist(root));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(
      `Fashion-MNIST file ${root}/${TRAIN_IMAGES} is not an IDX image file: expected magic 0x00000803 ` +
        `(unsigned bytes, 3 dimensions), got 0x00000801`,
    );
  });

  it('a label file with the wrong magic fails the magic check', async () => {
    writeSet({ [TEST_LABELS]: idxLabels([1, 8], 0x802) });
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(
      `Fashion-MNIST file ${root}/${TEST_LABELS} is not an IDX label file: expected magic 0x00000801 ` +
        `(unsigned bytes, 1 dimension), got 0x00000802`,
    );
  });

  it('an image file that ends inside its 16-byte header is truncated', async () => {
    writeSet({ [TRAIN_IMAGES]: idxImages(3).subarray(0, 10) });
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(
      `Fashion-MNIST file ${root}/${TRAIN_IMAGES} is truncated: expected at least 16 bytes uncompressed, got 10`,
    );
  });

  it('images of 30×30 are rejected naming the size found', async () => {
    writeSet({ [TRAIN_IMAGES]: idxImages(3, { rows: 30, columns: 30 }) });
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(`Fashion-MNIST file ${root}/${TRAIN_IMAGES} holds 30×30 images: expected 28×28`);
  });

  it('3 images against 4 labels: the files disagree', async () => {
    writeSet({ [TRAIN_LABELS]: idxLabels([1, 2, 3, 4]) });
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(
      `Fashion-MNIST training files disagree on the number of examples: ${root}/${TRAIN_IMAGES} holds 3 images, ` +
        `${root}/${TRAIN_LABELS} holds 4 labels`,
    );
  });

  it('a header promising 3 images over data for 2 fails on the gzip trailer, before decompressing', async () => {
    writeSet({ [TRAIN_IMAGES]: idxImages(3, { stored: 2 }) });
    const e = await rejection(checkFashionMnist(root));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(
      `Fashion-MNIST file ${root}/${TRAIN_IMAGES} does not match its header: the header promises 3 images of ` +
        `28×28, 2368 bytes uncompressed, the gzip trailer says 1584 bytes (truncated or corrupt file?)`,
    );
  });

  it('a gzip file cut short is caught by the trailer check', async () => {
    writeSet();
    const path = join(root, TEST_IMAGES);
    const whole = readFileSync(path);
    writeFileSync(path, whole.subarray(0, whole.length - 20));
    const e = await rejection(checkFashionMnist(root));
    expect(e.message).toMatch(
      new RegExp(`^Fashion-MNIST file ${path} does not match its header: the header promises 2 images of 28×28, ` +
        `1584 bytes uncompressed, the gzip trailer says \\d+ bytes \\(truncated or corrupt file\\?\\)$`),
    );
  });

  it('an uncompressed IDX file is not gzip', async () => {
    writeSet();
    writeFileSync(join(root, TRAIN_LABELS), idxLabels([9, 0, 3]));
    const e = await rejection(readFashionMnist(root));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(`Fashion-MNIST file ${root}/${TRAIN_LABELS} is not a readable gzip file: incorrect header check`);
  });

  it('a label of 10 names the file and index', async () => {
    writeSet({ [TEST_LABELS]: idxLabels([1, 10]) });
    const e = await rejection(readFashionMnist(root));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(`Fashion-MNIST file ${root}/${TEST_LABELS} has label 10 at index 1: labels must be in 0..9`);
  });
});

describe('readFashionMnist: more broken files, and its file handles', () => {
  it('images of 28×30 are rejected too (columns checked as well as rows)', async () => {
    writeSet({ [TEST_IMAGES]: idxImages(2, { columns: 30 }) });
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(`Fashion-MNIST file ${root}/${TEST_IMAGES} holds 28×30 images: expected 28×28`);
  });

  it('test files that disagree are named as the test files', async () => {
    writeSet({ [TEST_LABELS]: idxLabels([1, 8, 2]) });
    const e = await rejection(readFashionMnist(root));
    expect(e.message).toBe(
      `Fashion-MNIST test files disagree on the number of examples: ${root}/${TEST_IMAGES} holds 2 images, ` +
        `${root}/${TEST_LABELS} holds 3 labels`,
    );
  });

  it('a label header promising more labels than stored fails on the trailer, saying how many it promised', async () => {
    const labels = idxLabels([9, 0, 3]);
    labels.writeUInt32BE(4, 4);
    writeSet({ [TRAIN_LABELS]: labels, [TRAIN_IMAGES]: idxImages(4) });
    const e = await rejection(checkFashionMnist(root));
    expect(e.message).toBe(
      `Fashion-MNIST file ${root}/${TRAIN_LABELS} does not match its header: the header promises 4 labels, ` +
        `12 bytes uncompressed, the gzip trailer says 11 bytes (truncated or corrupt file?)`,
    );
  });

  it('a gzip file holding fewer bytes than a magic number is truncated, not a crash', async () => {
    writeSet({ [TRAIN_IMAGES]: Buffer.of(0, 0) });
    const e = await rejection(checkFashionMnist(root));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toBe(`Fashion-MNIST file ${root}/${TRAIN_IMAGES} is truncated: expected at least 4 bytes uncompressed, got 2`);
  });

  it('closes every file it opened, also those it stopped reading after the header', async () => {
    writeSet();
    expect(openFilesUnder(root)).toEqual([]);
    await readFashionMnist(root);
    await readFashionMnist(root, { limitTrain: 1, limitTest: 1 });
    // A destroyed read stream closes its descriptor a moment later, on the thread pool.
    await vi.waitFor(() => expect(openFilesUnder(root)).toEqual([]), { timeout: 10_000, interval: 20 });
  });
});

describe.skipIf(!existsSync(FASHION_MNIST_DEFAULT_DIR))('the installed Debian package', () => {
  it('checks in milliseconds: 60,000 + 10,000 examples', async () => {
    expect(await checkFashionMnist()).toEqual({ dir: FASHION_MNIST_DEFAULT_DIR, trainCount: 60_000, testCount: 10_000 });
  });

  it('reads all of it: 6,000 training images per class, known first labels, zero border', async () => {
    const d = await readFashionMnist();
    expect(d.train.count).toBe(60_000);
    expect(d.test.count).toBe(10_000);
    const perClass = new Array(10).fill(0);
    for (const l of d.train.labels) perClass[l]++;
    expect(perClass).toEqual(new Array(10).fill(6000));
    // The first training and test images are both ankle boots (class 9).
    expect(Array.from(d.train.labels.subarray(0, 5))).toEqual([9, 0, 0, 3, 0]);
    expect(Array.from(d.test.labels.subarray(0, 5))).toEqual([9, 2, 1, 1, 6]);
    let border = 0;
    for (let i = 0; i < d.train.count; i += 997) {
      for (let k = 0; k < 32; k++) {
        const base = i * 1024;
        border += d.train.images[base + k] + d.train.images[base + 31 * 32 + k] + d.train.images[base + k * 32] + d.train.images[base + k * 32 + 31];
      }
    }
    expect(border).toBe(0);
  });

  it('limitTrain 100 reads the same first 100 images as a full read would', async () => {
    const d = await readFashionMnist(undefined, { limitTrain: 100, limitTest: 10 });
    expect(d.train.count).toBe(100);
    expect(d.train.labels[0]).toBe(9);
    let sum = 0;
    for (let p = 0; p < 1024; p++) sum += d.train.images[p];
    expect(sum).toBe(76247); // pixel sum of training image 0, from a full read
  });
});

describe('loadDataset / checkDataset for fashion-mnist', () => {
  it('reads the folder given, limits applied', async () => {
    writeSet();
    expect(await checkDataset({ name: 'fashion-mnist', dataDir: root, seed: 1, limitTrain: 2 })).toEqual({
      name: 'fashion-mnist', height: 32, width: 32, depth: 1, classes: 10, trainCount: 2, testCount: 2, dir: root, willDownload: false,
    });
    const d = await loadDataset({ name: 'fashion-mnist', dataDir: root, seed: 1, limitTrain: 2 });
    expect(Array.from(d.train.labels)).toEqual([9, 0]);
  });

  it('a broken header fails the check, which reads no image data', async () => {
    writeSet({ [TEST_IMAGES]: idxImages(2, { rows: 27 }) });
    await expect(checkDataset({ name: 'fashion-mnist', dataDir: root, seed: 1 })).rejects.toThrow('holds 27×28 images: expected 28×28');
  });

  it.skipIf(!existsSync(FASHION_MNIST_DEFAULT_DIR))('defaults to the Debian package folder', async () => {
    const check = await checkDataset({ name: 'fashion-mnist', seed: 1, limitTest: 10 });
    expect(check).toMatchObject({ dir: FASHION_MNIST_DEFAULT_DIR, trainCount: 60_000, testCount: 10 });
  });
});
