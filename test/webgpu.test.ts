/**
 * The webgpu backend through Dawn: the same whole-step gradient as tfjs' stock cpu backend, a few
 * kernels, adapter selection, and a process that exits by itself after close().
 *
 * Runs when Dawn finds a WebGPU adapter. Machines without a GPU get a software one (Mesa's lavapipe) with
 *   eval "$(bash tools/soft-gpu.sh)"      # exports VK_DRIVER_FILES
 * before `npm test`; shapes here are small because lavapipe is a CPU pretending to be a GPU. Without an
 * adapter the suite is skipped, saying why, unless TRAINPOOL_REQUIRE_WEBGPU=1 makes that a failure.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { describeBackends, setupBackend } from '../src/engine/backend.js';
import { unregisterProjectKernels } from '../src/engine/registry.js';
import { buildModel } from '../src/model/minigooglenet.js';
import { isTrainpoolError } from '../src/util/errors.js';
import { gradientsOf, randomArray, relativeError, runKernel } from './helpers/gradcheck.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const webgpu = (await describeBackends()).find((b) => b.name === 'webgpu')!;
const required = process.env.TRAINPOOL_REQUIRE_WEBGPU === '1';
const skipReason = `no WebGPU adapter found (${webgpu.detail}); run eval "$(bash tools/soft-gpu.sh)" first, or set TRAINPOOL_REQUIRE_WEBGPU=1 to fail instead`;
if (!webgpu.available && !required) console.warn(`webgpu.test.ts skipped: ${skipReason}`);

describe.runIf(!webgpu.available && required)('webgpu, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('finds an adapter', () => {
    expect.fail(`TRAINPOOL_REQUIRE_WEBGPU=1 but ${skipReason.split(';')[0]}`);
  });
});

describe.skipIf(!webgpu.available)(webgpu.available ? `webgpu on ${webgpu.detail}` : `webgpu (skipped: ${skipReason})`, () => {
  /** Runs `f` on tfjs' stock cpu kernels, then on webgpu. */
  async function cpuThenWebgpu<T>(f: () => Promise<T>): Promise<[T, T]> {
    await setupBackend('cpu');
    unregisterProjectKernels('cpu');
    const expected = await f();
    const handle = await setupBackend('webgpu');
    try {
      return [expected, await f()];
    } finally {
      await handle.close();
    }
  }

  it('a training step of the tiny model gives the stock cpu gradient within 1e-4 relative', async () => {
    await setupBackend('cpu');
    const model = buildModel({ name: 'tiny', width: 16, height: 16, depth: 3, classes: 10, seed: 7, batchNorm: true, dropout: 0 });
    const x = tf.tensor4d(randomArray([2, 16, 16, 3], 5), [2, 16, 16, 3]);
    const y = tf.oneHot(tf.tensor1d([3, 8], 'int32'), 10);
    const [expected, got] = await cpuThenWebgpu(() => gradientsOf(model, x, y));
    tf.dispose([x, y]);
    model.dispose();
    expect(relativeError(got, expected)).toBeLessThanOrEqual(1e-4);
  });

  it.each([
    { title: '3×3 same stride 1, odd sizes', x: [2, 7, 5, 3], filter: [3, 3, 3, 5], strides: 1, pad: 'same' },
    { title: '3×3 valid stride 2', x: [2, 9, 9, 4], filter: [3, 3, 4, 6], strides: 2, pad: 'valid' },
  ] as const)('convolution gradients, $title, equal the stock cpu kernels', async (c) => {
    const x = [...c.x] as [number, number, number, number];
    const filter = [...c.filter] as [number, number, number, number];
    const y = tf.backend_util.computeConv2DInfo(x, filter, c.strides, 1, c.pad).outShape;
    const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC' };
    const both = async () => [
      await runKernel(tf.Conv2DBackpropFilter, { x: [randomArray(x, 1), x], dy: [randomArray(y, 2), y] }, { ...attrs, filterShape: filter }),
      await runKernel(tf.Conv2DBackpropInput, { dy: [randomArray(y, 2), y], filter: [randomArray(filter, 3), filter] }, { ...attrs, inputShape: x }),
    ];
    const [[dwCpu, dxCpu], [dwGpu, dxGpu]] = await cpuThenWebgpu(both);
    expect(relativeError(dwGpu, dwCpu)).toBeLessThanOrEqual(1e-4);
    expect(relativeError(dxGpu, dxCpu)).toBeLessThanOrEqual(1e-4);
  });

  it('the Sum and Mean gradients broadcast on the device: Mean over axis 0 weighted [1, 2, 4] plus Sum over axis 1, of 2×3, gives [[1.5, 2, 3], [1.5, 2, 3]]', async () => {
    const handle = await setupBackend('webgpu');
    try {
      const weights = tf.tensor1d([1, 2, 4]);
      const g = tf.grad((t: tf.Tensor) => tf.add(tf.sum(tf.mul(tf.mean(t, 0), weights)), tf.sum(tf.sum(t, 1))))(tf.zeros([2, 3]));
      expect(Array.from(await g.data())).toEqual([1.5, 2, 3, 1.5, 2, 3]);
      tf.dispose([g, weights]);
    } finally {
      await handle.close();
    }
  });

  it('adapterIndex 0 is the default adapter; one past the last names the adapters', async () => {
    const handle = await setupBackend('webgpu', { adapterIndex: 0 });
    expect(webgpu.detail).toContain('adapter 0: ');
    await handle.close();
    const count = webgpu.detail.split('; ').length;
    const error = await setupBackend('webgpu', { adapterIndex: count }).catch((e: unknown) => e);
    expect(isTrainpoolError(error, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((error as Error).message).toMatch(new RegExp(`^adapterIndex must be an integer from 0 to ${count - 1} \\(adapters: 0: .+\\)\\. Received: ${count}$`));
  });

  it('a process that trains one step on webgpu and closes the backend exits by itself within 5 s', async () => {
    const script = `
      import * as tf from '@tensorflow/tfjs-core';
      import { setupBackend } from '${ROOT}src/engine/backend.ts';
      import { buildModel } from '${ROOT}src/model/minigooglenet.ts';
      import { gradientsOf } from '${ROOT}test/helpers/gradcheck.ts';
      const handle = await setupBackend('webgpu');
      const model = buildModel({ name: 'tiny', width: 16, height: 16, depth: 3, classes: 10, seed: 1, dropout: 0 });
      const g = await gradientsOf(model, tf.zeros([2, 16, 16, 3]), tf.oneHot(tf.tensor1d([1, 2], 'int32'), 10));
      await handle.close();
      console.log('closed after a step with ' + g.length + ' gradients');`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let closedAt = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
      if (closedAt === 0 && stdout.includes('closed after a step')) closedAt = Date.now();
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    const hung = setTimeout(() => child.kill('SIGKILL'), 50_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(hung);
    const exitedAfter = Date.now() - closedAt;
    expect({ code, closed: closedAt > 0 }, `child stdout: ${stdout}\nstderr: ${stderr.slice(-2000)}`).toEqual({ code: 0, closed: true });
    expect(exitedAfter).toBeLessThan(5000);
  });
});
