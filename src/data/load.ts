/**
 * One entry point for every data set: `checkDataset` does only what takes milliseconds (files exist,
 * sizes, headers, limits), so the CLI can refuse a bad invocation before it starts workers or a download;
 * `loadDataset` runs the same checks first and only then reads, downloads or generates.
 */
import { isTrainpoolError, TrainpoolError } from '../util/errors.js';
import { checkCifar10, cifar10Counts, readCifar10 } from './cifar10.js';
import { DATASET_SHAPES, type Dataset, type DatasetName } from './dataset.js';
import { downloadCifar10, type DownloadProgress } from './download.js';
import { checkFashionMnist, FASHION_MNIST_DEFAULT_DIR, readFashionMnist } from './fashion-mnist.js';
import { checkSyntheticOptions, makeSynthetic } from './synthetic.js';

/** Sizes of the synthetic set when no limit is given. */
export const SYNTHETIC_DEFAULTS = { trainCount: 5_000, testCount: 1_000, ...DATASET_SHAPES.synthetic };

export interface LoadOptions {
  name: DatasetName;
  /**
   * cifar10: required, the folder holding cifar-10-batches-bin/ (or the .bin files themselves).
   * fashion-mnist: defaults to /usr/share/datasets/fashion-mnist. synthetic: unused.
   */
  dataDir?: string;
  /** Use only the first n training / test images (synthetic: generate exactly n). */
  limitTrain?: number;
  limitTest?: number;
  /** synthetic only: the images drawn. */
  seed: number;
  /** cifar10 only: download and extract the set when it is missing. Ignored by the other sets. */
  download?: boolean;
  /** cifar10 download only; defaults to a one-line display on stderr when it is a terminal. */
  onDownloadProgress?: (progress: DownloadProgress) => void;
}

export interface DatasetCheck {
  name: DatasetName;
  height: number;
  width: number;
  depth: number;
  classes: number;
  /** After the limits. */
  trainCount: number;
  testCount: number;
  /** The folder the files are read from; undefined for synthetic. */
  dir?: string;
  /** cifar10 with download: the files are missing and loadDataset will download them. */
  willDownload: boolean;
}

export async function checkDataset(options: LoadOptions): Promise<DatasetCheck> {
  const { name, limitTrain, limitTest } = options;
  switch (name) {
    case 'cifar10': {
      const dataDir = cifarDir(options);
      const shape = { name, ...DATASET_SHAPES.cifar10 };
      try {
        return { ...shape, ...checkCifar10(dataDir, { limitTrain, limitTest }), willDownload: false };
      } catch (e) {
        if (!options.download || !isTrainpoolError(e, 'DATA_MISSING')) throw e;
        return { ...shape, ...cifar10Counts({ limitTrain, limitTest }), dir: dataDir, willDownload: true };
      }
    }
    case 'fashion-mnist': {
      const check = await checkFashionMnist(options.dataDir ?? FASHION_MNIST_DEFAULT_DIR, { limitTrain, limitTest });
      return { name, ...DATASET_SHAPES['fashion-mnist'], ...check, willDownload: false };
    }
    case 'synthetic': {
      const { height, width, depth, classes, trainCount, testCount } = checkSyntheticOptions({
        ...syntheticSizes(options),
        seed: options.seed,
      });
      return { name, height, width, depth, classes, trainCount, testCount, willDownload: false };
    }
    default:
      return unknownName(name);
  }
}

export async function loadDataset(options: LoadOptions): Promise<Dataset> {
  const { name, limitTrain, limitTest } = options;
  const check = await checkDataset(options);
  switch (name) {
    case 'cifar10': {
      const dataDir = cifarDir(options);
      // Read from where the download put the files: if --data-dir named a batches folder with a file
      // missing, the fresh copy lands in a cifar-10-batches-bin/ below it.
      const dir = check.willDownload ? await downloadCifar10({ dataDir, onProgress: options.onDownloadProgress }) : dataDir;
      return readCifar10(dir, { limitTrain, limitTest });
    }
    case 'fashion-mnist':
      return readFashionMnist(options.dataDir ?? FASHION_MNIST_DEFAULT_DIR, { limitTrain, limitTest });
    case 'synthetic':
      return makeSynthetic({ ...syntheticSizes(options), seed: options.seed });
    default:
      return unknownName(name);
  }
}

function cifarDir(options: LoadOptions): string {
  if (options.dataDir === undefined) {
    throw new TrainpoolError(
      'USAGE',
      'cifar10 needs a data folder (--data-dir), where cifar-10-batches-bin/ is or will be downloaded to. Received: none',
    );
  }
  return options.dataDir;
}

function syntheticSizes(options: LoadOptions) {
  return {
    ...SYNTHETIC_DEFAULTS,
    trainCount: options.limitTrain ?? SYNTHETIC_DEFAULTS.trainCount,
    testCount: options.limitTest ?? SYNTHETIC_DEFAULTS.testCount,
  };
}

function unknownName(name: never): never {
  throw new TrainpoolError('USAGE', `dataset must be one of cifar10, fashion-mnist, synthetic. Received: ${String(name)}`);
}
