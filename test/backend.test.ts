/**
 * setupBackend: what each name resolves to, its errors, and the scenario the wasm kernels exist for:
 * a whole training step's gradient on wasm equals tfjs' stock cpu backend.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { describeBackends, setupBackend, type BackendName } from '../src/engine/backend.js';
import { adapterNameFor, parseAdapterListing } from '../src/engine/webgpu-adapters.js';
import { unregisterProjectKernels, registerProjectKernels } from '../src/engine/registry.js';
import { buildModel } from '../src/model/minigooglenet.js';
import { isTrainpoolError } from '../src/util/errors.js';
import { gradientsOf, relativeError } from './helpers/gradcheck.js';

/** The tiny model (BatchNormalization on, dropout 0) and a seeded batch of 4. */
function tinyStep(): { model: ReturnType<typeof buildModel>; x: tf.Tensor; y: tf.Tensor; dispose(): void } {
  const model = buildModel({ name: 'tiny', width: 32, height: 32, depth: 3, classes: 10, seed: 7, batchNorm: true, dropout: 0 });
  const x = tf.randomUniform([4, 32, 32, 3], 0, 1, 'float32', 11);
  const y = tf.oneHot(tf.tensor1d([3, 1, 4, 1], 'int32'), 10);
  return { model, x, y, dispose: () => (tf.dispose([x, y]), model.dispose()) };
}

describe('a training step on wasm', () => {
  it('gives the gradient of the stock cpu backend within 1e-4 relative, and leaks nothing', async () => {
    await setupBackend('cpu');
    unregisterProjectKernels('cpu'); // the reference is tfjs' own cpu kernels
    const step = tinyStep();
    const expected = await gradientsOf(step.model, step.x, step.y);
    registerProjectKernels('cpu');

    const handle = await setupBackend('wasm');
    expect(handle.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    const got = await gradientsOf(step.model, step.x, step.y); // also moves the weights to wasm
    const before = { tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() };
    await gradientsOf(step.model, step.x, step.y);
    expect({ tensors: tf.memory().numTensors, data: tf.engine().backend.numDataIds() }).toEqual(before);
    step.dispose();

    expect(got.length).toBe(expected.length);
    expect(relativeError(got, expected)).toBeLessThanOrEqual(1e-4);
    await handle.close();
  });
});

describe('setupBackend', () => {
  it('cpu reports a JavaScript CPU device', async () => {
    const handle = await setupBackend('cpu');
    expect({ name: handle.name, device: handle.device, current: tf.getBackend() }).toEqual({
      name: 'cpu',
      device: 'CPU (JavaScript, 1 thread)',
      current: 'cpu',
    });
    await handle.close();
  });

  it('wasm reports its SIMD build and one thread (tfjs runs wasm single-threaded under Node)', async () => {
    const handle = await setupBackend('wasm');
    expect(handle.device).toBe('CPU (wasm SIMD, 1 thread)');
    await handle.close();
  });

  it.each([
    ['an uncaught exception', "setTimeout(() => { throw new Error('boom from a test'); });"],
    ['an unhandled rejection', "Promise.reject(new Error('boom from a test'));"],
  ])('after wasm starts, %s ends the process with its own message, not the wasm module’s source', (_, crash) => {
    const backend = new URL('../src/engine/backend.ts', import.meta.url).pathname;
    const code = `const { setupBackend } = await import(${JSON.stringify(backend)}); await setupBackend('wasm'); ${crash}`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('boom from a test');
    // With Emscripten's handlers, Node printed their one-line minified module first: about 200 KB.
    expect(r.stderr.length).toBeLessThan(5_000);
  });

  it('tensorflow without @tensorflow/tfjs-node-gpu installed says how to opt in', async () => {
    const error = await setupBackend('tensorflow').catch((e: unknown) => e);
    expect(isTrainpoolError(error, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((error as Error).message).toBe(
      'backend tensorflow needs @tensorflow/tfjs-node-gpu (or @tensorflow/tfjs-node), which is not installed. It is opt-in: ' +
        '`npm install @tensorflow/tfjs-node-gpu` downloads libtensorflow at install time and needs CUDA 11.2 and cuDNN 8.1 ' +
        '(no Hopper GPUs such as the H100). Or use --backend webgpu or --backend wasm.',
    );
  });

  it('an unknown name is a usage error that lists the names', async () => {
    const error = await setupBackend('tpu' as BackendName).catch((e: unknown) => e);
    expect(isTrainpoolError(error, 'USAGE')).toBe(true);
    expect((error as Error).message).toBe('backend must be one of auto, webgpu, tensorflow, wasm, cpu. Received: "tpu"');
  });

  it('auto never settles on a software GPU: here wasm, or webgpu on a hardware adapter', async () => {
    const handle = await setupBackend('auto');
    try {
      expect(['webgpu', 'wasm', 'tensorflow']).toContain(handle.name);
      if (handle.name === 'webgpu') expect(handle.device).not.toContain('software');
    } finally {
      await handle.close();
    }
  });
});

describe('describeBackends', () => {
  it('lists every concrete backend once, in auto\'s order of preference, wasm and cpu always available', async () => {
    const list = await describeBackends();
    expect(list.map((b) => b.name)).toEqual(['tensorflow', 'webgpu', 'wasm', 'cpu']);
    expect(list.filter((b) => b.name === 'wasm' || b.name === 'cpu').every((b) => b.available)).toBe(true);
  });
});

describe('choosing the i-th WebGPU adapter', () => {
  // The shape of dawn.node's requestAdapter error when `adapter=` matches nothing (src/dawn/node/binding/GPU.cpp).
  const dawnError =
    "no suitable backends found\nAvailable adapters:\n * backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3'\n" +
    " * backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3'\n * backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)'";
  const adapters = parseAdapterListing(dawnError);

  it("reads dawn.node's list of adapters", () => {
    expect(adapters).toEqual([
      { backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3' },
      { backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3' },
      { backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)' },
    ]);
  });

  it('names an adapter whose name picks it: index 2 is llvmpipe', () => {
    expect(adapterNameFor(adapters, 2)).toBe('llvmpipe (LLVM 15.0.6, 256 bits)');
  });

  it('refuses the second of two identical GPUs rather than silently using the first', () => {
    expect(() => adapterNameFor(adapters, 1)).toThrow(
      "adapterIndex 1 cannot be selected: dawn.node selects adapters by name and adapter 0's name contains adapter 1's " +
        '(adapters: 0: NVIDIA H100 80GB HBM3 (vulkan); 1: NVIDIA H100 80GB HBM3 (vulkan); 2: llvmpipe (LLVM 15.0.6, 256 bits) (vulkan)). ' +
        'Give each worker one GPU from outside (Docker: NVIDIA_VISIBLE_DEVICES) and use adapterIndex 0.',
    );
  });

  it('refuses a name that is part of an earlier name, which Dawn would match first', () => {
    const similar = [
      { backend: 'vulkan', name: 'Radeon RX 7900 XTX' },
      { backend: 'vulkan', name: 'Radeon RX 7900' },
    ];
    expect(() => adapterNameFor(similar, 1)).toThrow("adapter 0's name contains adapter 1's");
    expect(adapterNameFor(similar, 0)).toBe('Radeon RX 7900 XTX');
  });

  it('an index past the list, or no adapter at all, says so', () => {
    expect(() => adapterNameFor(adapters, 3)).toThrow(/^adapterIndex must be an integer from 0 to 2 \(adapters: 0: NVIDIA H100/);
    expect(() => adapterNameFor([], 0)).toThrow(/^backend webgpu found no WebGPU adapter\. Dawn needs a Vulkan driver/);
  });
});
