/**
 * The per-epoch progress bar (steps, img/s, ETA) on a terminal, drawn by cli-progress on stderr. Off
 * when stderr is not a TTY, so logs and CI output carry only the epoch lines.
 */
import cliProgress from 'cli-progress';
import type { StepInfo } from '../trainer.js';

export class EpochProgress {
  private bar: cliProgress.SingleBar | null = null;
  private epochStarted = 0;
  private images = 0;

  constructor(
    private readonly epochs: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly enabled = stream.isTTY === true,
  ) {}

  step(s: StepInfo): void {
    if (!this.enabled) return;
    if (!this.bar || s.step === 1) {
      this.stop();
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.stream,
          format: `Epoch ${s.epoch}/${this.epochs} |{bar}| {value}/{total} steps | {rate} img/s | loss {loss} | acc {acc} | ETA {eta_formatted}`,
          barsize: 24,
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(s.steps, 0, { rate: '-', loss: '-', acc: '-' });
      this.epochStarted = performance.now() - s.wallMs;
      this.images = 0;
    }
    this.images += s.images;
    const seconds = (performance.now() - this.epochStarted) / 1000;
    this.bar.update(s.step, {
      rate: Math.round(this.images / seconds).toLocaleString('en-US'),
      loss: s.loss.toFixed(4),
      acc: s.acc.toFixed(4),
    });
  }

  /** Removes the bar (before an epoch line is printed, and at the end). */
  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
