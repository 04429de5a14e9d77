/**
 * Every compute backend in one place: choosing, loading and releasing it.
 *
 * Backends are imported only when asked for, so a cpu or wasm run never loads Dawn (webgpu) or
 * libtensorflow. `auto` prefers, in order: TensorFlow's C library if the user installed it, a hardware
 * WebGPU adapter, then wasm (XNNPACK, one thread under Node). All of them run the project's gradients
 * (registry.ts); wasm and cpu also run its kernels. Choosing among several GPUs: webgpu-adapters.ts.
 */
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { isTrainpoolError, TrainpoolError } from '../util/errors.js';
import { adapterName, describeAdapter, isSoftware, listAdapters, noAdapterError, type AdapterListing, type DawnModule } from './webgpu-adapters.js';
import { PROJECT_KERNELS, WEBGPU_FORWARD_KERNELS, registerProjectGradients, registerProjectKernels, unregisterProjectKernels } from './registry.js';
import { provideNavigatorGpu } from './tfjs-internals.js';
import { BACKEND_NAMES, type BackendName } from './names.js';

export { BACKEND_NAMES, type BackendName };

export interface BackendHandle {
  /** The backend in use (never 'auto'). */
  name: Exclude<BackendName, 'auto'>;
  /** Human-readable: the GPU adapter, or e.g. 'CPU (wasm SIMD, 1 thread)'. */
  device: string;
  /** Releases the device so the process can exit; a no-op for cpu and wasm. */
  close(): Promise<void>;
}

export interface BackendOptions {
  /** Which WebGPU adapter, in Dawn's high-performance order (see the header). Default: Dawn's first. */
  adapterIndex?: number;
  /**
   * Called with every adapter Dawn sees before one is opened; throws to refuse them (a worker that must see
   * exactly its own GPU: gpu-selection.ts checkSoleAdapter). Its GPU_SELECTION error is never a reason for
   * `auto` to fall back to wasm.
   */
  checkAdapters?: (adapters: AdapterListing[]) => void;
  /**
   * 'stock' runs tfjs' own kernels and gradients only, for before/after benchmarks (bench/engine.ts
   * --kernels stock); it must be chosen in a fresh process, as gradients registered earlier stay.
   * 'project-forward' adds, on webgpu, the project's forward convolution (webgpu/conv2d_forward.ts),
   * opt-in until a GPU measurement says it pays. Default 'project'.
   */
  kernels?: KernelSet;
}

export type KernelSet = 'project' | 'project-forward' | 'stock';
export const KERNEL_SETS: readonly KernelSet[] = ['project', 'project-forward', 'stock'];

/** The installed packages that provide tfjs' 'tensorflow' backend; never a dependency of this project. */
const TENSORFLOW_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];
const WEBGPU_PRIORITY = 3; // tfjs-backend-webgpu's own
/** The adapter limits tfjs-backend-webgpu asks for in full (its base.ts), rather than WebGPU's defaults. */
const DEVICE_LIMITS = [
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupSizeX',
  'maxComputeInvocationsPerWorkgroup',
] as const;

export async function setupBackend(name: BackendName, options: BackendOptions = {}): Promise<BackendHandle> {
  // Silences tfjs' console warnings (tfjs-core log.warn): the cpu backend's "looks like you are running
  // TensorFlow.js in Node.js" banner and notices about kernels re-registered here. (Per-op NaN checks are
  // the separate DEBUG flag, off by default.)
  tf.env().set('PROD', true);
  const kernels = options.kernels ?? 'project';
  const project = kernels !== 'stock';
  if (project) registerProjectGradients();
  switch (name) {
    case 'tensorflow':
      return setupTensorflow();
    case 'webgpu':
      return setupWebgpu(options, false, project, kernels === 'project-forward');
    case 'wasm':
      return setupWasm(project);
    case 'cpu':
      return setupCpu(project);
    case 'auto':
      return setupAuto(options);
    default: {
      const received: never = name;
      throw new TrainpoolError('USAGE', `backend must be one of ${BACKEND_NAMES.join(', ')}. Received: ${JSON.stringify(received)}`);
    }
  }
}

async function setupAuto(options: BackendOptions): Promise<BackendHandle> {
  if (tensorflowPackage() !== undefined) {
    try {
      const handle = await setupTensorflow();
      tf.tidy(() => tf.add(tf.scalar(1), tf.scalar(1)).dataSync()); // installed is not yet working: run an op
      return handle;
    } catch {
      // Fall through to the next choice; `--backend tensorflow` shows the reason.
    }
  }
  try {
    return await setupWebgpu(options, true, true);
  } catch (e) {
    if (isTrainpoolError(e, 'GPU_SELECTION')) throw e; // the wrong GPU is not a reason to train on the CPU
    // No hardware adapter: wasm.
  }
  return setupWasm(true);
}

/** The installed package that provides the 'tensorflow' backend, if any (auto prefers it). */
export function tensorflowPackage(): string | undefined {
  const resolve = createRequire(import.meta.url).resolve;
  return TENSORFLOW_PACKAGES.find((p) => {
    try {
      return resolve(p) !== '';
    } catch {
      return false;
    }
  });
}

async function setupTensorflow(): Promise<BackendHandle> {
  const pkg = tensorflowPackage();
  if (pkg === undefined) {
    throw new TrainpoolError(
      'BACKEND_UNAVAILABLE',
      'backend tensorflow needs @tensorflow/tfjs-node-gpu (or @tensorflow/tfjs-node), which is not installed. It is opt-in: ' +
        '`npm install @tensorflow/tfjs-node-gpu` downloads libtensorflow at install time and needs CUDA 11.2 and cuDNN 8.1 ' +
        '(no Hopper GPUs such as the H100). Or use --backend webgpu or --backend wasm.',
    );
  }
  const specifier: string = pkg; // not a literal: TypeScript and tsx must not require it to exist
  try {
    await import(specifier);
  } catch (e) {
    throw new TrainpoolError('BACKEND_UNAVAILABLE', `backend tensorflow: ${pkg} is installed but failed to load: ${(e as Error).message}`);
  }
  if (tf.findBackendFactory('tensorflow') === null) {
    throw new TrainpoolError(
      'BACKEND_UNAVAILABLE',
      `backend tensorflow: ${pkg} loaded but registered no 'tensorflow' backend with this project's @tensorflow/tfjs-core ` +
        `${tf.version_core}; install the same version (npm install ${pkg}@${tf.version_core}).`,
    );
  }
  await tf.setBackend('tensorflow');
  const device = pkg.endsWith('-gpu') ? 'libtensorflow (CUDA when available)' : 'libtensorflow (CPU)';
  return { name: 'tensorflow', device, close: async () => {} };
}

async function setupWasm(project: boolean): Promise<BackendHandle> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // Under Node the .wasm binaries are read from disk: point at the package's dist folder (a plain path with
  // a trailing separator is what Emscripten's Node loader expects; bundlers would move them).
  const dist = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm')) + '/';
  wasm.setWasmPaths(dist);
  // Emscripten's Node glue adds process-wide handlers that rethrow every uncaught exception and unhandled
  // rejection from inside its own one-line minified module, so Node prints that whole line (hundreds of
  // kilobytes) above the error. Node's own handling does the same without it: drop the handlers added.
  const before = { uncaughtException: process.listeners('uncaughtException'), unhandledRejection: process.listeners('unhandledRejection') };
  const ready = await tf.setBackend('wasm');
  for (const listener of process.listeners('uncaughtException')) {
    if (!before.uncaughtException.includes(listener)) process.removeListener('uncaughtException', listener);
  }
  for (const listener of process.listeners('unhandledRejection')) {
    if (!before.unhandledRejection.includes(listener)) process.removeListener('unhandledRejection', listener);
  }
  if (!ready) throw new TrainpoolError('BACKEND_UNAVAILABLE', `backend wasm failed to initialize from ${dist}`);
  if (project) registerProjectKernels('wasm');
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) ? ' SIMD' : '';
  const threads = wasm.getThreadsCount();
  return { name: 'wasm', device: `CPU (wasm${simd}, ${threads} thread${threads === 1 ? '' : 's'})`, close: async () => {} };
}

async function setupCpu(project: boolean): Promise<BackendHandle> {
  await import('@tensorflow/tfjs-backend-cpu');
  await tf.setBackend('cpu');
  // Only the filter gradient, measured on 8×32×32×32 3×3 and 8×16×16×64 3×3/2: the stock cpu
  // Conv2DBackpropFilter runs at 0.01 GFLOP/s, the project's at 0.4–0.5 (MiniGoogLeNet 0.03 → 0.38 img/s);
  // the stock Conv2DBackpropInput (1.0–1.2 GFLOP/s) beats the project's on cpu (0.4–0.8).
  if (project) registerProjectKernels('cpu');
  return { name: 'cpu', device: 'CPU (JavaScript, 1 thread)', close: async () => {} };
}

async function setupWebgpu({ adapterIndex, checkAdapters }: BackendOptions, hardwareOnly: boolean, project: boolean, forward = false): Promise<BackendHandle> {
  const dawn = (await import('webgpu')) as unknown as DawnModule;
  // GPUBufferUsage, GPUMapMode, ... must exist as globals before tfjs-backend-webgpu runs.
  Object.assign(globalThis, dawn.globals);
  checkAdapters?.(await listAdapters(dawn));
  // Adapter 0 is the one Dawn picks anyway; only others need the listing and the name flag.
  const flags = adapterIndex === undefined || adapterIndex === 0 ? [] : [`adapter=${await adapterName(dawn, adapterIndex)}`];
  let gpu: GPU | undefined = dawn.create(flags);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter === null) throw noAdapterError();
  const description = describeAdapter(adapter.info);
  if (hardwareOnly && isSoftware(adapter.info)) {
    throw new TrainpoolError('BACKEND_UNAVAILABLE', `backend auto skips software WebGPU adapters. Received: ${description}`);
  }
  const limits = adapter.limits;
  const device = await adapter
    .requestDevice({
      requiredFeatures: adapter.features.has('timestamp-query') ? ['timestamp-query'] : [],
      requiredLimits: Object.fromEntries(DEVICE_LIMITS.map((name) => [name, limits[name]])),
    })
    .catch((e: Error) => {
      throw new TrainpoolError('BACKEND_UNAVAILABLE', `backend webgpu: adapter ${description} gave no device: ${e.message}`);
    });

  // tfjs-backend-webgpu checks navigator.gpu when imported and in WebGPUBackend's constructor. Node 20 has
  // no navigator; Node 21+ has one without gpu.
  const restoreNavigator = provideNavigatorGpu(gpu);

  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await device.queue.onSubmittedWorkDone();
    if (tf.findBackendFactory('webgpu') !== null) tf.removeBackend('webgpu'); // WebGPUBackend.dispose(): frees its buffers
    // dawn.node keeps Node's event loop busy (a setImmediate loop, AsyncRunner.cpp) while any of its promises
    // is pending, and the webgpu README warns that the object `create` returned keeps Node alive while
    // reachable (https://issues.chromium.org/issues/387965810): destroy the device, which settles its
    // promises (device.lost), and drop every reference.
    device.destroy();
    restoreNavigator();
    gpu = undefined;
  };

  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  // Our own factory, so that tfjs uses this adapter and device (its own asks navigator.gpu again).
  if (tf.findBackendFactory('webgpu') !== null) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, adapter.info), WEBGPU_PRIORITY);
  if (!(await tf.setBackend('webgpu'))) {
    await close();
    throw new TrainpoolError('BACKEND_UNAVAILABLE', `backend webgpu: tfjs-backend-webgpu failed to start on ${description}`);
  }
  // Ours go over tfjs' own (registry.ts says which and why); 'stock' puts tfjs' back.
  if (project) registerProjectKernels('webgpu', forward ? [...PROJECT_KERNELS.webgpu, ...WEBGPU_FORWARD_KERNELS] : PROJECT_KERNELS.webgpu);
  else unregisterProjectKernels('webgpu');
  return { name: 'webgpu', device: description, close };
}

export interface BackendDescription {
  name: Exclude<BackendName, 'auto'>;
  available: boolean;
  detail: string;
}

/**
 * What each backend would run on here: whether it is available, and its adapters or why not. The webgpu
 * tests use it to find an adapter, and to skip saying why without one (test/helpers/webgpu.ts,
 * test/webgpu.test.ts). Loads Dawn.
 */
export async function describeBackends(): Promise<BackendDescription[]> {
  const tensorflow = tensorflowPackage();
  let webgpu: BackendDescription;
  try {
    const dawn = (await import('webgpu')) as unknown as DawnModule;
    const adapters = await listAdapters(dawn);
    const detail = adapters.map((a, i) => `adapter ${i}: ${a.name} (${a.backend})`).join('; ');
    webgpu = { name: 'webgpu', available: adapters.length > 0, detail: detail || 'no adapter (needs a Vulkan driver)' };
  } catch (e) {
    webgpu = { name: 'webgpu', available: false, detail: `Dawn failed to load: ${(e as Error).message}` };
  }
  return [
    { name: 'tensorflow', available: tensorflow !== undefined, detail: tensorflow ?? 'not installed (npm install @tensorflow/tfjs-node-gpu)' },
    webgpu,
    { name: 'wasm', available: true, detail: 'CPU, XNNPACK, one thread under Node' },
    { name: 'cpu', available: true, detail: 'CPU, plain JavaScript (slow; for tests)' },
  ];
}
