/**
 * The in-memory form every data set reader produces. Images stay as the bytes they were stored as
 * (0..255, N×H×W×C, channels last); mean subtraction and augmentation happen per shard, in float32,
 * so that the whole training set costs one byte per value and can sit in a SharedArrayBuffer that the
 * augmentation threads read without copying.
 */
export type DatasetName = 'cifar10' | 'fashion-mnist' | 'synthetic';
export const DATASET_NAMES: readonly DatasetName[] = ['cifar10', 'fashion-mnist', 'synthetic'];

export interface ImageSet {
  /** count × height × width × depth bytes, row-major, channels last (HWC per image). */
  images: Uint8Array;
  /** count class indices in [0, classes). */
  labels: Uint8Array;
  count: number;
}

export interface Dataset {
  name: DatasetName;
  height: number;
  width: number;
  depth: number;
  classes: number;
  classNames: readonly string[];
  train: ImageSet;
  test: ImageSet;
}

/** Input shape and class count of each data set as the model sees it (Fashion-MNIST padded to 32×32). */
export const DATASET_SHAPES: Record<DatasetName, { height: number; width: number; depth: number; classes: number }> = {
  cifar10: { height: 32, width: 32, depth: 3, classes: 10 },
  'fashion-mnist': { height: 32, width: 32, depth: 1, classes: 10 },
  synthetic: { height: 32, width: 32, depth: 3, classes: 10 },
};
