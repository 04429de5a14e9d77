/**
 * WebGPU adapters through dawn.node: listing them, choosing the i-th, describing one.
 *
 * Choosing among several GPUs (`adapterIndex`), from dawn.node's source (src/dawn/node/binding/GPU.cpp,
 * GPU::requestAdapter) and the Vulkan loader's documentation:
 *   - dawn.node's only selector is the `adapter=<text>` flag of `create`: the first adapter, in Dawn's
 *     order for the request (Vulkan on Linux, sorted by powerPreference), whose AdapterInfo.device contains
 *     <text>. With no match requestAdapter rejects and lists every adapter ("* backend: 'vulkan', name:
 *     '…'"), the only enumeration dawn.node offers; this module parses that list.
 *   - Identical GPUs (8× H100) have identical names, so only the first of them can be named. powerPreference
 *     only orders discrete before integrated. The Vulkan loader's VK_LOADER_DEVICE_SELECT (vendor:device,
 *     reorders), VK_LOADER_DEVICE_ID_FILTER / VENDOR_ID_FILTER (loader ≥ 1.4.326) and Mesa's
 *     MESA_VK_DEVICE_SELECT all match PCI ids, which identical cards share; VK_DRIVER_FILES and
 *     VK_LOADER_DRIVERS_SELECT pick drivers, not devices; NVIDIA's Vulkan driver ignores CUDA_VISIBLE_DEVICES.
 *   - So `adapterIndex` i selects by name when adapter i's name picks it, and otherwise fails saying so,
 *     rather than silently stacking every worker on the first GPU. trainpool's workers on a machine of
 *     several GPUs do not rely on it: Mesa's device-select layer, which does select by PCI address, leaves
 *     each of them its GPU alone, as adapter 0 (gpu-selection.ts).
 */
import { TrainpoolError } from '../util/errors.js';

export interface DawnModule {
  create(flags: string[]): GPU;
  globals: object;
}

export interface AdapterListing {
  backend: string;
  name: string;
}

/** Dawn's adapters for a high-performance request, read from the error a non-matching `adapter=` gives. */
export async function listAdapters(dawn: DawnModule): Promise<AdapterListing[]> {
  const probe = dawn.create(['adapter=trainpool: list every adapter']);
  try {
    await probe.requestAdapter({ powerPreference: 'high-performance' });
    return []; // resolved (null): Dawn enumerated no adapter at all
  } catch (e) {
    return parseAdapterListing(String((e as Error).message ?? e));
  }
}

/** The "Available adapters:" lines of dawn.node's requestAdapter error (GPU.cpp). */
export function parseAdapterListing(message: string): AdapterListing[] {
  return [...message.matchAll(/\* backend: '([^']*)', name: '([^']*)'/g)].map((m) => ({ backend: m[1], name: m[2] }));
}

export function noAdapterError(): TrainpoolError {
  return new TrainpoolError(
    'BACKEND_UNAVAILABLE',
    "backend webgpu found no WebGPU adapter. Dawn needs a Vulkan driver: install libvulkan1 and the GPU vendor's " +
      'Vulkan ICD, and in Docker set NVIDIA_DRIVER_CAPABILITIES to include graphics (e.g. all). Or use --backend wasm.',
  );
}

export async function adapterName(dawn: DawnModule, index: number): Promise<string> {
  return adapterNameFor(await listAdapters(dawn), index);
}

/** The `adapter=` text that makes dawn.node pick adapters[index], or why there is none. */
export function adapterNameFor(adapters: AdapterListing[], index: number): string {
  if (adapters.length === 0) throw noAdapterError();
  const listing = adapters.map((a, i) => `${i}: ${a.name} (${a.backend})`).join('; ');
  if (!Number.isInteger(index) || index < 0 || index >= adapters.length) {
    throw new TrainpoolError('BACKEND_UNAVAILABLE', `adapterIndex must be an integer from 0 to ${adapters.length - 1} (adapters: ${listing}). Received: ${index}`);
  }
  const name = adapters[index].name;
  const picked = adapters.findIndex((a) => a.name.includes(name)); // Dawn's rule: the first whose name contains it
  if (picked !== index) {
    throw new TrainpoolError(
      'BACKEND_UNAVAILABLE',
      `adapterIndex ${index} cannot be selected: dawn.node selects adapters by name and adapter ${picked}'s name contains ` +
        `adapter ${index}'s (adapters: ${listing}). Give each worker one GPU from outside (Docker: NVIDIA_VISIBLE_DEVICES) and use adapterIndex 0.`,
    );
  }
  return name;
}

export function describeAdapter(info: GPUAdapterInfo): string {
  const what = info.description || info.device || 'unnamed adapter';
  const details = [info.vendor, info.architecture].filter((s) => s !== '');
  if (isSoftware(info) && !details.includes('software')) details.push('software');
  return `${what} (${details.join(', ')})`;
}

/** lavapipe/llvmpipe, SwiftShader and other CPU implementations: correct, but slower than wasm. */
export function isSoftware(info: GPUAdapterInfo): boolean {
  const fallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return fallback || /software|llvmpipe|lavapipe|swiftshader/i.test(text);
}
