/**
 * The line printed after each epoch, in the form of Keras' fit(verbose=2):
 *
 *   Epoch 3/70 - 63s - loss: 0.8554 - acc: 0.6997 - val_loss: 1.5473 - val_acc: 0.5592 - lr: 0.004857
 */
import type { EpochRecord } from '../trainer.js';

/** Keras' Progbar number format: 4 decimals, or scientific notation below 1e-3 (keras/utils/generic_utils.py). */
export function formatMetric(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) > 1e-3 ? v.toFixed(4) : v.toExponential(4);
}

/** Learning rates span decades over a run; four significant digits keep the last epochs readable. */
export function formatLr(lr: number): string {
  return Number(lr.toPrecision(4)).toString();
}

export function formatEpochLine(r: EpochRecord, epochs: number): string {
  const parts = [
    `Epoch ${r.epoch}/${epochs}`,
    `${Math.round(r.seconds)}s`,
    `loss: ${formatMetric(r.loss)}`,
    `acc: ${formatMetric(r.acc)}`,
  ];
  if (Number.isFinite(r.val_loss)) parts.push(`val_loss: ${formatMetric(r.val_loss)}`, `val_acc: ${formatMetric(r.val_acc)}`);
  parts.push(`lr: ${formatLr(r.lr)}`);
  return parts.join(' - ');
}
