/**
 * The model's state as one flat Float32Array: what travels between coordinator and workers, what the
 * optimizer updates and what checkpoints store. One table (the layout) says where each variable lives.
 *
 * Trainable weights come first, in `model.trainableWeights` order, then the non-trainable ones
 * (BatchNormalization's moving mean and variance). A gradient is therefore exactly the trainable prefix
 * of the layout, and the BN statistics are the suffix: both are `subarray` views, never copies.
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { pack } from '../engine/ops/pack.js';
import type * as tfl from '@tensorflow/tfjs-layers';

export interface LayoutEntry {
  /** The variable's name as built (`conv2d_1/kernel`), without tfjs' process-wide uniqueness suffix. */
  name: string;
  shape: number[];
  offset: number;
  size: number;
  trainable: boolean;
}

export interface WeightLayout {
  entries: LayoutEntry[];
  /** Length of a gradient: the trainable prefix. */
  trainableSize: number;
  /** Length of the whole state: trainable weights followed by BN statistics. */
  totalSize: number;
}

export function layoutOf(model: tfl.LayersModel): WeightLayout {
  const entries: LayoutEntry[] = [];
  let offset = 0;
  const add = (w: tfl.LayerVariable, trainable: boolean) => {
    const shape = w.shape as number[];
    const size = shape.reduce((a, b) => a * b, 1);
    entries.push({ name: w.originalName, shape, offset, size, trainable });
    offset += size;
  };
  for (const w of model.trainableWeights) add(w, true);
  const trainableSize = offset;
  for (const w of model.nonTrainableWeights) add(w, false);
  return { entries, trainableSize, totalSize: offset };
}

/** A short fingerprint of names, shapes and order: two processes agree on the layout iff it matches. */
export function layoutHash(layout: WeightLayout): string {
  const h = createHash('sha256');
  for (const e of layout.entries) h.update(`${e.name}:${e.shape.join('x')}:${e.trainable ? 't' : 'n'};`);
  return h.digest('hex').slice(0, 16);
}

/** The model's variables in layout order. */
export function layoutVariables(model: tfl.LayersModel): tfl.LayerVariable[] {
  return [...model.trainableWeights, ...model.nonTrainableWeights];
}

/** Trainable prefix of a state vector (a view): what gradients and SGD cover. */
export function trainablePart(layout: Pick<WeightLayout, 'trainableSize'>, state: Float32Array): Float32Array {
  return state.subarray(0, layout.trainableSize);
}

/** BN-statistics suffix of a state vector (a view): everything after the trainable prefix. */
export function statsPart(layout: Pick<WeightLayout, 'trainableSize'>, state: Float32Array): Float32Array {
  return state.subarray(layout.trainableSize);
}

/**
 * Reads the whole state with one device read: on GPU backends each `data()` is a round trip, so the
 * variables are concatenated on the device first.
 */
export async function readState(model: tfl.LayersModel, layout: WeightLayout): Promise<Float32Array> {
  return readFlat(layoutVariables(model).map((v) => v.read()), layout.totalSize);
}

/** Concatenates tensors into one Float32Array of `size` with a single download. */
export async function readFlat(tensors: tf.Tensor[], size: number): Promise<Float32Array> {
  if (tensors.length === 0) return new Float32Array(0);
  const flat = pack(tensors);
  try {
    const data = (await flat.data()) as Float32Array;
    if (data.length !== size) {
      throw new Error(`readFlat: read ${data.length} values where the layout has ${size}: this is a bug`);
    }
    return data;
  } finally {
    flat.dispose();
  }
}

/** Writes a whole state vector (trainable weights and BN statistics) into the model's variables. */
/** Throws unless `state` has the layout's size. */
export function checkStateSize(layout: WeightLayout, state: Float32Array): void {
  if (state.length !== layout.totalSize) {
    throw new Error(`weights must have ${layout.totalSize} values for this model. Received: ${state.length}`);
  }
}

export function writeState(model: tfl.LayersModel, layout: WeightLayout, state: Float32Array): void {
  checkStateSize(layout, state);
  const vars = layoutVariables(model);
  if (vars.length !== layout.entries.length) {
    throw new Error(`the model has ${vars.length} variables where the layout has ${layout.entries.length}: this is a bug`);
  }
  for (let i = 0; i < vars.length; i++) {
    const e = layout.entries[i];
    // slice, not subarray: the cpu backend keeps the array it is given, and the caller may reuse it.
    const t = tf.tensor(state.slice(e.offset, e.offset + e.size), e.shape, 'float32');
    vars[i].write(t);
    t.dispose();
  }
}
