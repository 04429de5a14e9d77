/**
 * src/engine/tfjs-internals.ts: on the installed tfjs every check finds the members the project reaches
 * (tfjs-backend-wasm's, tfjs-layers' and tfjs-core's, with the wasm and the cpu backend), and each check
 * names the member, the package and its version when one is missing. The webgpu check on a live backend is
 * in tfjs-internals-webgpu.test.ts: as in the other test files, Dawn and wasm get a process each.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { setupBackend } from '../src/engine/backend.js';
import {
  checkCoreInternals,
  checkLayersInternals,
  checkWasmInternals,
  checkWebgpuInternals,
  releaseFreeWebgpuBuffers,
  installedVersion,
  wasmTensorRecord,
  type LayersSample,
  type TfjsPackage,
} from '../src/engine/tfjs-internals.js';
import { buildModel, dropoutLayers } from '../src/model/minigooglenet.js';

const TINY = { name: 'tiny', width: 16, height: 16, depth: 3, classes: 10, seed: 1 } as const;

function sampleOf(model: tfl.LayersModel): LayersSample {
  return {
    dropout: dropoutLayers(model)[0],
    batchNormalization: model.layers.find((l) => l.getClassName() === 'BatchNormalization'),
    variable: model.trainableWeights[0],
  };
}

/** The message's fixed parts around `rule` and `received`. */
function message(pkg: TfjsPackage, rule: string, received: string): string {
  return `${pkg} ${installedVersion(pkg)}: ${rule} (tfjs-internals.ts was written against 4.22.0). Received: ${received}`;
}

describe.each(['wasm', 'cpu'] as const)('the installed tfjs-core and tfjs-layers, on %s', (backend) => {
  it("have every member the project reaches, in a tiny model's layers", async () => {
    await setupBackend(backend);
    const before = tf.memory().numTensors;
    const model = buildModel(TINY);
    expect(checkLayersInternals(sampleOf(model))).toEqual([]);
    expect(checkCoreInternals()).toEqual([]);
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('the installed tfjs-backend-wasm', () => {
  it('has every member the project reaches, and the check leaves no tensor behind', async () => {
    await setupBackend('wasm');
    const backend = tf.backend() as BackendWasm;
    const [tensors, dataIds] = [tf.memory().numTensors, backend.numDataIds()];
    expect(checkWasmInternals(backend)).toEqual([]);
    expect([tf.memory().numTensors, backend.numDataIds()]).toEqual([tensors, dataIds]);
  });

  it("gives a tensor's record the heap offset that the public getMemoryOffset gives", async () => {
    await setupBackend('wasm');
    const backend = tf.backend() as BackendWasm;
    const t = tf.tensor1d([1, 2, 3]);
    expect(wasmTensorRecord(backend, t.dataId)?.memoryOffset).toBe(backend.getMemoryOffset(t.dataId));
    t.dispose();
  });
});

describe('each check names what is missing, the package and its version', () => {
  it('wasm: a backend without dataIdMap or wasm', () => {
    expect(checkWasmInternals({})).toEqual([
      message('tfjs-backend-wasm', 'BackendWasm.dataIdMap must be a map with get and delete', 'undefined'),
      message('tfjs-backend-wasm', 'BackendWasm.wasm.tfjs.disposeData must be a function', 'undefined'),
    ]);
  });

  it('wasm: a dataIdMap without delete, whose records have no memoryOffset', () => {
    const disposed: object[] = [];
    const backend = {
      dataIdMap: { get: () => ({ id: 3 }) },
      wasm: { tfjs: { disposeData: () => {} } },
      write: () => ({}),
      disposeData: (dataId: object) => disposed.push(dataId),
    };
    expect(checkWasmInternals(backend)).toEqual([
      message('tfjs-backend-wasm', 'BackendWasm.dataIdMap must be a map with get and delete', 'an object (Object) without delete'),
    ]);
    backend.dataIdMap = Object.assign(backend.dataIdMap, { delete: () => true });
    expect(checkWasmInternals(backend)).toEqual([
      message('tfjs-backend-wasm', 'a BackendWasm.dataIdMap record must hold a number memoryOffset and a number id', 'memoryOffset undefined, id number 3'),
    ]);
    expect(disposed).toHaveLength(1); // the tensor it wrote
  });

  it('webgpu: a backend without any of the members', () => {
    expect(checkWebgpuInternals({})).toEqual([
      message('tfjs-backend-webgpu', 'WebGPUBackend.tensorMap must be a map with get', 'undefined'),
      message('tfjs-backend-webgpu', 'WebGPUBackend.commandQueueOwnedIds must be a set with add', 'undefined'),
      message('tfjs-backend-webgpu', 'WebGPUBackend.bufferManager must have freeBuffers (a Map), numFreeBuffers and numBytesAllocated', 'undefined'),
      message('tfjs-backend-webgpu', 'WebGPUBackend.ensureCommandEncoderReady must be a method', 'undefined'),
      message('tfjs-backend-webgpu', 'WebGPUBackend.endComputePassEncoder must be a method', 'undefined'),
      message('tfjs-backend-webgpu', 'WebGPUBackend.uploadToGPU must be a method', 'undefined'),
    ]);
  });

  it('webgpu: no command encoder after ensureCommandEncoderReady, records without a buffer', () => {
    const backend = {
      tensorMap: { get: () => ({ resource: null }) },
      commandQueueOwnedIds: new WeakSet(),
      bufferManager: { freeBuffers: new Map(), numFreeBuffers: 0, numBytesAllocated: 0 },
      commandEncoder: null,
      ensureCommandEncoderReady: () => {},
      endComputePassEncoder: () => {},
      uploadToGPU: () => {},
      makeTensorInfo: () => ({ dataId: {}, shape: [1], dtype: 'float32' }),
      disposeData: () => true,
    };
    expect(checkWebgpuInternals(backend)).toEqual([
      message('tfjs-backend-webgpu', 'WebGPUBackend.commandEncoder must be a GPUCommandEncoder after ensureCommandEncoderReady()', 'null'),
      message('tfjs-backend-webgpu', "a WebGPUBackend.tensorMap record must hold the tensor's GPUBuffer as resource after uploadToGPU", 'null'),
    ]);
  });

  it('releaseFreeWebgpuBuffers destroys the pool’s free buffers, keeps its keys and its used buffers, and counts the bytes', () => {
    const destroyed: number[] = [];
    const buffer = (size: number) => ({ size, destroy: () => destroyed.push(size) });
    const pool = { freeBuffers: new Map([['16_140', [buffer(16), buffer(16)]], ['64_140', [buffer(64)]]]), numFreeBuffers: 3, numBytesAllocated: 96 + 1000 };
    expect(releaseFreeWebgpuBuffers({ bufferManager: pool })).toBe(96);
    expect(destroyed).toEqual([16, 16, 64]);
    // Keys kept: tfjs' releaseBuffer returns early (and stops pooling) when the map is empty.
    expect([...pool.freeBuffers.entries()]).toEqual([['16_140', []], ['64_140', []]]);
    expect(pool.numFreeBuffers).toBe(0);
    expect(pool.numBytesAllocated).toBe(1000);
  });

  it('layers: no BatchNormalization class, a Dropout without seed, no variables, a snapshot read, no gradients', () => {
    const sample = {
      dropout: { rate: 0.5 },
      batchNormalization: { axis: -1, epsilon: 1e-3, momentum: 0.99, center: true, scale: 'yes' },
      variable: { read: () => 'snapshot' },
    };
    expect(checkLayersInternals(sample, { classNameMap: {}, getGradient: (k) => (k === tf.Conv2D ? {} : undefined) })).toEqual([
      message('tfjs-layers', "BatchNormalization must be in tfjs-core's SerializationMap as [class, fromConfig], with a call method on the class's prototype", 'undefined'),
      message(
        'tfjs-layers',
        'a built BatchNormalization must hold axis, epsilon, momentum (numbers), center, scale (booleans), gamma, beta, movingMean, movingVariance (variables with read and write)',
        'scale string "yes", gamma undefined, beta undefined, movingMean undefined, movingVariance undefined',
      ),
      message('tfjs-layers', 'Dropout.seed must be a field of the layer holding a number or undefined', 'no such field'),
      message('tfjs-layers', 'LayerVariable.read() must return its tf.Variable itself', 'string "snapshot"'),
      message('tfjs-layers', "importing @tensorflow/tfjs-layers must register tfjs-core's gradients (Conv2D, MaxPool, AvgPool, Concat)", 'none for MaxPool, AvgPool, Concat'),
    ]);
  });

  it('layers: a class without call, a seed that is not a number, a variable without read', async () => {
    await setupBackend('cpu');
    const before = tf.memory().numTensors;
    const classNameMap = { BatchNormalization: [class {}, () => ({})] };
    const model = buildModel(TINY);
    const sample = { ...sampleOf(model), dropout: { seed: '7' }, variable: {} };
    expect(checkLayersInternals(sample, { classNameMap, getGradient: tf.getGradient })).toEqual([
      message('tfjs-layers', "BatchNormalization must be in tfjs-core's SerializationMap as [class, fromConfig], with a call method on the class's prototype", 'undefined'),
      message('tfjs-layers', 'Dropout.seed must be a field of the layer holding a number or undefined', 'string "7"'),
      message('tfjs-layers', 'LayerVariable.read() must return its tf.Variable itself', 'read undefined'),
    ]);
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('core: a fused export without conv2d, or with a read-only one', () => {
    expect(checkCoreInternals({})).toEqual([message('tfjs-core', 'fused.conv2d must be a writable function property of the fused export', 'undefined')]);
    expect(checkCoreInternals(Object.freeze({ conv2d: () => {} }))).toEqual([
      message('tfjs-core', 'fused.conv2d must be a writable function property of the fused export', 'a function, writable false'),
    ]);
  });
});
