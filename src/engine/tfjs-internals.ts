/**
 * Every private field, prototype and global of tfjs that the project reaches, typed, in one place, and a
 * check per package that says which of them a tfjs version no longer has. Written against tfjs 4.22.0
 * (tfjs-core, -layers, -backend-wasm, -backend-webgpu); after an upgrade run test/tfjs-internals*.test.ts
 * first. "Undocumented" below means declared public in the package's .d.ts but absent from tfjs' API docs
 * and changed without notice; "private" means declared private there.
 *
 * tfjs-backend-wasm (src/backend_wasm.ts):
 *   - BackendWasm.dataIdMap records {memoryOffset, id} (undocumented): composite/compose.ts `view` finds
 *     where a tensor lives on the heap, to lay a window of it out as another tensor without a copy.
 *   - BackendWasm.wasm.tfjs.disposeData(id) (undocumented; init() binds it to src/cc/backend.cc
 *     dispose_data) and dataIdMap.delete: compose.ts `disposeView` drops a view's records as
 *     BackendWasm.disposeData does, without its _free of memory the view does not own
 *     (wasmTensorRecord, forgetWasmTensor).
 * tfjs-backend-webgpu (src/backend_webgpu.ts), all for webgpu/pack.ts, which records buffer-to-buffer
 * copies into tfjs' own command encoder as tfjs' copyBuffer does (webgpuInternals):
 *   - WebGPUBackend.commandEncoder and commandQueueOwnedIds (private; the set is replaced at every submit).
 *   - WebGPUBackend.tensorMap records' `resource`, uploadToGPU, ensureCommandEncoderReady,
 *     endComputePassEncoder (undocumented).
 *   - WebGPUBackend.bufferManager's freeBuffers, numFreeBuffers, numBytesAllocated (undocumented): once a
 *     step is recorded for replay, replay/'s buffers replace the pool's free ones (releaseFreeWebgpuBuffers).
 *   - navigator.gpu, a global read when the package is imported (base.ts registers its own factory if it
 *     is there) and in WebGPUBackend's constructor (which throws without it): Node 20 has no navigator,
 *     so backend.ts provides one while a webgpu backend is open (provideNavigatorGpu).
 * tfjs-layers:
 *   - BatchNormalization's class (src/layers/normalization.ts), which tfjs-layers exports only as a
 *     factory: found in tfjs-core's SerializationMap (src/serialization.ts), where tfjs-layers registers
 *     it; patches/batch_norm_layer.ts replaces its prototype.call (batchNormalizationPrototype).
 *   - BatchNormalization's fields axis, epsilon, momentum, center, scale, gamma, beta, movingMean,
 *     movingVariance (private), which that patched call reads (BatchNormalizationFields).
 *   - Dropout.seed (private, src/layers/core.ts), which its call passes to the dropout op: model/
 *     minigooglenet.ts setDropoutSeed writes a fresh one before each step (setDropoutLayerSeed).
 *   - LayerVariable.read() returns the tf.Variable itself, not the snapshot its doc comment promises
 *     (src/variables.ts returns `this.val`): model/gradients.ts differentiates with respect to it
 *     (variableOf).
 *   - Importing @tensorflow/tfjs-layers registers all of tfjs-core's gradients: tfjs-core's Node bundle
 *     registers none, and tfjs-layers' bundles tfjs-core's register_all_gradients.ts, which writes to the
 *     registry tfjs-core shares through globalThis._tfGlobals (src/global_util.ts). registry.ts imports
 *     tfjs-layers before registerProjectGradients replaces four of them, which a later import would undo.
 * tfjs-core:
 *   - The `fused` export's conv2d (src/ops/fused_ops.ts) is a writable property, and tfjs-layers' Conv2D
 *     looks it up there at every call (src/layers/convolutional.ts): patches/input_convolution.ts
 *     replaces it (replaceFusedConv2d).
 *   - tf.dropout's mask (src/ops/dropout.ts, rand_util.ts): randomUniform drawn on the CPU by seedrandom's
 *     alea seeded with String(seed), then floor(u + keep) / keep. replay/replay.ts draws the same to write a
 *     replayed step's masks; its recording fails (and steps stay eager) if a version draws otherwise.
 * tfjs-backend-webgpu, for replay/replay.ts: ops on small tensors still on the CPU run there (its CPU
 *   forwarding), so a mask may be uploaded as u, floor(u + keep) or the quotient; every program's output is
 *   binding 0 of its bind group (webgpu_program.ts makeBindGroup), which the replay relies on to tell
 *   buffers the GPU writes from those it only reads.
 * tfjs-backend-cpu: nothing; the project uses only what it publishes (MathBackendCPU.data, makeTensorInfo).
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers'; // also registers its classes (BatchNormalization) with SerializationMap
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import type { DataId, Tensor } from '@tensorflow/tfjs-core';

/** The version every member below was read from. */
const WRITTEN_AGAINST = '4.22.0';

export type TfjsPackage = 'tfjs-core' | 'tfjs-layers' | 'tfjs-backend-wasm' | 'tfjs-backend-webgpu';

/** The running version; the backends' package.json, as importing them here would load them for every run. */
export function installedVersion(pkg: TfjsPackage): string {
  if (pkg === 'tfjs-core') return tf.version_core;
  if (pkg === 'tfjs-layers') return tfl.version_layers;
  return (createRequire(import.meta.url)(`@tensorflow/${pkg}/package.json`) as { version: string }).version;
}

// ---- tfjs-backend-wasm ----------------------------------------------------------------------------

export interface WasmTensorRecord {
  /** Byte offset of the values on the wasm heap. */
  memoryOffset: number;
  /** The C++ side's id of the tensor. */
  id: number;
}

export function wasmTensorRecord(backend: BackendWasm, dataId: DataId): WasmTensorRecord | undefined {
  return backend.dataIdMap.get(dataId);
}

/** Drops `dataId`'s JavaScript and C++ records (and any XNNPACK operator cached for its id), never its memory. */
export function forgetWasmTensor(backend: BackendWasm, dataId: DataId): void {
  const record = backend.dataIdMap.get(dataId);
  if (record === undefined) return;
  backend.wasm.tfjs.disposeData(record.id);
  backend.dataIdMap.delete(dataId);
}

// ---- tfjs-backend-webgpu --------------------------------------------------------------------------

export interface WebgpuInternals {
  tensorMap: { get(dataId: DataId): { resource: GPUBuffer | null } };
  /** null until ensureCommandEncoderReady(), and again after every submit. */
  commandEncoder: GPUCommandEncoder | null;
  /** Tensors read or written by recorded, unsubmitted commands, which disposeData must not release yet. */
  commandQueueOwnedIds: WeakSet<DataId>;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  /** Gives the tensor a GPUBuffer (tensorMap's resource), copying its values there if it has any. */
  uploadToGPU(dataId: DataId): void;
}

/** The backend itself, typed with its members above: read them at each use, as tfjs replaces some. */
export function webgpuInternals(backend: WebGPUBackend): WebgpuInternals {
  return backend as unknown as WebgpuInternals;
}

/** WebGPUBackend.bufferManager (undocumented; src/buffer_manager.ts): the pool of buffers tfjs reuses. */
interface WebgpuBufferPool {
  /** Free buffers by size-and-usage key. */
  freeBuffers: Map<string, GPUBuffer[]>;
  numFreeBuffers: number;
  numBytesAllocated: number;
}

/**
 * Destroys the pool's free buffers and returns their bytes: a recorded step (replay/) owns buffers of its
 * own, so the ones tfjs kept for the next eager step would double the memory. The keys stay:
 * releaseBuffer stops pooling (and accounting) when the map is empty.
 */
export function releaseFreeWebgpuBuffers(backend: unknown): number {
  const pool = (backend as unknown as { bufferManager: WebgpuBufferPool }).bufferManager;
  let bytes = 0;
  for (const buffers of pool.freeBuffers.values()) {
    for (const b of buffers.splice(0)) {
      bytes += b.size;
      b.destroy();
    }
  }
  pool.numFreeBuffers = 0;
  pool.numBytesAllocated -= bytes;
  return bytes;
}

type NavigatorHolder = { navigator?: { gpu?: GPU } };

/** Sets navigator.gpu (and navigator where Node has none); returns what puts them back. */
export function provideNavigatorGpu(gpu: GPU): () => void {
  const holder = globalThis as NavigatorHolder;
  const ownNavigator = holder.navigator === undefined;
  if (ownNavigator) holder.navigator = {};
  Object.defineProperty(holder.navigator, 'gpu', { value: gpu, configurable: true, writable: true });
  // Holds no reference to `gpu`: Dawn's object keeps Node alive while reachable (backend.ts close()).
  return () => {
    if (holder.navigator !== undefined) delete holder.navigator.gpu;
    if (ownNavigator) delete holder.navigator;
  };
}

// ---- tfjs-layers ----------------------------------------------------------------------------------

/** What BatchNormalization.call reads of its layer (all private in tfjs-layers' .d.ts). */
export interface BatchNormalizationFields {
  axis: number;
  epsilon: number;
  momentum: number;
  center: boolean;
  scale: boolean;
  gamma: tfl.LayerVariable;
  beta: tfl.LayerVariable;
  movingMean: tfl.LayerVariable;
  movingVariance: tfl.LayerVariable;
}

export type BatchNormalizationCall = (this: BatchNormalizationFields, inputs: Tensor | Tensor[], kwargs: { training?: boolean }) => Tensor | Tensor[];

/** The prototype shared by every BatchNormalization layer, whose call may be replaced. */
export function batchNormalizationPrototype(): { call: BatchNormalizationCall } {
  const entry = tf.serialization.SerializationMap.getMap().classNameMap.BatchNormalization;
  if (entry === undefined) throw new Error('tfjs-layers registered no BatchNormalization class: this is a bug');
  return (entry[0] as unknown as { prototype: { call: BatchNormalizationCall } }).prototype;
}

/** Sets the seed a Dropout layer's next calls draw their mask from. */
export function setDropoutLayerSeed(layer: tfl.layers.Layer, seed: number): void {
  (layer as unknown as { seed: number }).seed = seed;
}

/** The tf.Variable a LayerVariable holds, to differentiate with respect to. */
export function variableOf(w: tfl.LayerVariable): tf.Variable {
  return w.read() as tf.Variable;
}

// ---- tfjs-core ------------------------------------------------------------------------------------

export type FusedConv2d = typeof tf.fused.conv2d;

/** Replaces tf.fused.conv2d for every caller, tfjs-layers' Conv2D included. */
export function replaceFusedConv2d(f: FusedConv2d): void {
  tf.fused.conv2d = f;
}

// ---- Checks ---------------------------------------------------------------------------------------
// Each returns one line per member that is not as 4.22.0 had it; none means the accessors above work.

function problem(pkg: TfjsPackage, rule: string, received: string): string {
  return `${pkg} ${installedVersion(pkg)}: ${rule} (tfjs-internals.ts was written against ${WRITTEN_AGAINST}). Received: ${received}`;
}

function describe(value: unknown): string {
  if (value === undefined || value === null) return String(value);
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'no prototype'})`;
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** `value` if it has every method in `names`; otherwise what it is, or which of them it lacks. */
function withMethods(value: unknown, names: string[]): string | undefined {
  if (typeof value !== 'object' || value === null) return describe(value);
  const missing = names.filter((n) => typeof (value as Record<string, unknown>)[n] !== 'function');
  return missing.length === 0 ? undefined : `${describe(value)} without ${missing.join(', ')}`;
}

function field(holder: unknown, name: string): unknown {
  const readable = (typeof holder === 'object' && holder !== null) || typeof holder === 'function';
  return readable ? (holder as Record<string, unknown>)[name] : undefined;
}

/** A live wasm backend (tf.backend() after setupBackend('wasm')); writes and frees one 1-element tensor. */
export function checkWasmInternals(backend: unknown): string[] {
  const problems: string[] = [];
  const wasm = (rule: string, received: string) => problems.push(problem('tfjs-backend-wasm', rule, received));
  const map = field(backend, 'dataIdMap');
  const mapProblem = withMethods(map, ['get', 'delete']);
  if (mapProblem !== undefined) wasm('BackendWasm.dataIdMap must be a map with get and delete', mapProblem);
  const dispose = field(field(field(backend, 'wasm'), 'tfjs'), 'disposeData');
  if (typeof dispose !== 'function') wasm('BackendWasm.wasm.tfjs.disposeData must be a function', describe(dispose));
  if (mapProblem !== undefined || withMethods(backend, ['write', 'disposeData']) !== undefined) return problems;
  const b = backend as BackendWasm;
  const dataId = b.write(new Float32Array(1), [1], 'float32');
  const record = (map as { get(id: DataId): unknown }).get(dataId);
  b.disposeData(dataId);
  const memoryOffset = field(record, 'memoryOffset');
  const id = field(record, 'id');
  if (typeof memoryOffset !== 'number' || typeof id !== 'number') {
    wasm('a BackendWasm.dataIdMap record must hold a number memoryOffset and a number id', `memoryOffset ${describe(memoryOffset)}, id ${describe(id)}`);
  }
  return problems;
}

/** A live webgpu backend; makes, uploads and frees one 1-element tensor (and may start a command encoder). */
export function checkWebgpuInternals(backend: unknown): string[] {
  const problems: string[] = [];
  const webgpu = (rule: string, received: string) => problems.push(problem('tfjs-backend-webgpu', rule, received));
  const mapProblem = withMethods(field(backend, 'tensorMap'), ['get']);
  if (mapProblem !== undefined) webgpu('WebGPUBackend.tensorMap must be a map with get', mapProblem);
  const owned = withMethods(field(backend, 'commandQueueOwnedIds'), ['add']);
  if (owned !== undefined) webgpu('WebGPUBackend.commandQueueOwnedIds must be a set with add', owned);
  const pool = field(backend, 'bufferManager');
  if (!(field(pool, 'freeBuffers') instanceof Map) || typeof field(pool, 'numFreeBuffers') !== 'number' || typeof field(pool, 'numBytesAllocated') !== 'number') {
    webgpu('WebGPUBackend.bufferManager must have freeBuffers (a Map), numFreeBuffers and numBytesAllocated', describe(pool));
  }
  const methods = ['ensureCommandEncoderReady', 'endComputePassEncoder', 'uploadToGPU'];
  for (const name of methods) {
    const method = field(backend, name);
    if (typeof method !== 'function') webgpu(`WebGPUBackend.${name} must be a method`, describe(method));
  }
  if (problems.length > 0 || withMethods(backend, ['makeTensorInfo', 'disposeData']) !== undefined) return problems;
  const b = backend as WebGPUBackend;
  const internals = webgpuInternals(b);
  internals.ensureCommandEncoderReady();
  const encoder = withMethods(internals.commandEncoder, ['copyBufferToBuffer']);
  if (encoder !== undefined) webgpu('WebGPUBackend.commandEncoder must be a GPUCommandEncoder after ensureCommandEncoderReady()', encoder);
  const t = b.makeTensorInfo([1], 'float32');
  internals.uploadToGPU(t.dataId);
  const resource = field(internals.tensorMap.get(t.dataId), 'resource');
  b.disposeData(t.dataId);
  if (typeof field(resource, 'size') !== 'number') {
    webgpu("a WebGPUBackend.tensorMap record must hold the tensor's GPUBuffer as resource after uploadToGPU", describe(resource));
  }
  return problems;
}

/** Layers as tfjs-layers builds them, e.g. from buildModel (the Dropout before setDropoutSeed). */
export interface LayersSample {
  dropout: unknown;
  /** Built, with center and scale (the model's). */
  batchNormalization: unknown;
  /** Any of a model's weights. */
  variable: unknown;
}

/** What checkLayersInternals looks in besides the layers; tfjs-core's own by default. */
export interface LayersRegistries {
  classNameMap: unknown;
  getGradient: (kernelName: string) => unknown;
}

/** Kernels of the model whose gradients only tfjs-layers' import registers (none that the project replaces). */
const STOCK_GRADIENTS = [tf.Conv2D, tf.MaxPool, tf.AvgPool, tf.Concat];

const BATCH_NORMALIZATION_FIELDS: Record<keyof BatchNormalizationFields, 'number' | 'boolean' | 'variable'> = {
  axis: 'number',
  epsilon: 'number',
  momentum: 'number',
  center: 'boolean',
  scale: 'boolean',
  gamma: 'variable',
  beta: 'variable',
  movingMean: 'variable',
  movingVariance: 'variable',
};

export function checkLayersInternals(sample: LayersSample, registries: LayersRegistries = { classNameMap: tf.serialization.SerializationMap.getMap().classNameMap, getGradient: tf.getGradient }): string[] {
  const problems: string[] = [];
  const layers = (rule: string, received: string) => problems.push(problem('tfjs-layers', rule, received));
  const entry = field(registries.classNameMap, 'BatchNormalization');
  const call = field(field(Array.isArray(entry) ? entry[0] : undefined, 'prototype'), 'call');
  if (typeof call !== 'function') {
    layers("BatchNormalization must be in tfjs-core's SerializationMap as [class, fromConfig], with a call method on the class's prototype", describe(Array.isArray(entry) ? call : entry));
  }
  const wrong = Object.entries(BATCH_NORMALIZATION_FIELDS).filter(([name, kind]) => {
    const value = field(sample.batchNormalization, name);
    return kind === 'variable' ? withMethods(value, ['read', 'write']) !== undefined : typeof value !== kind;
  });
  if (wrong.length > 0) {
    layers(
      'a built BatchNormalization must hold axis, epsilon, momentum (numbers), center, scale (booleans), gamma, beta, movingMean, movingVariance (variables with read and write)',
      wrong.map(([name]) => `${name} ${describe(field(sample.batchNormalization, name))}`).join(', '),
    );
  }
  const hasSeed = typeof sample.dropout === 'object' && sample.dropout !== null && Object.hasOwn(sample.dropout, 'seed');
  const seed = field(sample.dropout, 'seed');
  if (!hasSeed || (seed !== undefined && typeof seed !== 'number')) {
    layers('Dropout.seed must be a field of the layer holding a number or undefined', hasSeed ? describe(seed) : 'no such field');
  }
  const read = field(sample.variable, 'read');
  const value = typeof read === 'function' ? (read as () => unknown).call(sample.variable) : undefined;
  if (!(value instanceof tf.Variable)) layers('LayerVariable.read() must return its tf.Variable itself', typeof read === 'function' ? describe(value) : `read ${describe(read)}`);
  const missing = STOCK_GRADIENTS.filter((k) => registries.getGradient(k) === undefined);
  if (missing.length > 0) layers(`importing @tensorflow/tfjs-layers must register tfjs-core's gradients (${STOCK_GRADIENTS.join(', ')})`, `none for ${missing.join(', ')}`);
  return problems;
}

/** tfjs-core's `fused` export (tf.fused by default). */
export function checkCoreInternals(fused: unknown = tf.fused): string[] {
  const descriptor = typeof fused === 'object' && fused !== null ? Object.getOwnPropertyDescriptor(fused, 'conv2d') : undefined;
  if (descriptor !== undefined && typeof descriptor.value === 'function' && descriptor.writable === true) return [];
  const received = descriptor === undefined ? describe(field(fused, 'conv2d')) : `${describe(descriptor.value ?? descriptor.get)}, writable ${descriptor.writable === true}`;
  return [problem('tfjs-core', 'fused.conv2d must be a writable function property of the fused export', received)];
}
