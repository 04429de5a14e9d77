/** SupervisedWorker: replacement of a worker that dies or hangs, and the limit on retries. */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseChaos } from '../src/coordinator/run.js';
import { SupervisedWorker } from '../src/coordinator/supervisor.js';
import type { WorkerConfig } from '../src/protocol/messages.js';

const config = (compute: Partial<Extract<WorkerConfig['compute'], { kind: 'fake' }>> = {}): WorkerConfig => ({
  rank: 1,
  model: { name: 'tiny', width: 16, height: 16, depth: 3, classes: 4, seed: 1 },
  backend: 'cpu',
  gpu: null,
  compute: { kind: 'fake', delayMs: 0, trainableSize: 10, statsSize: 2, ...compute },
  layoutHash: 'fake',
});
const shard = (v: number) => ({ x: new Float32Array(16 * 16 * 3).fill(v), labels: new Uint8Array([1]), dropoutSeed: 0 });
const state = { version: 3, data: new Float32Array(12).fill(0.5) };

const open: SupervisedWorker[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((w) => w.close()));
});
const supervised = (o: ConstructorParameters<typeof SupervisedWorker>[0]) => {
  const w = new SupervisedWorker(o);
  open.push(w);
  return w;
};

describe('SupervisedWorker', () => {
  it('replaces a hung worker after its deadline and re-runs the step with the current weights', async () => {
    const steady = supervised({ worker: { config: config() } });
    // A deadline far above a fake step's few ms even with both cores busy, and a first request (start-up)
    // with all the time it needs: only the hang can miss its deadline.
    const hung = supervised({ worker: { config: config({ hangAtRequest: 2 }), requestTimeoutMs: 2_000, firstRequestTimeoutMs: 60_000 } });
    await Promise.all([steady.start(), hung.start()]);
    for (const v of [1, 2]) {
      const a = await steady.computeGradients(shard(v), state);
      const b = await hung.computeGradients(shard(v), state);
      expect(Array.from(b.grads)).toEqual(Array.from(a.grads));
    }
    expect(hung.restarts).toBe(1);
    expect(steady.restarts).toBe(0);
    // The replacement got the weights with the retried request: fake gradients depend on state[0].
    expect(hung.worker!.statesSent).toBe(1);
  });

  it('replaces a worker killed mid-step', async () => {
    const w = supervised({ worker: { config: config({ delayMs: 300 }) }, killAtSteps: new Set([2]) });
    await w.start();
    await w.computeGradients(shard(1), state);
    const firstPid = w.worker!.pid;
    const again = await w.computeGradients(shard(2), state);
    expect(again.grads[0]).toBeCloseTo((2 + 0.5) * 1e-6, 12);
    expect(w.restarts).toBe(1);
    expect(w.worker!.pid).not.toBe(firstPid);
  });

  it('replaces a worker killed mid-validation and re-runs the chunk: the same sums as an unharmed worker', async () => {
    const steady = supervised({ worker: { config: config({ delayMs: 300 }) } });
    const killed = supervised({ worker: { config: config({ delayMs: 300 }) }, killAtEvaluations: new Set([2]) });
    await Promise.all([steady.start(), killed.start()]);
    for (const v of [1, 2, 3]) expect(await killed.evaluate(shard(v), state)).toEqual(await steady.evaluate(shard(v), state));
    expect(killed.restarts).toBe(1);
    expect(steady.restarts).toBe(0);
  });

  it('logs what it does, for the operator: the fault injected, the failure (attempt, during what) and the replacement', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const w = supervised({ worker: { config: config({ delayMs: 300 }) }, killAtSteps: new Set([2]), poisonAtSteps: new Set([3]), killAtEvaluations: new Set([1]), logger });
    await w.start();
    const first = w.worker!.pid;
    await w.computeGradients(shard(1), state);
    await w.computeGradients(shard(2), state);
    const poisoned = await w.computeGradients(shard(3), state);
    expect(Array.from(poisoned.grads).every(Number.isNaN)).toBe(true);
    await w.evaluate(shard(1), state);
    const pick = (l: Record<string, unknown>) => ({ msg: l.msg, worker: l.worker, step: l.step, chunk: l.chunk, attempt: l.attempt, during: l.during, restarts: l.restarts });
    expect(lines.map(pick)).toEqual([
      { msg: 'worker ready', worker: 1, restarts: 0 },
      { msg: 'chaos: killing the worker mid-step', worker: 1, step: 2 },
      { msg: 'worker failed', worker: 1, attempt: 1, during: 'computeGradients' },
      { msg: 'worker ready', worker: 1, restarts: 1 },
      { msg: 'chaos: poisoning the gradients with NaN', worker: 1, step: 3 },
      { msg: 'chaos: killing the worker mid-validation', worker: 1, chunk: 1 },
      { msg: 'worker failed', worker: 1, attempt: 1, during: 'evaluate' },
      { msg: 'worker ready', worker: 1, restarts: 2 },
    ].map((l) => pick(l)));
    expect(lines[0].pid).toBe(first);
    expect(lines[1].pid).toBe(first);
    // (killed right after the send, the worker fails either while the request is written or while it is busy)
    expect(String(lines[2].err)).toMatch(new RegExp(`^worker 1 \\(CPU, pid ${first}\\)(: sending computeGradients failed| was killed by SIGKILL)`));
  });

  it('counts failures in a row only: a success between them starts the count again', async () => {
    // Killed in steps 1, 2 and 3, each time once: three failures, never two in a row with a limit of 2.
    const w = supervised({ worker: { config: config() }, killAtSteps: new Set([1, 2, 3]), maxConsecutiveFailures: 2 });
    await w.start();
    for (const v of [1, 2, 3, 4]) {
      const r = await w.computeGradients(shard(v), state);
      expect(r.grads[0]).toBeCloseTo((v + 0.5) * 1e-6, 12);
    }
    expect(w.restarts).toBe(3);
  });

  it('gives up after three failures in a row, naming the worker and the last error', async () => {
    const w = supervised({ worker: { config: { ...config(), compute: { kind: 'model' }, backend: 'tensorflow' } } });
    await expect(w.start()).rejects.toThrow(
      /^worker 1 \(CPU\) failed 3 times in a row, giving up; last error: worker 1 \(CPU, pid \d+\) failed: .*tfjs-node-gpu.*\[BACKEND_UNAVAILABLE\]$/,
    );
  });
});

describe('SupervisedWorker: what it does not retry, and closing', () => {
  const gpu = (o: Partial<NonNullable<WorkerConfig['gpu']>> = {}) => ({ index: 2, name: 'Test GPU', exclusive: false, ...o });
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  it('stops at once when a worker cannot select its GPU: a machine problem, not a flaky worker', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const w = supervised({ worker: { config: config({ failInitCode: 'GPU_SELECTION' }) }, logger });
    const e = await w.start().then(() => null, (err: unknown) => err as Error & { code?: string });
    expect(e?.code).toBe('GPU_SELECTION');
    expect(e?.message).toMatch(/^worker 1 \(CPU, pid \d+\) failed: fake init failure \(GPU_SELECTION\)/);
    expect(w.restarts).toBe(0);
    expect(lines.filter((l) => l.msg === 'worker failed')).toEqual([]);
  });

  it('lets an error of its own (not a worker failure) propagate without a retry', async () => {
    const w = supervised({ worker: { config: { ...config(), gpu: gpu({ exclusive: true, pciBusId: 'bus 17' }) } } });
    const e = await w.start().then(() => null, (err: unknown) => err as Error & { code?: string });
    expect(e?.code).toBe('GPU_SELECTION');
    expect(e?.message).toBe('a PCI bus id must look like 00000000:17:00.0. Received: bus 17');
    expect(w.restarts).toBe(0);
  });

  it('names a GPU worker by its GPU when giving up', async () => {
    const w = supervised({ worker: { config: { ...config({ failInitCode: 'BACKEND_UNAVAILABLE' }), gpu: gpu() } } });
    await expect(w.start()).rejects.toThrow(/^worker 1 \(GPU 2\) failed 3 times in a row, giving up; last error: worker 1 \(GPU 2, pid \d+\) failed: fake init failure/);
    expect(w.restarts).toBe(2);
  });

  it('close() ends the worker process, and is a no-op before start', async () => {
    await supervised({ worker: { config: config() } }).close();
    const w = supervised({ worker: { config: config() } });
    await w.start();
    const pid = w.worker!.pid!;
    expect(alive(pid)).toBe(true);
    await w.close();
    expect(alive(pid)).toBe(false);
  });
});

describe('TRAINPOOL_CHAOS', () => {
  it('reads kill-worker, nan-grad and kill-eval faults by rank, joined with ;', () => {
    const c = parseChaos('kill-worker=0:3,1:7,0:9; nan-grad=1:5; kill-eval=1:2');
    expect(c.kill).toEqual(new Map([[0, new Set([3, 9])], [1, new Set([7])]]));
    expect(c.nan).toEqual(new Map([[1, new Set([5])]]));
    expect(c.killEval).toEqual(new Map([[1, new Set([2])]]));
    expect(parseChaos(undefined).kill.size + parseChaos('').nan.size).toBe(0);
  });

  it('refuses anything else with one line saying what it must look like', () => {
    expect(() => parseChaos('kill-worker=0')).toThrow('TRAINPOOL_CHAOS must look like kill-worker=0:3,1:7, nan-grad=0:5 or kill-eval=1:2. Received: kill-worker=0');
    expect(() => parseChaos('kill-eval=1:2;explode=0:1')).toThrow(/Received: kill-eval=1:2;explode=0:1$/);
  });
});
