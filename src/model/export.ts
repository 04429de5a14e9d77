/**
 * The trained model as tfjs writes it for `tf.loadLayersModel`: `model.json` (topology + weights
 * manifest) and `weights.bin`, plus what inference needs beside the weights: the per-pixel mean image
 * (`mean.bin`, float32 little-endian, H×W×D) and the class names, named in model.json's
 * userDefinedMetadata. Written to a temporary folder and renamed, so a crash never leaves half a model.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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

export async function exportModel(dir: string, model: tfl.LayersModel, meta: ExportMetadata): Promise<void> {
  const tmp = `${dir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
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
      writeFileSync(path.join(tmp, 'model.json'), JSON.stringify(json));
      writeFileSync(path.join(tmp, 'weights.bin'), new Uint8Array(weightData));
      writeFileSync(path.join(tmp, 'mean.bin'), new Uint8Array(meta.mean.buffer, meta.mean.byteOffset, meta.mean.byteLength));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weightData.byteLength } };
    }),
  );
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
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
