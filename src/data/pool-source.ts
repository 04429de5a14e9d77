/**
 * A data set as the augmentation pool reads it (data/augment-pool.ts): train and test images in one shared
 * source, test after train, so one pool serves both and validation chunks are indices past the training
 * images. Host 0 and every other host of a run lay it out the same way, and a fingerprint of it tells them
 * they hold the same images (coordinator/hosts/).
 */
import { createHash } from 'node:crypto';
import type { Dataset } from './dataset.js';

export function poolSource(data: Dataset): { images: Uint8Array; labels: Uint8Array } {
  const images = new Uint8Array(new SharedArrayBuffer(data.train.images.length + data.test.images.length));
  images.set(data.train.images, 0);
  images.set(data.test.images, data.train.images.length);
  const labels = new Uint8Array(new SharedArrayBuffer(data.train.count + data.test.count));
  labels.set(data.train.labels, 0);
  labels.set(data.test.labels, data.train.count);
  return { images, labels };
}

/** SHA-256 of the shape, the counts and every image and label, train then test: equal only for the same data. */
export function datasetFingerprint(data: Dataset): string {
  const h = createHash('sha256').update(`${data.name} ${data.height}×${data.width}×${data.depth} ${data.train.count}+${data.test.count}\n`);
  for (const part of [data.train.images, data.train.labels, data.test.images, data.test.labels]) h.update(part);
  return h.digest('hex');
}
