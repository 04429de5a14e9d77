/**
 * Fashion-MNIST (Xiao et al. 2017) as the Debian package dataset-fashion-mnist installs it: four gzipped
 * IDX files (http://yann.lecun.com/exdb/mnist/ describes the format). An IDX file is a big-endian header,
 * magic 0x0000_08_0D (0x08: unsigned bytes, D: number of dimensions), D sizes as uint32, then the bytes.
 *
 * Images are zero-padded from 28×28 to 32×32 (2 pixels each side) so that every data set feeds the same
 * 32×32 models; depth 1.
 *
 * The cheap checks read a few kilobytes per file: the IDX header (by gunzipping only its start) and the
 * gzip trailer's ISIZE field (RFC 1952: the uncompressed length mod 2^32), which has to equal the length
 * the header promises. A truncated or mismatched file therefore fails before anything is decompressed.
 * ISIZE describes only the last gzip member; the Debian files are single-member, and a multi-member file
 * would fail this check loudly rather than be misread.
 */
import { createReadStream, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { TrainpoolError } from '../util/errors.js';
import type { Dataset, ImageSet } from './dataset.js';

export const FASHION_MNIST_DEFAULT_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_CLASS_NAMES = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
] as const;

const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;
const SOURCE_SIDE = 28;
const SOURCE_PIXELS = SOURCE_SIDE * SOURCE_SIDE;
const SIDE = 32;
const PAD = (SIDE - SOURCE_SIDE) / 2;
const IMAGES_HEADER = 16;
const LABELS_HEADER = 8;

export interface FashionMnistOptions {
  limitTrain?: number;
  limitTest?: number;
}

export interface FashionMnistCheck {
  dir: string;
  /** After the limits. */
  trainCount: number;
  testCount: number;
}

interface Split {
  which: 'training' | 'test';
  images: string;
  labels: string;
}

function splits(dir: string): Split[] {
  return [
    { which: 'training', images: join(dir, 'train-images-idx3-ubyte.gz'), labels: join(dir, 'train-labels-idx1-ubyte.gz') },
    { which: 'test', images: join(dir, 't10k-images-idx3-ubyte.gz'), labels: join(dir, 't10k-labels-idx1-ubyte.gz') },
  ];
}

/** The cheap checks only: the four files exist, their headers are right and agree, their lengths match. */
export async function checkFashionMnist(
  dir: string = FASHION_MNIST_DEFAULT_DIR,
  options: FashionMnistOptions = {},
): Promise<FashionMnistCheck> {
  const [train, test] = splits(dir);
  for (const split of [train, test]) {
    for (const path of [split.images, split.labels]) checkExists(dir, path);
  }
  const trainAvailable = await checkSplit(train);
  const testAvailable = await checkSplit(test);
  return {
    dir,
    trainCount: checkLimit('limitTrain', options.limitTrain, trainAvailable),
    testCount: checkLimit('limitTest', options.limitTest, testAvailable),
  };
}

export async function readFashionMnist(
  dir: string = FASHION_MNIST_DEFAULT_DIR,
  options: FashionMnistOptions = {},
): Promise<Dataset> {
  const { trainCount, testCount } = await checkFashionMnist(dir, options);
  const [train, test] = splits(dir);
  return {
    name: 'fashion-mnist',
    height: SIDE,
    width: SIDE,
    depth: 1,
    classes: FASHION_MNIST_CLASS_NAMES.length,
    classNames: FASHION_MNIST_CLASS_NAMES,
    train: await readSplit(train, trainCount),
    test: await readSplit(test, testCount),
  };
}

/** Returns the number of examples in the split. */
async function checkSplit(split: Split): Promise<number> {
  const imageHeader = await readHeader(split.images, IMAGES_HEADER, IMAGES_MAGIC, 'image', 3);
  const count = imageHeader.readUInt32BE(4);
  const rows = imageHeader.readUInt32BE(8);
  const columns = imageHeader.readUInt32BE(12);
  if (rows !== SOURCE_SIDE || columns !== SOURCE_SIDE) {
    throw invalid(`Fashion-MNIST file ${split.images} holds ${rows}×${columns} images: expected 28×28`);
  }
  await checkLength(split.images, IMAGES_HEADER + count * SOURCE_PIXELS, `${count} images of 28×28`);

  const labelHeader = await readHeader(split.labels, LABELS_HEADER, LABELS_MAGIC, 'label', 1);
  const labelCount = labelHeader.readUInt32BE(4);
  await checkLength(split.labels, LABELS_HEADER + labelCount, `${labelCount} labels`);

  if (labelCount !== count) {
    throw invalid(
      `Fashion-MNIST ${split.which} files disagree on the number of examples: ${split.images} holds ${count} ` +
        `images, ${split.labels} holds ${labelCount} labels`,
    );
  }
  return count;
}

async function readSplit(split: Split, count: number): Promise<ImageSet> {
  // Decompressed to the end even with --limit-train: only there does gzip check its CRC-32, and the
  // files are small (the largest is 47 MB, ~0.3 s), so a flipped byte never trains unnoticed.
  const labelBytes = await gunzipPrefix(split.labels, LABELS_HEADER + count, LABELS_HEADER + count, { toEnd: true });
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const label = labelBytes[LABELS_HEADER + i];
    if (label > 9) throw invalid(`Fashion-MNIST file ${split.labels} has label ${label} at index ${i}: labels must be in 0..9`);
    labels[i] = label;
  }

  const src = await gunzipPrefix(split.images, IMAGES_HEADER + count * SOURCE_PIXELS, IMAGES_HEADER + count * SOURCE_PIXELS, { toEnd: true });
  const images = new Uint8Array(count * SIDE * SIDE); // zeros: the padding
  for (let i = 0; i < count; i++) {
    let s = IMAGES_HEADER + i * SOURCE_PIXELS;
    for (let y = 0; y < SOURCE_SIDE; y++) {
      let o = (i * SIDE + y + PAD) * SIDE + PAD;
      for (let x = 0; x < SOURCE_SIDE; x++) images[o++] = src[s++];
    }
  }
  return { images, labels, count };
}

/** The header's first `length` bytes, magic checked first: a wrong file type is the likelier mistake. */
async function readHeader(path: string, length: number, magic: number, kind: string, dims: number): Promise<Buffer> {
  const header = await gunzipPrefix(path, length, 4);
  const got = header.readUInt32BE(0);
  if (got !== magic) {
    throw invalid(
      `Fashion-MNIST file ${path} is not an IDX ${kind} file: expected magic ${hex(magic)} (unsigned bytes, ` +
        `${dims} dimension${dims === 1 ? '' : 's'}), got ${hex(got)}`,
    );
  }
  if (header.length < length) throw truncated(path, length, header.length);
  return header;
}

/** Compares the gzip trailer's ISIZE with the length the IDX header promises. */
async function checkLength(path: string, expected: number, promise: string): Promise<void> {
  const handle = await open(path, 'r');
  let isize: number;
  try {
    const { size } = await handle.stat();
    const trailer = Buffer.alloc(4);
    await handle.read(trailer, 0, 4, size - 4);
    isize = trailer.readUInt32LE(0);
  } finally {
    await handle.close();
  }
  if (isize !== expected % 2 ** 32) {
    throw invalid(
      `Fashion-MNIST file ${path} does not match its header: the header promises ${promise}, ${expected} bytes ` +
        `uncompressed, the gzip trailer says ${isize} bytes (truncated or corrupt file?)`,
    );
  }
}

/**
 * The first `length` uncompressed bytes of a gzip file (or all of them, if at least `atLeast` but fewer),
 * decompressing no further than needed unless `toEnd` (which verifies the whole file's checksum). Throws
 * DATA_INVALID if the file is not gzip, fails its checksum or holds fewer.
 */
async function gunzipPrefix(path: string, length: number, atLeast = length, o: { toEnd?: boolean } = {}): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  let filled = 0;
  // Big chunks for big reads: with the default 16 KiB a full read of the training images takes twice as
  // long; small ones for headers, which need a few bytes.
  const chunk = length > 1 << 20 ? 1 << 20 : 1 << 16;
  const source = createReadStream(path, { highWaterMark: chunk });
  const gunzip = createGunzip({ chunkSize: chunk });
  source.on('error', (e) => gunzip.destroy(e));
  source.pipe(gunzip);
  try {
    for await (const piece of gunzip as AsyncIterable<Buffer>) {
      const take = Math.min(piece.length, length - filled);
      piece.copy(out, filled, 0, take);
      filled += take;
      if (filled === length && !o.toEnd) break;
    }
  } catch (e) {
    throw invalid(`Fashion-MNIST file ${path} is not a readable gzip file: ${(e as Error).message}`);
  } finally {
    source.destroy();
    gunzip.destroy();
  }
  if (filled < atLeast) throw truncated(path, atLeast, filled);
  return out.subarray(0, filled);
}

function truncated(path: string, expected: number, got: number): TrainpoolError {
  return invalid(`Fashion-MNIST file ${path} is truncated: expected at least ${expected} bytes uncompressed, got ${got}`);
}

function checkExists(dir: string, path: string): void {
  const found = statSync(path, { throwIfNoEntry: false });
  if (found?.isFile()) return;
  if (found?.isDirectory()) throw new TrainpoolError('DATA_INVALID', `Fashion-MNIST file ${path} is a folder; the data set's file should be there`);
  const what = statSync(dir, { throwIfNoEntry: false })?.isDirectory()
    ? `file ${path} is missing`
    : `folder ${dir} does not exist`;
  throw new TrainpoolError(
    'DATA_MISSING',
    `Fashion-MNIST ${what}: expected train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, ` +
      `t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in ${dir}. Install them with: ` +
      `apt-get install dataset-fashion-mnist (into ${FASHION_MNIST_DEFAULT_DIR}), or name their folder with --data-dir`,
  );
}

/**
 * Limits arrive resolved from the CLI; this guards direct callers. As on the command line, the test set
 * may be limited to 0 images (no evaluation), the training set not.
 */
function checkLimit(name: 'limitTrain' | 'limitTest', limit: number | undefined, available: number): number {
  if (limit === undefined) return available;
  const low = name === 'limitTest' ? 0 : 1;
  if (!Number.isInteger(limit) || limit < low || limit > available) {
    throw new TrainpoolError('USAGE', `${name} must be an integer in [${low}, ${available}] for fashion-mnist. Received: ${name}=${limit}`);
  }
  return limit;
}

function invalid(message: string): TrainpoolError {
  return new TrainpoolError('DATA_INVALID', message);
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}
