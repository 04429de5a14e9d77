/**
 * Finding the GPUs (nvidia-smi, /proc, CUDA_VISIBLE_DEVICES) and what selecting one per webgpu worker needs:
 * the device-select tag of each PCI address, a device-select layer new enough, the worker's own check.
 * No GPU needed: nvidia-smi is a test double on PATH, the layers are manifests in temporary folders.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { discoverGpus, fromProc, parseNvidiaSmi, visibleGpus } from '../src/cli/gpus.js';
import { parseArgs } from '../src/cli/options.js';
import { gpuSelectionProblem } from '../src/cli/preflight.js';
import type { Gpu, ResolvedConfig } from '../src/config/config.js';
import { checkSoleAdapter, deviceSelectProblem, driPrimeTag, findDeviceSelectLayers, parseDeviceList, selectionEnv } from '../src/engine/gpu-selection.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-gpus-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const H100 = 'NVIDIA H100 80GB HBM3';
const FOUR = [
  `0, ${H100}, GPU-0a1b2c3d-0000-0000-0000-000000000000, 00000000:17:00.0`,
  `1, ${H100}, GPU-1a1b2c3d-0000-0000-0000-000000000000, 00000000:2A:00.0`,
  `2, ${H100}, GPU-2a1b2c3d-0000-0000-0000-000000000000, 00000000:63:00.0`,
  `3, ${H100}, GPU-3a1b2c3d-0000-0000-0000-000000000000, 00000000:AB:00.0`,
].join('\n');

/** A folder holding an `nvidia-smi` that prints `csv` for the query trainpool makes. */
function nvidiaSmiDouble(name: string, csv: string): string {
  const bin = path.join(dir, name);
  mkdirSync(bin, { recursive: true });
  writeFileSync(path.join(bin, 'nvidia-smi'), `#!/bin/sh\n[ "$1" = "--query-gpu=index,name,uuid,pci.bus_id" ] || exit 9\ncat <<'EOF'\n${csv}\nEOF\n`);
  chmodSync(path.join(bin, 'nvidia-smi'), 0o755);
  return bin;
}

const env = (extra: NodeJS.ProcessEnv) => {
  const { CUDA_VISIBLE_DEVICES: _c, NVIDIA_VISIBLE_DEVICES: _n, TRAINPOOL_GPUS: _t, ...rest } = process.env;
  return { ...rest, ...extra };
};

describe('GPU discovery', () => {
  const bin = nvidiaSmiDouble('four', FOUR);
  const path4 = `${bin}:${process.env.PATH}`;

  it('reads index, name, UUID and PCI bus id of every GPU from nvidia-smi', () => {
    const gpus = discoverGpus(env({ PATH: path4 }));
    expect(gpus).toHaveLength(4);
    expect(gpus[1]).toEqual({ index: 1, name: H100, uuid: 'GPU-1a1b2c3d-0000-0000-0000-000000000000', pciBusId: '00000000:2A:00.0', hostGpus: 4 });
  });

  it('keeps a name with commas whole', () => {
    expect(parseNvidiaSmi('0, llvmpipe (LLVM 15.0.6, 256 bits), GPU-x, 00000000:00:00.0')[0].name).toBe('llvmpipe (LLVM 15.0.6, 256 bits)');
  });

  it('falls back to the driver’s /proc listing, one folder per PCI bus id', () => {
    const proc = path.join(dir, 'proc');
    for (const [bus, uuid] of [['0000:2a:00.0', 'GPU-b'], ['0000:17:00.0', 'GPU-a']]) {
      mkdirSync(path.join(proc, bus), { recursive: true });
      writeFileSync(path.join(proc, bus, 'information'), `Model: \t\t ${H100}\nIRQ:   42\nGPU UUID: \t ${uuid}\nBus Location: \t ${bus}\n`);
    }
    expect(fromProc(proc)).toEqual([
      { index: 0, name: H100, uuid: 'GPU-a', pciBusId: '0000:17:00.0' },
      { index: 1, name: H100, uuid: 'GPU-b', pciBusId: '0000:2a:00.0' },
    ]);
  });

  it('takes CUDA_VISIBLE_DEVICES as the set and order of GPUs, by index or UUID prefix', () => {
    const indices = (extra: NodeJS.ProcessEnv) => discoverGpus(env({ PATH: path4, ...extra })).map((g) => g.index);
    expect(indices({ CUDA_VISIBLE_DEVICES: '3,1' })).toEqual([3, 1]);
    expect(indices({ CUDA_VISIBLE_DEVICES: 'GPU-2a1b, 0' })).toEqual([2, 0]);
    expect(indices({ CUDA_VISIBLE_DEVICES: '' })).toEqual([]);
    expect(indices({ CUDA_VISIBLE_DEVICES: 'none' })).toEqual([]);
    expect(indices({ CUDA_VISIBLE_DEVICES: 'all' })).toEqual([0, 1, 2, 3]);
    // CUDA's variable wins; the container runtime's applies where CUDA's is unset.
    expect(indices({ CUDA_VISIBLE_DEVICES: '1', NVIDIA_VISIBLE_DEVICES: '2' })).toEqual([1]);
    expect(indices({ NVIDIA_VISIBLE_DEVICES: 'GPU-3a' })).toEqual([3]);
    expect(indices({ NVIDIA_VISIBLE_DEVICES: '2,0' })).toEqual([2, 0]);
  });

  it('keeps what a container runtime has applied already: nvidia-smi then lists only those GPUs, from 0', () => {
    const inside = parseNvidiaSmi(FOUR).slice(0, 2).map((g) => ({ ...g, hostGpus: 2 }));
    expect(visibleGpus(inside, { NVIDIA_VISIBLE_DEVICES: '2,3' }).map((g) => g.index)).toEqual([0, 1]);
  });

  it('refuses a CUDA_VISIBLE_DEVICES entry that names no GPU, or several', () => {
    const gpus = parseNvidiaSmi(FOUR);
    expect(() => visibleGpus(gpus, { CUDA_VISIBLE_DEVICES: '0,7' })).toThrow(
      'CUDA_VISIBLE_DEVICES must name GPUs of this machine by index or UUID. Received: CUDA_VISIBLE_DEVICES=0,7, whose 7 matches no GPU (found 0: GPU-0a1b2c3d-0000-0000-0000-000000000000; 1: GPU-1a1b2c3d-0000-0000-0000-000000000000; 2: GPU-2a1b2c3d-0000-0000-0000-000000000000; 3: GPU-3a1b2c3d-0000-0000-0000-000000000000)',
    );
    expect(() => visibleGpus(gpus, { CUDA_VISIBLE_DEVICES: 'GPU-' })).toThrow(/whose GPU- matches 4 GPUs/);
  });

  it('--gpus N takes the first N of the visible set, identical names and all', () => {
    const gpus = discoverGpus(env({ PATH: path4, CUDA_VISIBLE_DEVICES: '2,3,0' }));
    const config = parseArgs(['--output', 'p.png', '--gpus', '2', '--backend', 'webgpu'], gpus) as ResolvedConfig;
    expect(config.gpus.map((g) => [g.index, g.pciBusId])).toEqual([[2, '00000000:63:00.0'], [3, '00000000:AB:00.0']]);
    expect(config.workers).toBe(2);
  });
});

describe('the device-select tag', () => {
  it('is Mesa’s pci-DDDD_BB_DD_F with ! (hide the others), from nvidia-smi’s 8-digit domain or none', () => {
    expect(driPrimeTag('00000000:17:00.0')).toBe('pci-0000_17_00_0!');
    expect(driPrimeTag('00000001:AB:1f.3')).toBe('pci-0001_ab_1f_3!');
    expect(driPrimeTag('2a:00.0')).toBe('pci-0000_2a_00_0!');
    expect(() => driPrimeTag('GPU-1234')).toThrow('a PCI bus id must look like 00000000:17:00.0. Received: GPU-1234');
  });

  it('goes into the worker’s environment, without a display that would hide NVIDIA’s other GPUs', () => {
    const e = selectionEnv({ DISPLAY: ':0', WAYLAND_DISPLAY: 'wayland-0', HOME: '/root' }, '00000000:2A:00.0');
    expect(e).toEqual({ HOME: '/root', DRI_PRIME: 'pci-0000_2a_00_0!' });
  });
});

describe('the device-select layer', () => {
  /** A loader search folder (as XDG_DATA_DIRS) with one device-select manifest declaring `apiVersion`. */
  function layerDir(name: string, apiVersion: string, disable = 'NODEVICE_SELECT'): string {
    const root = path.join(dir, 'layers', name);
    mkdirSync(path.join(root, 'vulkan', 'implicit_layer.d'), { recursive: true });
    const layer = { name: 'VK_LAYER_MESA_device_select', type: 'GLOBAL', library_path: 'libVkLayer_MESA_device_select.so', api_version: apiVersion, disable_environment: { [disable]: '1' } };
    writeFileSync(path.join(root, 'vulkan', 'implicit_layer.d', 'VkLayer_MESA_device_select.json'), JSON.stringify({ file_format_version: '1.0.0', layer }));
    return root;
  }
  const only = (dirs: string[], extra: NodeJS.ProcessEnv = {}) => ({ HOME: path.join(dir, 'home'), XDG_CONFIG_DIRS: path.join(dir, 'none'), XDG_DATA_DIRS: dirs.join(':'), ...extra });
  const mesa25 = layerDir('mesa25', '1.4.303', 'TRAINPOOL_NO_DEVICE_SELECT');
  const mesa22 = layerDir('mesa22', '1.3.211');

  it('from Mesa 25 (Vulkan 1.4 manifest) can select', () => {
    const layers = findDeviceSelectLayers(only([mesa25]));
    expect(layers.map((l) => [l.apiVersion, l.enabled])).toEqual([['1.4.303', true]]);
    expect(deviceSelectProblem(layers)).toBeNull();
  });

  it('from Debian 12’s Mesa 22.3 is too old, and says which manifest and what installs a new one', () => {
    expect(deviceSelectProblem(findDeviceSelectLayers(only([mesa22])))).toBe(
      `the webgpu backend on a machine with several GPUs needs Mesa's device-select layer from Mesa 25 or newer; ${mesa22}/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json declares Vulkan 1.3.211, a Mesa older than 25 that selects the wrong GPU: ` +
        "install Mesa's Vulkan drivers 25 or newer, which bring it (Debian 12: add bookworm-backports to apt's sources, then apt-get install -t bookworm-backports mesa-vulkan-drivers; the Docker image has it)",
    );
    // An old one switched off does not stand in the way of a new one.
    expect(deviceSelectProblem(findDeviceSelectLayers(only([mesa25, mesa22], { NODEVICE_SELECT: '1' })))).toBeNull();
    expect(deviceSelectProblem(findDeviceSelectLayers(only([mesa25, mesa22])))).toMatch(/mesa22.* declares Vulkan 1\.3\.211/);
  });

  it('missing or switched off is named as such', () => {
    expect(deviceSelectProblem(findDeviceSelectLayers(only([path.join(dir, 'none')])))).toMatch(/^the webgpu backend on a machine with several GPUs needs Mesa's device-select Vulkan layer, and none is enabled: install/);
    expect(deviceSelectProblem(findDeviceSelectLayers(only([mesa22], { NODEVICE_SELECT: '1' })))).toMatch(/and none is enabled \(.*mesa22.* is turned off by its disable_environment variable\)/);
  });

  it('is checked before anything slow only where webgpu workers must share the machine', () => {
    const gpus = parseNvidiaSmi(FOUR).map((g) => ({ ...g, hostGpus: 4 }));
    const config = (backend: ResolvedConfig['backend'], chosen: Gpu[]) => ({ ...(parseArgs(['--output', 'p.png'], []) as ResolvedConfig), backend, gpus: chosen });
    const none = only([path.join(dir, 'none')]);
    expect(gpuSelectionProblem(config('webgpu', gpus.slice(0, 2)), none)).toMatch(/needs Mesa's device-select Vulkan layer/);
    expect(gpuSelectionProblem(config('webgpu', gpus.slice(0, 2)), only([mesa25]))).toBeNull();
    expect(gpuSelectionProblem(config('wasm', []), none)).toBeNull();
    // One GPU on the machine: nothing to hide from its worker.
    expect(gpuSelectionProblem(config('webgpu', [{ index: 0, name: H100, pciBusId: '00000000:17:00.0', hostGpus: 1 }]), none)).toBeNull();
  });
});

describe('a worker’s check of what it sees', () => {
  const gpu = { rank: 1, index: 3, name: H100, pciBusId: '00000000:AB:00.0', tag: 'pci-0000_ab_00_0!' };

  it('passes its GPU alone', () => {
    expect(() => checkSoleAdapter([{ backend: 'vulkan', name: H100 }], gpu)).not.toThrow();
  });

  it('refuses every device left visible (a tag the layer did not take), naming rank, GPU, address, what it saw and the fix', () => {
    expect(() => checkSoleAdapter([{ backend: 'vulkan', name: H100 }, { backend: 'vulkan', name: H100 }], gpu)).toThrow(
      `worker 1 must see only GPU 3 (${H100}, PCI 00000000:AB:00.0) through DRI_PRIME=pci-0000_ab_00_0!, but Dawn sees 2 adapters: 0: ${H100} (vulkan); 1: ${H100} (vulkan); ` +
        "the device-select layer did not select: it needs Mesa 25 or newer, enabled (NODEVICE_SELECT unset for Mesa's own manifest), and the tag of a PCI address this machine has (nvidia-smi --query-gpu=index,pci.bus_id --format=csv)",
    );
  });

  it('checks the tag against the PCI addresses the layer lists, where drivers report them', () => {
    const list = `selectable devices:\n  GPU 0: 10de:2335 "${H100}" discrete GPU 0000:17:00.0\n  GPU 1: 10de:2335 "${H100}" discrete GPU 0000:ab:00.0\n  GPU 2: 10005:0 "llvmpipe (LLVM 15.0.6, 256 bits)" CPU\n`;
    const devices = parseDeviceList(list);
    expect(devices.map((d) => [d.name, d.pci])).toEqual([[H100, '0000:17:00.0'], [H100, '0000:ab:00.0'], ['llvmpipe (LLVM 15.0.6, 256 bits)', undefined]]);
    expect(() => checkSoleAdapter([{ backend: 'vulkan', name: H100 }], gpu, devices)).not.toThrow();
    // One GPU left visible by a tag that matched nothing (the layer then hides nothing) is still the wrong one.
    expect(() => checkSoleAdapter([{ backend: 'vulkan', name: H100 }], { ...gpu, pciBusId: '00000000:63:00.0', tag: 'pci-0000_63_00_0!' }, devices.slice(0, 1))).toThrow(
      `worker 1 must see only GPU 3 (${H100}, PCI 00000000:63:00.0) through DRI_PRIME=pci-0000_63_00_0!, but no Vulkan device is at PCI 0000:63:00.0; the device-select layer lists GPU 0: 10de:2335 "${H100}" discrete GPU 0000:17:00.0: ` +
        "nvidia-smi's bus id is not one of this machine's Vulkan devices, or that GPU's Vulkan driver is missing (NVIDIA_DRIVER_CAPABILITIES must include graphics in Docker)",
    );
  });

  it('refuses another GPU alone', () => {
    expect(() => checkSoleAdapter([{ backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)' }], gpu)).toThrow(/but Dawn sees 1 adapter: 0: llvmpipe .*; the GPU at that PCI address is not the one nvidia-smi names/);
  });
});
