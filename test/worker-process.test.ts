/** The worker process and its handle: handshake, failures, and that no process outlives its pipe. */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkerHandle } from '../src/coordinator/worker-handle.js';
import { Channel } from '../src/protocol/channel.js';
import { PROTOCOL_VERSION, type WorkerConfig } from '../src/protocol/messages.js';
import { FAKE_GRADIENT_PERIOD, FakeCompute } from '../src/worker/fake.js';
import { waitGone } from './helpers/process.js';

const fake = (o: Partial<WorkerConfig> = {}): WorkerConfig => ({
  rank: 0,
  model: { name: 'tiny', width: 16, height: 16, depth: 3, classes: 4, seed: 1 },
  backend: 'cpu',
  gpu: null,
  compute: { kind: 'fake', delayMs: 0, trainableSize: 10, statsSize: 2 },
  layoutHash: 'fake',
  ...o,
});


const workers: WorkerHandle[] = [];
const make = (config: WorkerConfig, o: Partial<ConstructorParameters<typeof WorkerHandle>[0]> = {}) => {
  const w = new WorkerHandle({ config, ...o });
  workers.push(w);
  return w;
};
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.close()));
});

const state = (version: number) => ({ version, data: new Float32Array(12).fill(version) });
const shard = { x: new Float32Array(16 * 16 * 3).fill(1), labels: new Uint8Array([2]), dropoutSeed: 0 };

describe('worker process', () => {
  it('completes the handshake and answers requests, with weights sent only when they changed', async () => {
    const w = make(fake());
    const ready = await w.start();
    expect(ready).toMatchObject({ type: 'ready', rank: 0, protocolVersion: PROTOCOL_VERSION, layoutHash: 'fake' });
    expect(w.state).toBe('ready');
    // Fake gradients are (mean(x) + state[0]) · (i + 1) · 1e-6: mean 1, state[0] = version.
    const a = await w.computeGradients(shard, state(1));
    expect(a.grads[0]).toBeCloseTo(2e-6, 12);
    const b = await w.computeGradients(shard, state(1)); // same version: no weights sent, same answer
    expect(b.grads).toEqual(a.grads);
    expect(w.statesSent).toBe(1);
    const c = await w.computeGradients(shard, state(5));
    expect(c.grads[0]).toBeCloseTo(6e-6, 12);
    expect(w.statesSent).toBe(2);
    await w.close();
    expect(w.state).toBe('stopped');
    expect(await waitGone(ready.pid)).toBe(true);
  });

  it('refuses a worker whose model has another weight layout', async () => {
    const w = make({ ...fake(), compute: { kind: 'model' }, layoutHash: 'not-this-one' });
    await expect(w.start()).rejects.toThrow(/^worker 0 \(CPU, pid \d+\) built a model whose weight layout [0-9a-f]{16} differs from the coordinator's not-this-one$/);
  });

  it('reports a backend that cannot load, with the worker’s reason', async () => {
    const w = make({ ...fake(), compute: { kind: 'model' }, backend: 'tensorflow' });
    await expect(w.start()).rejects.toThrow(/worker 0 \(CPU, pid \d+\) failed: .*tfjs-node-gpu.*\[BACKEND_UNAVAILABLE\]/);
  });

  it('names the worker, its state and the signal when it is killed mid-step', async () => {
    const w = make(fake({ compute: { kind: 'fake', delayMs: 5_000, trainableSize: 10, statsSize: 2 } }));
    const { pid } = await w.start();
    const pending = w.computeGradients(shard, state(1));
    setTimeout(() => w.kill('SIGKILL'), 100);
    await expect(pending).rejects.toThrow(`worker 0 (CPU, pid ${pid}) was killed by SIGKILL while busy`);
    expect(w.state).toBe('failed');
  });

  it('gives up on a worker that misses its deadline, and kills it', async () => {
    const w = make(fake({ compute: { kind: 'fake', delayMs: 5_000, trainableSize: 10, statsSize: 2 } }), { requestTimeoutMs: 200 });
    const { pid } = await w.start();
    await expect(w.computeGradients(shard, state(1))).rejects.toThrow(`worker 0 (CPU, pid ${pid}) did not answer computeGradients within 200 ms`);
    expect(await waitGone(pid)).toBe(true);
  });

  it('gives up on a worker that does not start in time, saying so, and kills it', async () => {
    // The fake answers init after 10 minutes, as a backend that hangs while loading would never answer.
    const w = make(fake({ compute: { kind: 'fake', delayMs: 0, trainableSize: 10, statsSize: 2, startDelayMs: 600_000 } }), { startTimeoutMs: 4_000, requestTimeoutMs: 100 });
    const error = await w.start().then(() => null, (e: Error) => e);
    const m = /^worker 0 \(CPU, pid (\d+)\) did not start within 4 s \(process, backend, model and handshake\)$/.exec(error?.message ?? '');
    expect(m, String(error)).not.toBeNull();
    expect(w.state).toBe('failed');
    expect(await waitGone(Number(m![1]))).toBe(true);
  });

  it('refuses another protocol version with a message, and exits', async () => {
    const entry = fileURLToPath(new URL('../src/worker/main.ts', import.meta.url));
    const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const child = spawn(process.execPath, ['--import', loader, entry], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    const messages: Record<string, unknown>[] = [];
    const channel = new Channel(child.stdio[3] as net.Socket, { message: (m) => messages.push(m), close: () => {} });
    await channel.send({ type: 'init', protocolVersion: 999, config: fake() });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(messages[0]).toMatchObject({ type: 'failed', code: 'PROTOCOL', message: `protocol version must be ${PROTOCOL_VERSION} (this worker's). Received: 999` });
    expect(code).toBe(1);
  });

  it('exits when the coordinator’s end of the pipe closes (no orphans)', async () => {
    const entry = fileURLToPath(new URL('../src/worker/main.ts', import.meta.url));
    const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const second = spawn(process.execPath, ['--import', loader, entry], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
    await new Promise((r) => setTimeout(r, 300));
    (second.stdio[3] as net.Socket).destroy();
    expect(await waitGone(second.pid!)).toBe(true);
  });
});

describe('fake compute', () => {
  it('gives every gradient its formula value, past the period it copies and in a partial last period', async () => {
    const n = 3 * FAKE_GRADIENT_PERIOD + 5;
    const f = new FakeCompute({ delayMs: 0, trainableSize: n, statsSize: 2 });
    f.setState(new Float32Array(n + 2).fill(0.25));
    const { grads } = await f.computeGradients({ x: new Float32Array(8).fill(2), labels: new Uint8Array([1]) });
    const want = Float32Array.from({ length: n }, (_, i) => (2 + 0.25) * 1e-6 * ((i % FAKE_GRADIENT_PERIOD) + 1));
    expect(grads).toEqual(want);
  });
});
