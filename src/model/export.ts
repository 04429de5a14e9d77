/**
 * The trained model as tfjs writes it for `tf.loadLayersModel`: `model.json` (topology + weights
 * manifest) and `weights.bin`, plus what inference needs beside the weights: the per-pixel mean image
 * (`mean.bin`, float32 little-endian, H×W×D) and the class names, named in model.json's
 * userDefinedMetadata. Written to a temporary folder and renamed, so a crash never leaves half a model.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { removeQuietly, temporaryName, writeFailed } from '../util/files.js';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

export interface ExportMetadata {
  dataset: string;
  classNames: readonly string[];
  /** [height, width, depth] of the input. */
  inputShape: [number, number, number];
  mean: Float32Array;
}

interface TrainpoolMetadata {
  dataset: string;
  classNames: string[];
  inputShape: [number, number, number];
  meanFile: string;
  preprocessing: string;
}

/** Exports into `dir` by way of a temporary folder beside it (removed when a write fails). */
export async function exportModel(dir: string, model: tfl.LayersModel, meta: ExportMetadata): Promise<void> {
  const tmp = temporaryName(dir);
  try {
    await writeModelFiles(tmp, model, meta);
  } catch (e) {
    removeQuietly(tmp);
    throw writeFailed('the model', dir, e);
  }
  replaceFolder(tmp, dir);
}

/** Moves the folder `from` to `to`, replacing what was there (a folder cannot be renamed over a full one). */
export function replaceFolder(from: string, to: string): void {
  const old = `${to}.${process.pid}.old`;
  let moved = false;
  try {
    renameSync(to, old);
    moved = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw writeFailed('the model', to, e);
  }
  try {
    renameSync(from, to);
  } catch (e) {
    if (moved) renameSync(old, to);
    removeQuietly(from);
    throw writeFailed('the model', to, e);
  }
  if (moved) removeQuietly(old);
}

/** model.json, weights.bin and mean.bin in `dir` (made afresh). */
export async function writeModelFiles(dir: string, model: tfl.LayersModel, meta: ExportMetadata): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const trainpool: TrainpoolMetadata = {
        dataset: meta.dataset,
        classNames: [...meta.classNames],
        inputShape: meta.inputShape,
        meanFile: 'mean.bin',
        preprocessing: 'x = image (0..255, HWC float32) − mean; the model outputs softmax probabilities',
      };
      const json = {
        format: 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: null,
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
        userDefinedMetadata: { trainpool },
      };
      writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
      writeFileSync(path.join(dir, 'weights.bin'), new Uint8Array(weightData));
      writeFileSync(path.join(dir, 'mean.bin'), new Uint8Array(meta.mean.buffer, meta.mean.byteOffset, meta.mean.byteLength));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weightData.byteLength } };
    }),
  );
}

export interface LoadedModel {
  model: tfl.LayersModel;
  mean: Float32Array;
  classNames: string[];
  inputShape: [number, number, number];
}

/**
 * Loads an exported model with stock tf.loadLayersModel from files (tfjs-core has no file:// loader in
 * Node without tfjs-node; with tfjs-node, `tf.loadLayersModel('file://…/model.json')` works as well).
 */
export async function loadExportedModel(dir: string): Promise<LoadedModel> {
  const json = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const manifest = json.weightsManifest as { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  const buffers = manifest.flatMap((g) => g.paths.map((p) => readFileSync(path.join(dir, p))));
  const weightData = tf.io.CompositeArrayBuffer.join(buffers.map((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
  const model = await tfl.loadLayersModel(
    tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: manifest.flatMap((g) => g.weights), weightData }),
  );
  const meta = json.userDefinedMetadata.trainpool as TrainpoolMetadata;
  const meanBytes = readFileSync(path.join(dir, meta.meanFile));
  const mean = new Float32Array(meanBytes.buffer.slice(meanBytes.byteOffset, meanBytes.byteOffset + meanBytes.byteLength));
  return { model, mean, classNames: meta.classNames, inputShape: meta.inputShape };
}
