/**
 * MiniGoogLeNet (Zhang et al. 2017, "Understanding deep learning requires rethinking generalization",
 * appendix), as built by the Keras tutorial this project reproduces, plus two variants made of the same
 * three modules: `small`, the quick preset's (it must learn Fashion-MNIST in minutes on two CPU cores), and
 * `tiny`, for tests and smoke runs.
 *
 * Every layer is named explicitly (Keras-style `conv2d_3`, `batch_normalization_3`, ...) so that two
 * processes building the same spec get the same weight names, whatever else was built before: the flat
 * weight layout (flat.ts) and the wire protocol depend on it. tfjs-layers would otherwise number layers
 * with a process-wide counter.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { setDropoutLayerSeed } from '../engine/tfjs-internals.js';
import { mixSeed } from '../util/random.js';
import { MODEL_NAMES, type ModelName } from './names.js';

export { MODEL_NAMES, type ModelName };

export interface ModelSpec {
  name: ModelName;
  width: number;
  height: number;
  depth: number;
  classes: number;
  /** Seeds every kernel initializer (each layer gets its own stream derived from it). */
  seed: number;
  /**
   * false builds the same topology without BatchNormalization and with dropout rate 0: a model whose
   * gradient is a plain mean over examples, which the data-parallel equivalence tests rely on.
   */
  batchNorm?: boolean;
  dropout?: number;
}

/** Keras' BatchNormalization defaults, which the tutorial uses unchanged. */
const BN_MOMENTUM = 0.99;
const BN_EPSILON = 1e-3;

type Module =
  | { kind: 'conv'; filters: number; kernel: number }
  | { kind: 'inception'; k1: number; k3: number }
  | { kind: 'downsample'; filters: number };

/**
 * Each model's body; the head (avgpool → dropout → flatten → dense → softmax) follows, with the
 * architecture's dropout rate.
 */
const ARCHITECTURES: Record<ModelName, { body: Module[]; dropout: number }> = {
  // The tutorial's.
  minigooglenet: { dropout: 0.5, body: [
    { kind: 'conv', filters: 96, kernel: 3 },
    { kind: 'inception', k1: 32, k3: 32 },
    { kind: 'inception', k1: 32, k3: 48 },
    { kind: 'downsample', filters: 80 },
    { kind: 'inception', k1: 112, k3: 48 },
    { kind: 'inception', k1: 96, k3: 64 },
    { kind: 'inception', k1: 80, k3: 80 },
    { kind: 'inception', k1: 48, k3: 96 },
    { kind: 'downsample', filters: 96 },
    { kind: 'inception', k1: 176, k3: 160 },
    { kind: 'inception', k1: 176, k3: 160 },
  ] },
  // The tutorial's three modules at a fraction of the width, for tests and smoke runs.
  tiny: { dropout: 0.5, body: [
    { kind: 'conv', filters: 16, kernel: 3 },
    { kind: 'inception', k1: 8, k3: 8 },
    { kind: 'downsample', filters: 16 },
    { kind: 'inception', k1: 16, k3: 16 },
    { kind: 'downsample', filters: 16 },
    { kind: 'inception', k1: 16, k3: 16 },
  ] },
  // The quick preset's: downsampled right after the first convolution (the 32×32 layers cost the most
  // on a CPU) and wider at 7×7, where width is cheap. No dropout: on 64 features for two epochs it only
  // slows learning (issue 16: the tiny model with the tutorial's 0.5 stayed near 0.80 val_acc on
  // Fashion-MNIST after two full epochs; this one passes 0.85 on 2 × 25,000 images without).
  small: { dropout: 0, body: [
    { kind: 'conv', filters: 16, kernel: 3 },
    { kind: 'downsample', filters: 16 },
    { kind: 'inception', k1: 16, k3: 16 },
    { kind: 'downsample', filters: 32 },
    { kind: 'inception', k1: 32, k3: 32 },
  ] },
};

/** Builds layer names the way Keras numbers them, but per model instead of per process. */
class Namer {
  private readonly counts = new Map<string, number>();
  next(prefix: string): string {
    const n = (this.counts.get(prefix) ?? 0) + 1;
    this.counts.set(prefix, n);
    return `${prefix}_${n}`;
  }
}

export function buildModel(spec: ModelSpec): tfl.LayersModel {
  validateSpec(spec);
  const batchNorm = spec.batchNorm ?? true;
  const dropoutRate = spec.dropout ?? (batchNorm ? ARCHITECTURES[spec.name].dropout : 0);
  const names = new Namer();
  let seeded = 0;
  const kernelInitializer = () => tfl.initializers.glorotUniform({ seed: mixSeed(spec.seed, seeded++) });

  const convModule = (
    x: tfl.SymbolicTensor,
    filters: number,
    kernel: number,
    strides: number,
    padding: 'same' | 'valid',
  ): tfl.SymbolicTensor => {
    let y = tfl.layers
      .conv2d({
        filters,
        kernelSize: kernel,
        strides,
        padding,
        useBias: true,
        kernelInitializer: kernelInitializer(),
        biasInitializer: 'zeros',
        name: names.next('conv2d'),
      })
      .apply(x) as tfl.SymbolicTensor;
    if (batchNorm) {
      y = tfl.layers
        .batchNormalization({
          axis: -1,
          momentum: BN_MOMENTUM,
          epsilon: BN_EPSILON,
          name: names.next('batch_normalization'),
        })
        .apply(y) as tfl.SymbolicTensor;
    }
    return tfl.layers.activation({ activation: 'relu', name: names.next('activation') }).apply(y) as tfl.SymbolicTensor;
  };

  const concat = (parts: tfl.SymbolicTensor[]): tfl.SymbolicTensor =>
    tfl.layers.concatenate({ axis: -1, name: names.next('concatenate') }).apply(parts) as tfl.SymbolicTensor;

  const input = tfl.input({ shape: [spec.height, spec.width, spec.depth], name: 'input_1' });
  let x: tfl.SymbolicTensor = input;
  for (const m of ARCHITECTURES[spec.name].body) {
    switch (m.kind) {
      case 'conv':
        x = convModule(x, m.filters, m.kernel, 1, 'same');
        break;
      case 'inception':
        x = concat([convModule(x, m.k1, 1, 1, 'same'), convModule(x, m.k3, 3, 1, 'same')]);
        break;
      case 'downsample': {
        const conv = convModule(x, m.filters, 3, 2, 'valid');
        const pool = tfl.layers
          .maxPooling2d({ poolSize: 3, strides: 2, padding: 'valid', name: names.next('max_pooling2d') })
          .apply(x) as tfl.SymbolicTensor;
        x = concat([conv, pool]);
        break;
      }
      default: {
        const never: never = m;
        throw new Error(`unknown module ${JSON.stringify(never)}: this is a bug`);
      }
    }
  }
  // The tutorial pools 7×7, which is the whole map for 32×32 inputs; pooling over the whole map keeps
  // that meaning for other input sizes.
  const [, h, w] = x.shape as number[];
  x = tfl.layers
    .averagePooling2d({ poolSize: [h, w], strides: [h, w], name: names.next('average_pooling2d') })
    .apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.dropout({ rate: dropoutRate, name: names.next('dropout') }).apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.flatten({ name: names.next('flatten') }).apply(x) as tfl.SymbolicTensor;
  x = tfl.layers
    .dense({
      units: spec.classes,
      kernelInitializer: kernelInitializer(),
      biasInitializer: 'zeros',
      name: names.next('dense'),
    })
    .apply(x) as tfl.SymbolicTensor;
  const output = tfl.layers.activation({ activation: 'softmax', name: names.next('activation') }).apply(x) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: output, name: spec.name });
}

function validateSpec(spec: ModelSpec): void {
  if (!MODEL_NAMES.includes(spec.name)) {
    throw new Error(`model must be one of ${MODEL_NAMES.join(', ')}. Received: ${JSON.stringify(spec.name)}`);
  }
  for (const key of ['width', 'height', 'depth', 'classes'] as const) {
    const v = spec[key];
    if (!Number.isInteger(v) || v < 1) throw new Error(`model ${key} must be a positive integer. Received: ${v}`);
  }
  // Two valid 3×3 stride-2 downsamples must leave at least one pixel.
  if (spec.width < 11 || spec.height < 11) {
    throw new Error(`model input must be at least 11×11 pixels. Received: ${spec.width}×${spec.height}`);
  }
}

/** Layers whose randomness must be re-seeded for every step (see setDropoutSeed). */
export function dropoutLayers(model: tfl.LayersModel): tfl.layers.Layer[] {
  return model.layers.filter((l) => l.getClassName() === 'Dropout');
}

/**
 * tfjs' Dropout with a fixed `seed` draws the same mask on every call, and without one it draws from
 * Math.random (not reproducible). Setting a fresh derived seed before each step gives both.
 */
export function setDropoutSeed(model: tfl.LayersModel, seed: number): void {
  for (const layer of dropoutLayers(model)) setDropoutLayerSeed(layer, seed);
}
