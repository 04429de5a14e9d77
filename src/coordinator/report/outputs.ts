/**
 * The run's outputs at its end as one set: the history (JSON and CSV), the plot and the model are all
 * written to temporary names first and renamed only once every one of them is whole. A disk that fills
 * while the model is exported then leaves the previous set as it was, not a new plot beside an old model,
 * and no temporary file behind.
 */
import { renameSync } from 'node:fs';
import type { OutputPaths } from '../../config/config.js';
import { removeQuietly, temporaryName, writeFailed, writeWhole } from '../../util/files.js';
import { replaceFolder } from '../../model/export.js';

export interface OutputSet {
  historyJson: string;
  historyCsv: string;
  /** The plot's PNG bytes; absent when there is no epoch to plot. */
  png?: Uint8Array;
  /** Writes the model's files into the folder it is given; absent for a run that stopped early. */
  model?: (dir: string) => Promise<void>;
}

export async function writeOutputSet(paths: OutputPaths, set: OutputSet): Promise<void> {
  const files: [string, string, Uint8Array | string][] = [
    ['the history', paths.historyJson, set.historyJson],
    ['the history', paths.historyCsv, set.historyCsv],
  ];
  if (set.png) files.push(['the plot', paths.png, set.png]);
  const temporaries: string[] = [];
  const writing = async (what: string, file: string, write: (tmp: string) => void | Promise<void>) => {
    const tmp = temporaryName(file);
    temporaries.push(tmp);
    try {
      await write(tmp);
    } catch (e) {
      for (const t of temporaries) removeQuietly(t);
      throw writeFailed(what, file, e);
    }
  };
  for (const [what, file, data] of files) await writing(what, file, (tmp) => writeWhole(tmp, data, false));
  if (set.model) await writing('the model', paths.modelDir, set.model);
  // Every file is whole: renames within their folders, which do not need space.
  for (const [what, file] of files) {
    try {
      renameSync(temporaryName(file), file);
    } catch (e) {
      for (const t of temporaries) removeQuietly(t);
      throw writeFailed(what, file, e);
    }
  }
  if (set.model) replaceFolder(temporaryName(paths.modelDir), paths.modelDir);
}
