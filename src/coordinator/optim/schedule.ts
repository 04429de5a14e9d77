/**
 * Learning-rate schedules, evaluated once per epoch (the tutorial's LearningRateScheduler callback).
 */
import { DEFAULTS } from '../../config/config.js';

/**
 * Polynomial decay by 0-based epoch e of E:  lr(e) = lr0 · (1 − e/E)^power.
 * With power 1 (the tutorial's) it falls linearly: epoch 0 → lr0, epoch E/2 → lr0/2, epoch E−1 → lr0/E.
 */
export function polyDecay(epoch: number, epochs: number, lr0: number, power = 1): number {
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`polyDecay: epochs must be a positive integer. Received: ${epochs}`);
  if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`polyDecay: epoch must be an integer ≥ 0. Received: ${epoch}`);
  const remaining = Math.max(0, 1 - epoch / epochs);
  return lr0 * remaining ** power;
}

export interface ScheduleOptions {
  lr: number;
  epochs: number;
  power?: number;
  /** Number of workers the global batch is spread over. */
  workers?: number;
  /**
   * Linear scaling rule with gradual warmup (Goyal et al. 2017, "Accurate, Large Minibatch SGD"):
   * the target rate is lr·G, reached linearly over `warmupEpochs` epochs from lr, then poly-decayed.
   */
  scaleLr?: boolean;
  warmupEpochs?: number;
}

/** The learning rate for 0-based `epoch` under the run's options. */
export function learningRate(epoch: number, o: ScheduleOptions): number {
  const decayed = polyDecay(epoch, o.epochs, o.lr, o.power ?? 1);
  const g = o.workers ?? 1;
  if (!o.scaleLr || g === 1) return decayed;
  const warmup = o.warmupEpochs ?? DEFAULTS.warmupEpochs;
  // Scale the decayed rate, so the schedule keeps the tutorial's shape at G× height.
  const target = decayed * g;
  if (epoch >= warmup) return target;
  // Epoch 0 starts at the single-GPU rate; epoch `warmup` is the first at full scale.
  const fraction = epoch / warmup;
  return decayed * (1 + (g - 1) * fraction);
}
