/**
 * The run's history beside the plot: `<stem>.history.json` ({config, epochs}) and `<stem>.history.csv`
 * with the same columns. Written after every epoch (atomically), so an interrupted run still has it.
 */
import { writeFileAtomic } from '../../util/files.js';
import type { EpochRecord } from '../trainer.js';

export const HISTORY_COLUMNS = ['epoch', 'loss', 'acc', 'val_loss', 'val_acc', 'lr', 'seconds'] as const;

export function historyJson(config: object, epochs: readonly EpochRecord[]): string {
  const rows = epochs.map((r) => Object.fromEntries(HISTORY_COLUMNS.map((c) => [c, finiteOrNull(r[c])])));
  return `${JSON.stringify({ config, epochs: rows }, null, 2)}\n`;
}

export function historyCsv(epochs: readonly EpochRecord[]): string {
  const lines = [HISTORY_COLUMNS.join(',')];
  for (const r of epochs) lines.push(HISTORY_COLUMNS.map((c) => (Number.isFinite(r[c]) ? String(r[c]) : '')).join(','));
  return `${lines.join('\n')}\n`;
}

/** JSON has no NaN: a run without validation writes null there. */
function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

/** Both files, each via a temporary file and a rename, so a reader never sees half a file. */
export function writeHistory(paths: { historyJson: string; historyCsv: string }, config: object, epochs: readonly EpochRecord[]): void {
  writeFileAtomic(paths.historyJson, historyJson(config, epochs), 'the history');
  writeFileAtomic(paths.historyCsv, historyCsv(epochs), 'the history');
}
