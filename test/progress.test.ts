/**
 * The per-epoch progress bar on a terminal (coordinator/report/progress.ts). cli-progress redraws on a
 * timer and EpochProgress computes img/s from the clock, so both run on vitest's fake clock: the figures
 * drawn are exact, and no assertion depends on how fast this machine is.
 */
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EpochProgress } from '../src/coordinator/report/progress.js';
import type { StepInfo } from '../src/coordinator/trainer.js';

/** A terminal of 160 columns that keeps what was drawn, escape sequences removed. */
function terminal(isTTY = true) {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  }) as unknown as NodeJS.WriteStream;
  Object.assign(stream, { isTTY, columns: 160 });
  // eslint-disable-next-line no-control-regex
  const text = () => chunks.join('').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '\n');
  return { stream, text, raw: () => chunks.join('') };
}

const info = (o: Partial<StepInfo>): StepInfo => ({
  epoch: 1, step: 1, steps: 4, loss: 0.5, acc: 0.25, images: 64, wallMs: 500, computeMs: 400, shardsReadyBeforeAsked: true, shardWaitMs: 0, ...o,
});

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('epoch progress bar', () => {
  it('draws the epoch, the steps done, img/s over the epoch so far and the running loss and accuracy', () => {
    const t = terminal();
    const bar = new EpochProgress(3, t.stream);
    bar.step(info({ step: 1, wallMs: 500 })); // the epoch began 500 ms ago: 64 images in 0.5 s
    vi.advanceTimersByTime(500);
    bar.step(info({ step: 2, loss: 0.123456, acc: 0.5 })); // 128 images in 1.0 s
    vi.advanceTimersByTime(200); // the bar redraws on its timer
    const drawn = t.text().split('\n');
    expect(drawn).toContain('Epoch 1/3 |████████████░░░░░░░░░░░░| 2/4 steps | 128 img/s | loss 0.1235 | acc 0.5000 | ETA 1s');
    bar.stop();
  });

  it('starts a new bar at each epoch’s first step, its rate counted from that epoch only', () => {
    const t = terminal();
    const bar = new EpochProgress(2, t.stream);
    bar.step(info({ epoch: 1, step: 4, steps: 4, wallMs: 100 }));
    vi.advanceTimersByTime(10_000); // a long validation: not counted in the next epoch's rate
    bar.step(info({ epoch: 2, step: 1, steps: 4, images: 32, wallMs: 250 }));
    vi.advanceTimersByTime(200);
    const after = t.text().split('\n');
    // (cli-progress's ETA needs two samples of the new bar; it is not ours to test)
    expect(after).toContainEqual(expect.stringMatching(/^Epoch 2\/2 \|█{6}░{18}\| 1\/4 steps \| 128 img\/s \| loss 0\.5000 \| acc 0\.2500 \| ETA/));
    bar.stop();
  });

  it('clears its line when stopped, so the epoch line that follows stands alone, and shows the cursor again', () => {
    const t = terminal();
    const bar = new EpochProgress(1, t.stream);
    bar.step(info({}));
    vi.advanceTimersByTime(200);
    const before = t.raw().length;
    bar.stop();
    const tail = t.raw().slice(before);
    expect(tail).toContain('\x1b[2K'); // erase the line
    expect(tail).toContain('\x1b[?25h'); // cursor shown
    bar.stop(); // a second stop (the run's end after the last epoch line) draws nothing more
    expect(t.raw().length).toBe(before + tail.length);
  });

  it('draws nothing when stderr is not a terminal (logs and CI carry only the epoch lines)', () => {
    const t = terminal(false);
    const bar = new EpochProgress(2, t.stream);
    for (let s = 1; s <= 4; s++) bar.step(info({ step: s }));
    vi.advanceTimersByTime(1_000);
    bar.stop();
    expect(t.raw()).toBe('');
  });
});
