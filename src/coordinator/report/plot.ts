/**
 * The training plot: train/val loss and accuracy against epoch on one axis, as the tutorial draws it
 * with matplotlib's "ggplot" style. Drawn declaratively with Vega-Lite (theme: vega-themes' ggplot2
 * grey panel and white grid; line colours: matplotlib's ggplot cycle), rendered to SVG by Vega and to
 * PNG by resvg with a bundled DejaVu Sans, so text is legible on machines without system fonts.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { ggplot2 } from 'vega-themes';
import type { EpochRecord } from '../trainer.js';

const require = createRequire(import.meta.url);
const FONT_DIR = path.join(path.dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');
const FONT_FILES = ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf'].map((f) => path.join(FONT_DIR, f));
const FONT = 'DejaVu Sans';

/** matplotlib's ggplot style colour cycle (mpl-data/stylelib/ggplot.mplstyle). */
const GGPLOT_COLORS = ['#E24A33', '#348ABD', '#988ED5', '#777777'];
/** One vocabulary: the legend says what the history JSON and CSV columns say. */
const SERIES = ['loss', 'val_loss', 'acc', 'val_acc'] as const;

export interface PlotOptions {
  title: string;
  width?: number;
  height?: number;
}

/** Whole-epoch ticks, about ten of them: Vega's own choice puts ticks at half epochs for short runs. */
function epochTicks(history: readonly EpochRecord[]): number[] {
  const first = history[0]?.epoch ?? 1;
  const last = Math.max(2, history.at(-1)?.epoch ?? 1);
  const span = last - first;
  const step = [1, 2, 5, 10, 20, 50, 100, 200, 500].find((s) => span / s <= 10) ?? Math.ceil(span / 10);
  const ticks = [];
  for (let e = Math.ceil(first / step) * step; e <= last; e += step) if (e >= first) ticks.push(e);
  if (ticks[0] !== first) ticks.unshift(first);
  return ticks;
}

export function plotSpec(history: readonly EpochRecord[], o: PlotOptions): TopLevelSpec {
  const values = history.flatMap((r) =>
    SERIES.filter((s) => Number.isFinite(r[s])).map((s) => ({ epoch: r.epoch, series: s, value: r[s] })),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: o.title, fontSize: 18, font: FONT, fontWeight: 'normal' },
    width: o.width ?? 720,
    height: o.height ?? 440,
    padding: 16,
    data: { values },
    mark: { type: 'line', strokeWidth: 2, point: history.length <= 20 ? { size: 30 } : false },
    encoding: {
      x: {
        field: 'epoch',
        type: 'quantitative',
        title: 'Epoch #',
        scale: { domain: [history.length ? history[0].epoch : 1, Math.max(2, history.at(-1)?.epoch ?? 1)], nice: false },
        axis: { values: epochTicks(history), format: 'd' },
      },
      y: { field: 'value', type: 'quantitative', title: 'Loss/Accuracy', scale: { zero: true } },
      color: {
        field: 'series',
        type: 'nominal',
        title: null,
        sort: [...SERIES],
        scale: { domain: [...SERIES], range: GGPLOT_COLORS },
        legend: { orient: 'top-right', fillColor: '#ffffffcc', padding: 8, labelFontSize: 13, symbolType: 'stroke' },
      },
    },
    config: {
      ...ggplot2,
      font: FONT,
      // ggplot2's grey panel with white grid lines; the theme sets group fill, which Vega-Lite's view ignores.
      view: { fill: '#E5E5E5', stroke: null },
      axis: { ...ggplot2.axis, labelFontSize: 12, titleFontSize: 14 },
    },
  } as TopLevelSpec;
}

/** Renders the plot as PNG bytes. */
export async function renderPlot(history: readonly EpochRecord[], o: PlotOptions): Promise<Buffer> {
  const { spec } = compile(plotSpec(history, o));
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG(2);
    const png = new Resvg(svg, {
      background: '#ffffff',
      font: { fontFiles: FONT_FILES, loadSystemFonts: false, defaultFontFamily: FONT, sansSerifFamily: FONT },
    }).render();
    return png.asPng();
  } finally {
    view.finalize();
  }
}
