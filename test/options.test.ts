import { describe, expect, it, vi } from 'vitest';
import { buildCommand, helpText, parseArgs } from '../src/cli/options.js';
import { OPTIONS, PRESETS, presetSummary } from '../src/config/config.js';
import type { ResolvedConfig } from '../src/config/config.js';

const none: { index: number; name: string }[] = [];
const twoGpus = [{ index: 0, name: 'NVIDIA H100' }, { index: 1, name: 'NVIDIA H100' }];
const ok = (args: string[], gpus = none) => parseArgs(args, gpus) as ResolvedConfig;
const err = (args: string[], gpus = none) => {
  try {
    parseArgs(args, gpus);
  } catch (e) {
    expect((e as { code: string }).code).toBe('USAGE');
    return (e as Error).message;
  }
  throw new Error('expected a usage error');
};

describe('command-line defaults', () => {
  it('reproduces the tutorial unless told otherwise', () => {
    const c = ok(['--output', 'out/plot.png', '--seed', '3']);
    expect(c).toMatchObject({
      epochs: 70, lr: 0.005, batchSize: 64, momentum: 0.9, seed: 3, model: 'minigooglenet', dataset: 'cifar10',
      scaleLr: false, workers: 1, gpus: [], limitTrain: null, limitTest: null,
    });
  });

  it('uses every GPU found when --gpus is not given, and the GPU backend they need', () => {
    const c = ok(['--output', 'p.png'], twoGpus);
    expect(c.workers).toBe(2);
    expect(c.gpus.map((g) => g.index)).toEqual([0, 1]);
    expect(c.backend).toBe('auto');
  });

  it('runs CPU workers on wasm with --gpus 0 and backend auto', () => {
    const c = ok(['--output', 'p.png', '--gpus', '0', '--workers', '3'], twoGpus);
    expect(c).toMatchObject({ workers: 3, gpus: [], backend: 'wasm' });
  });

  it('puts history, model and checkpoints beside the plot, with its stem', () => {
    const c = ok(['--output', '/tmp/x/run1.png']);
    expect(c.outputs).toEqual({
      png: '/tmp/x/run1.png',
      historyJson: '/tmp/x/run1.history.json',
      historyCsv: '/tmp/x/run1.history.csv',
      modelDir: '/tmp/x/run1.model',
      checkpointDir: '/tmp/x/run1.checkpoints',
    });
  });

  it('draws a seed when none is given', () => {
    expect(Number.isInteger(ok(['--output', 'p.png']).seed)).toBe(true);
  });

  it('needs no --output for --summary', () => {
    expect(ok(['--summary']).outputs).toBeNull();
  });

  it('logs info to a log file and only warnings to stderr by default', () => {
    expect(ok(['--output', 'p.png']).logLevel).toBe('warn');
    expect(ok(['--output', 'p.png', '--log-file', 'x.log']).logLevel).toBe('info');
    expect(ok(['--output', 'p.png', '--log-level', 'debug']).logLevel).toBe('debug');
  });
});

describe('command-line rules', () => {
  it.each([
    [['--epochs', 'ten'], '--epochs must be an integer from 1 to 100000. Received: --epochs=ten'],
    [['--epochs', '-3'], '--epochs must be an integer from 1 to 100000. Received: --epochs=-3'],
    [['--epochs', '0'], '--epochs must be an integer from 1 to 100000. Received: --epochs=0'],
    [['--epochs', '2.5'], '--epochs must be an integer from 1 to 100000. Received: --epochs=2.5'],
    [['--lr', 'fast'], '--lr must be a number in (0, 10]. Received: --lr=fast'],
    [['--lr', '-0.1'], '--lr must be a number in (0, 10]. Received: --lr=-0.1'],
    [['--lr', '0'], '--lr must be a number in (0, 10]. Received: --lr=0'],
    [['--batch-size', '-64'], '--batch-size must be an integer from 1 to 65536. Received: --batch-size=-64'],
    [['--momentum', '1'], '--momentum must be a number in [0, 1). Received: --momentum=1'],
    [['--seed', 'abc'], '--seed must be an integer from 0 to 4294967295. Received: --seed=abc'],
    [['--workers', '0'], '--workers must be an integer from 1 to 256. Received: --workers=0'],
    [['--limit-train', '0'], '--limit-train must be an integer ≥ 1. Received: --limit-train=0'],
    [['--limit-test', '-1'], '--limit-test must be an integer ≥ 0. Received: --limit-test=-1'],
    [['--momentum', '-0.5'], '--momentum must be a number in [0, 1). Received: --momentum=-0.5'],
    [['--seed', '4294967296'], '--seed must be an integer from 0 to 4294967295. Received: --seed=4294967296'],
    [['--augment-threads', '65'], '--augment-threads must be an integer from 1 to 64. Received: --augment-threads=65'],
    [['--augment-threads', '0'], '--augment-threads must be an integer from 1 to 64. Received: --augment-threads=0'],
    [['--backend', 'cuda'], '--backend must be one of auto, webgpu, tensorflow, wasm, cpu. Received: --backend=cuda'],
    [['--dataset', 'mnist'], '--dataset must be one of cifar10, fashion-mnist, synthetic. Received: --dataset=mnist'],
    [['--model', 'resnet'], '--model must be one of minigooglenet, small, tiny. Received: --model=resnet'],
    [['--log-level', 'loud'], '--log-level must be one of fatal, error, warn, info, debug, trace, silent. Received: --log-level=loud'],
    [['--download', '--dataset', 'synthetic'], '--download fetches CIFAR-10 only. Received: --dataset=synthetic'],
  ])('%j → %s', (args, message) => {
    expect(err(['--output', 'p.png', ...args])).toBe(message);
  });

  it('accepts each number rule at its bounds: seed 0 and 2³²−1, 64 augment threads, no test images, momentum 0', () => {
    expect(ok(['--output', 'p.png', '--seed', '4294967295']).seed).toBe(4294967295);
    expect(ok(['--output', 'p.png', '--seed', '0']).seed).toBe(0);
    expect(ok(['--output', 'p.png', '--augment-threads', '64']).augmentThreads).toBe(64);
    expect(ok(['--output', 'p.png', '--limit-test', '0']).limitTest).toBe(0);
    expect(ok(['--output', 'p.png', '--momentum', '0']).momentum).toBe(0);
  });

  it('requires --output, as a .png', () => {
    expect(err([])).toBe('--output is required: the path of the PNG plot, e.g. --output plot.png');
    expect(err(['--output', 'plot.jpg'])).toBe('--output must be a .png path. Received: --output=plot.jpg');
  });

  it('refuses more GPUs than found and lists what was found', () => {
    expect(err(['--output', 'p.png', '--gpus', '4'])).toBe('--gpus 4 asks for more GPUs than this machine has. Found 0: none');
    expect(err(['--output', 'p.png', '--gpus', '4'], twoGpus)).toBe(
      '--gpus 4 asks for more GPUs than this machine has. Found 2: 0: NVIDIA H100; 1: NVIDIA H100',
    );
  });

  it('refuses a CPU backend on GPU workers and --workers beside --gpus', () => {
    expect(err(['--output', 'p.png', '--gpus', '2', '--backend', 'wasm'], twoGpus)).toMatch(/^--backend wasm runs on the CPU/);
    expect(err(['--output', 'p.png', '--gpus', '2', '--workers', '2'], twoGpus)).toBe(
      '--workers applies to --gpus 0 only; with --gpus 2 there is one worker per GPU',
    );
  });

  it('names an unknown option', () => {
    expect(err(['--output', 'p.png', '--epoch', '3'])).toMatch(/unknown option '--epoch'/);
  });

  it('refuses to build a command from an option declared under a key that is not its flag (a bug in OPTIONS)', () => {
    const options = OPTIONS as unknown as Record<string, { flag: string; help: string }>;
    options.stepLimit = { flag: '--step-count <n>', help: 'declared under the wrong key' };
    try {
      expect(() => buildCommand()).toThrow('option --step-count <n> must be declared as stepCount. Received: stepLimit: this is a bug');
    } finally {
      delete options.stepLimit;
    }
    expect(() => buildCommand()).not.toThrow();
  });

  it('answers --help and -h without an error', () => {
    expect(parseArgs(['--help'], none)).toBe('help');
    expect(parseArgs(['--epochs', '3', '-h'], none)).toBe('help');
  });

  it('refuses a stray argument, and says so in its own words without commander’s "error: " prefix', () => {
    expect(err(['--output', 'p.png', 'extra'])).toBe("too many arguments. Expected 0 arguments but got 1.");
    expect(err(['--output', 'p.png', '--epoch', '3'])).toBe("unknown option '--epoch'\n(Did you mean --epochs?)");
  });

  it('leaves printing to main(): commander itself writes nothing, for help or for errors', () => {
    const writes = [vi.spyOn(process.stdout, 'write'), vi.spyOn(process.stderr, 'write')];
    try {
      parseArgs(['--help'], none);
      err(['--bogus']);
      for (const w of writes) expect(w).not.toHaveBeenCalled();
    } finally {
      for (const w of writes) w.mockRestore();
    }
  });

  it('the help text names the program, says what it does and shows each option with its default', () => {
    const text = helpText();
    expect(text.split('\n').slice(0, 3)).toEqual(['Usage: train [options]', '', 'Train an image classifier with data parallelism: one worker process per GPU.']);
    expect(text).toMatch(/^ {2}-h, --help +show this help$/m);
    expect(text).toMatch(/^ {2}--epochs <n> +.*\(default: "70"\)$/m);
    // an option without a default shows none (not "undefined")
    expect(text).toMatch(/^ {2}--output <png> +the training plot; history, model and checkpoints go\n +beside it\n {2}--/m);
    expect(text).not.toContain('undefined');
  });
});

describe('--preset and --no-augment', () => {
  it('--preset quick fills the options not given, and counts them as asked for', () => {
    const c = ok(['--output', 'p.png', '--preset', 'quick'], twoGpus);
    // On a GPU machine too: the preset asks for CPU workers, so no GPU is taken.
    expect(c).toMatchObject({ preset: 'quick', dataset: 'fashion-mnist', gpus: [], backend: 'wasm', workers: 2, augment: false });
    expect(c.preciseBn).toBeGreaterThan(0);
    expect(c.limitTrain).toBe(PRESETS.quick.values.limitTrain);
    expect(c.explicit).toEqual(expect.arrayContaining(['preset', 'dataset', 'model', 'epochs', 'preciseBn']));
    expect(c.explicit).not.toContain('momentum');
  });

  it('an option given explicitly wins over the preset, whichever side of --preset it is on', () => {
    const c = ok(['--output', 'p.png', '--epochs', '5', '--preset', 'quick', '--lr', '0.2', '--precise-bn']);
    expect(c).toMatchObject({ epochs: 5, lr: 0.2, preciseBn: 200, dataset: 'fashion-mnist' });
  });

  it('--gpus N beside the preset runs one worker per GPU, not the preset\'s --workers (which only CPU runs take)', () => {
    const c = ok(['--output', 'p.png', '--preset', 'quick', '--gpus', '1'], twoGpus);
    expect(c.workers).toBe(1);
    expect(c.gpus.map((g) => g.index)).toEqual([0]);
  });

  it('names the presets when the name is unknown', () => {
    expect(err(['--output', 'p.png', '--preset', 'fast'])).toBe('--preset must be one of quick. Received: --preset=fast');
  });

  it('augments by default; --no-augment turns it off', () => {
    expect(ok(['--output', 'p.png']).augment).toBe(true);
    expect(ok(['--output', 'p.png', '--no-augment']).augment).toBe(false);
    expect(ok(['--output', 'p.png', '--no-augment']).explicit).toContain('augment');
  });

  it('writes a preset back as the options it stands for, --no-augment included', () => {
    const line = presetSummary('quick');
    expect(line).toMatch(/^--dataset fashion-mnist /);
    expect(line).toContain(' --no-augment');
    // Every option of the summary parses, and parses to what the preset gives.
    const c = ok(['--output', 'p.png', ...line.split(' ')]);
    const p = ok(['--output', 'p.png', '--preset', 'quick']);
    for (const k of ['dataset', 'model', 'workers', 'epochs', 'lr', 'batchSize', 'limitTrain', 'augment', 'preciseBn'] as const) expect(c[k]).toEqual(p[k]);
  });
});
