/**
 * Giving each webgpu worker its own GPU on a machine with several, identical ones included.
 *
 * dawn.node selects an adapter only by a substring of its name (webgpu-adapters.ts), and identical cards
 * share the name; the Vulkan loader's own filters match vendor/device ids, which they share too. Mesa's
 * device-select layer, an implicit Vulkan layer that works over any driver's ICD (NVIDIA's included),
 * selects by PCI address instead (src/vulkan/device-select-layer/device_select_layer.c):
 * `DRI_PRIME=pci-DDDD_BB_DD_F` puts that device first, and a trailing `!` hides every other one. So a
 * worker is started with its GPU's tag, and checks at start-up that Dawn sees exactly one adapter, the one
 * expected (a wrong tag silently leaves every device visible).
 *
 * Debian 12's own Mesa (22.3) selects the wrong device and knows no `!`; Mesa 25 (bookworm-backports) is
 * right. A layer's manifest is how to tell them apart without loading it: 22.3's declares Vulkan 1.3.211,
 * 25.0's 1.4.303, and 1.4 is the first Mesa version that was checked to select correctly.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { TrainpoolError } from '../util/errors.js';
import type { AdapterListing } from './webgpu-adapters.js';

/** Mesa's device-select tag for a PCI bus id as nvidia-smi writes it ("00000000:17:00.0" → "pci-0000_17_00_0!"). */
export function driPrimeTag(pciBusId: string): string {
  const m = /^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i.exec(pciBusId.trim());
  if (!m) throw new TrainpoolError('GPU_SELECTION', `a PCI bus id must look like 00000000:17:00.0. Received: ${pciBusId}`);
  const hex = (s: string | undefined, width: number) => (s ?? '0').toLowerCase().slice(-width).padStart(width, '0');
  // Mesa prints the domain as %04x: PCI domains are 16 bits, nvidia-smi pads them to 8 digits.
  return `pci-${hex(m[1], 4)}_${hex(m[2], 2)}_${hex(m[3], 2)}_${m[4]}!`;
}

/**
 * The environment of a worker process that must see only the GPU at `pciBusId`: the tag, with DISPLAY and
 * WAYLAND_DISPLAY cleared (NVIDIA's Vulkan driver shows one GPU only when they point at another vendor's
 * display server).
 */
export function selectionEnv(env: NodeJS.ProcessEnv, pciBusId: string): NodeJS.ProcessEnv {
  const { DISPLAY: _display, WAYLAND_DISPLAY: _wayland, ...rest } = env;
  return { ...rest, DRI_PRIME: driPrimeTag(pciBusId) };
}

export interface DeviceSelectLayer {
  manifest: string;
  /** The Vulkan version the manifest declares (api_version). */
  apiVersion: string;
  /** False when the manifest's disable_environment variable is set. */
  enabled: boolean;
}

/** The implicit-layer folders of the Vulkan loader on Linux, in its search order (LoaderLayerInterface.md). */
export function implicitLayerDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const home = env.HOME ?? os.homedir();
  const configHome = env.XDG_CONFIG_HOME || path.join(home, '.config');
  const configDirs = (env.XDG_CONFIG_DIRS || '/etc/xdg').split(':');
  const dataHome = env.XDG_DATA_HOME || path.join(home, '.local/share');
  const dataDirs = (env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':');
  return [configHome, ...configDirs, '/etc', dataHome, ...dataDirs].filter(Boolean).map((d) => path.join(d, 'vulkan', 'implicit_layer.d'));
}

/** Every manifest of Mesa's device-select layer the loader would find (whatever the layer's name in it). */
export function findDeviceSelectLayers(env: NodeJS.ProcessEnv = process.env): DeviceSelectLayer[] {
  const found: DeviceSelectLayer[] = [];
  for (const dir of new Set(implicitLayerDirs(env))) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
      const manifest = path.join(dir, name);
      let layer: { library_path?: string; api_version?: string; disable_environment?: Record<string, string> } | undefined;
      try {
        layer = JSON.parse(readFileSync(manifest, 'utf8')).layer;
      } catch {
        continue; // not ours to judge: the loader skips a broken manifest too
      }
      if (!layer?.library_path?.includes('VkLayer_MESA_device_select')) continue;
      const disabled = Object.keys(layer.disable_environment ?? {}).some((v) => env[v] !== undefined);
      found.push({ manifest, apiVersion: layer.api_version ?? 'unknown', enabled: !disabled });
    }
  }
  return found;
}

const INSTALL =
  "install Mesa's Vulkan drivers 25 or newer, which bring it (Debian 12: add bookworm-backports to apt's sources, then " +
  'apt-get install -t bookworm-backports mesa-vulkan-drivers; the Docker image has it)';

/** Why the layers found cannot select one GPU per worker, or null when they can. */
export function deviceSelectProblem(layers: DeviceSelectLayer[]): string | null {
  const enabled = layers.filter((l) => l.enabled);
  if (enabled.length === 0) {
    const off = layers.length ? ` (${layers.map((l) => l.manifest).join(', ')} ${layers.length === 1 ? 'is' : 'are'} turned off by ${layers.length === 1 ? 'its' : 'their'} disable_environment variable)` : '';
    return `the webgpu backend on a machine with several GPUs needs Mesa's device-select Vulkan layer, and none is enabled${off}: ${INSTALL}`;
  }
  const old = enabled.filter((l) => !atLeast(l.apiVersion, [1, 4]));
  if (old.length) {
    return (
      `the webgpu backend on a machine with several GPUs needs Mesa's device-select layer from Mesa 25 or newer; ${old.map((l) => `${l.manifest} declares Vulkan ${l.apiVersion}`).join(', ')}, ` +
      `a Mesa older than 25 that selects the wrong GPU: ${INSTALL}`
    );
  }
  return null;
}

function atLeast(version: string, [major, minor]: [number, number]): boolean {
  const [a, b] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/** A Vulkan device as Mesa's device-select layer lists it; `pci` where the driver reports its bus (lavapipe does not). */
export interface VulkanDevice {
  name: string;
  /** "dddd:bb:dd.f", lower case. */
  pci?: string;
  line: string;
}

/** The lines of MESA_VK_DEVICE_SELECT=list (device_select_layer.c print_gpu: `  GPU n: vid:did "name" type [dddd:bb:dd.f]`). */
export function parseDeviceList(text: string): VulkanDevice[] {
  return [...text.matchAll(/^ {2}GPU \d+: [0-9a-f]+:[0-9a-f]+ "(.*)" [^\n]*?(?: ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]))?$/gim)].map((m) => ({
    name: m[1],
    pci: m[2]?.toLowerCase(),
    line: m[0].trim(),
  }));
}

/**
 * Every Vulkan device, with its PCI address, as the device-select layer sees them before selecting: its list
 * mode prints them and ends the process, so a child process asks (about half a second). Empty when no
 * layer answered.
 */
export function listVulkanDevices(env: NodeJS.ProcessEnv): VulkanDevice[] {
  const { DRI_PRIME: _tag, ...rest } = env;
  const webgpu = pathToFileURL(createRequire(import.meta.url).resolve('webgpu')).href;
  const script = `import(${JSON.stringify(webgpu)}).then((d) => d.create([]).requestAdapter()).then(() => process.exit(0), () => process.exit(0));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...rest, MESA_VK_DEVICE_SELECT: 'list' }, encoding: 'utf8', timeout: 60_000 });
  return parseDeviceList(`${r.stderr ?? ''}\n${r.stdout ?? ''}`);
}

/** nvidia-smi's bus id as the layer prints it ("00000000:2A:00.0" → "0000:2a:00.0"). */
function layerPci(pciBusId: string): string {
  return driPrimeTag(pciBusId).replace(/^pci-(\w{4})_(\w{2})_(\w{2})_(\d)!$/, '$1:$2:$3.$4');
}

export interface ExpectedGpu {
  rank: number;
  index: number;
  name: string;
  pciBusId: string;
  /** The DRI_PRIME tag the worker was started with. */
  tag: string | undefined;
}

/**
 * Throws GPU_SELECTION unless `adapters` is exactly the expected GPU: one adapter, whose name is the GPU's
 * (WebGPU reports no PCI address, so the name and the count are what can be checked).
 */
export function checkSoleAdapter(adapters: AdapterListing[], gpu: ExpectedGpu, devices: VulkanDevice[] = []): void {
  const wanted = `worker ${gpu.rank} must see only GPU ${gpu.index} (${gpu.name}, PCI ${gpu.pciBusId}) through DRI_PRIME=${gpu.tag ?? '(unset)'}`;
  // Where drivers report PCI addresses the tag can be checked against them: one of no device selects nothing.
  if (devices.some((d) => d.pci !== undefined) && !devices.some((d) => d.pci === layerPci(gpu.pciBusId))) {
    throw new TrainpoolError(
      'GPU_SELECTION',
      `${wanted}, but no Vulkan device is at PCI ${layerPci(gpu.pciBusId)}; the device-select layer lists ${devices.map((d) => d.line).join('; ')}: ` +
        `nvidia-smi's bus id is not one of this machine's Vulkan devices, or that GPU's Vulkan driver is missing (NVIDIA_DRIVER_CAPABILITIES must include graphics in Docker)`,
    );
  }
  const same = (a: AdapterListing) => a.name.toLowerCase().includes(gpu.name.toLowerCase()) || gpu.name.toLowerCase().includes(a.name.toLowerCase());
  if (adapters.length === 1 && same(adapters[0])) return;
  const seen = adapters.length ? adapters.map((a, i) => `${i}: ${a.name} (${a.backend})`).join('; ') : 'none';
  const fix =
    adapters.length > 1
      ? `the device-select layer did not select: it needs Mesa 25 or newer, enabled (NODEVICE_SELECT unset for Mesa's own manifest), and the tag of a PCI address this machine has (nvidia-smi --query-gpu=index,pci.bus_id --format=csv)`
      : `the GPU at that PCI address is not the one nvidia-smi names, or its Vulkan driver is missing (NVIDIA_DRIVER_CAPABILITIES must include graphics in Docker)`;
  throw new TrainpoolError(
    'GPU_SELECTION',
    `${wanted}, but Dawn sees ${adapters.length} adapter${adapters.length === 1 ? '' : 's'}: ${seen}; ${fix}`,
  );
}
