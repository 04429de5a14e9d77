/**
 * A Keras-style model summary (Keras 2's `model.summary()` for functional models). tfjs-layers has its
 * own, but it prints counts without thousands separators and truncates names, which makes comparing
 * against the tutorial's printout harder than it should be.
 */
import type * as tfl from '@tensorflow/tfjs-layers';

const count = (shape: readonly (number | null)[]) => shape.reduce<number>((a, b) => a * (b ?? 1), 1);

function formatShape(shape: unknown): string {
  const one = (s: (number | null)[]) => `(${s.map((d) => (d == null ? 'None' : String(d))).join(', ')})`;
  if (Array.isArray(shape) && Array.isArray(shape[0])) return `[${(shape as (number | null)[][]).map(one).join(', ')}]`;
  return one(shape as (number | null)[]);
}

function inbound(layer: tfl.layers.Layer): string[] {
  const node = layer.inboundNodes[0];
  if (!node) return [];
  return node.inboundLayers.map((l, i) => `${l.name}[${node.nodeIndices[i]}][${node.tensorIndices[i]}]`);
}

export interface ParamCounts {
  total: number;
  trainable: number;
  nonTrainable: number;
}

export function paramCounts(model: tfl.LayersModel): ParamCounts {
  const trainable = model.trainableWeights.reduce((s, w) => s + count(w.shape), 0);
  const nonTrainable = model.nonTrainableWeights.reduce((s, w) => s + count(w.shape), 0);
  return { total: trainable + nonTrainable, trainable, nonTrainable };
}

export function summary(model: tfl.LayersModel): string {
  const rows: string[][] = [];
  for (const layer of model.layers) {
    const links = inbound(layer);
    const params = layer.countParams().toLocaleString('en-US');
    rows.push([` ${layer.name} (${layer.getClassName()})`, formatShape(layer.outputShape), params, links[0] ?? '']);
    for (const link of links.slice(1)) rows.push(['', '', '', link]);
  }
  const header = [' Layer (type)', 'Output Shape', 'Param #', 'Connected to'];
  // Columns as wide as their widest cell: long layer names never push the others out of line.
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)) + 2);
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('').trimEnd();
  const total = widths.reduce((a, b) => a + b, 0);
  const c = paramCounts(model);
  return [
    `Model: "${model.name}"`,
    '_'.repeat(total),
    line(header),
    '='.repeat(total),
    ...rows.map(line),
    '='.repeat(total),
    `Total params: ${c.total.toLocaleString('en-US')}`,
    `Trainable params: ${c.trainable.toLocaleString('en-US')}`,
    `Non-trainable params: ${c.nonTrainable.toLocaleString('en-US')}`,
    '_'.repeat(total),
  ].join('\n');
}
