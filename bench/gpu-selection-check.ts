/**
 * Does Mesa's device-select layer give a webgpu worker its own NVIDIA GPU by PCI address? On a GPU machine
 * (bench/gpu-check.sh runs it first), with the layer from .device-bundle/device-select/
 * (tools/pack-device-select.sh) where the machine has none:
 *   1. list mode (MESA_VK_DEVICE_SELECT=list) shows the GPU at nvidia-smi's PCI bus id;
 *   2. a worker started as trainpool starts one on a machine of several GPUs (the tag, `exclusive`) sees
 *      that GPU alone, trains a step, and its memory shows on that bus in nvidia-smi;
 *   3. a worker given a PCI address the machine does not have is refused by its own check.
 * Prints one table (gpu-check.sh keeps it in $OUT/selection.log). Exit 1 if a step failed.
 *   bash .device-bundle/run.sh node --import tsx bench/gpu-selection-check.ts
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseNvidiaSmi } from '../src/cli/gpus.js';
import { WorkerHandle } from '../src/coordinator/worker-handle.js';
import { setupBackend } from '../src/engine/backend.js';
import { deviceSelectProblem, driPrimeTag, findDeviceSelectLayers, listVulkanDevices } from '../src/engine/gpu-selection.js';
import { Replica } from '../src/model/replica.js';
import type { WorkerConfig } from '../src/protocol/messages.js';

const rows: { step: string; ok: boolean; detail: string }[] = [];
const record = (step: string, ok: boolean, detail: string) => {
  rows.push({ step, ok, detail });
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${step}: ${detail}`);
};

const smi = (query: string) => execFileSync('nvidia-smi', [`--query-gpu=${query}`, '--format=csv,noheader,nounits'], { encoding: 'utf8' });
const gpu = parseNvidiaSmi(smi('index,name,uuid,pci.bus_id'))[0];
if (!gpu?.pciBusId) throw new Error('gpu-selection-check needs an NVIDIA GPU that nvidia-smi lists with its PCI bus id');
const memoryUsed = (): number | null => {
  try {
    const line = smi('pci.bus_id,memory.used').split('\n').find((l) => l.toLowerCase().startsWith(gpu.pciBusId!.toLowerCase()));
    return line ? Number(line.split(',')[1]) : null;
  } catch {
    return null;
  }
};

// The layer: the bundle's, where this machine has none of its own (its libraries beside it).
const env: NodeJS.ProcessEnv = { ...process.env };
const bundled = path.resolve('.device-bundle/device-select');
if (existsSync(path.join(bundled, 'libVkLayer_MESA_device_select.so'))) {
  const data = mkdtempSync(path.join(os.tmpdir(), 'trainpool-layer-'));
  mkdirSync(path.join(data, 'vulkan', 'implicit_layer.d'), { recursive: true });
  const layer = {
    name: 'VK_LAYER_TRAINPOOL_MESA_device_select',
    type: 'GLOBAL',
    library_path: path.join(bundled, 'libVkLayer_MESA_device_select.so'),
    api_version: readFileSync(path.join(bundled, 'api_version'), 'utf8').trim(),
    implementation_version: '1',
    description: 'Linux device selection layer',
    functions: { vkNegotiateLoaderLayerInterfaceVersion: 'vkNegotiateLoaderLayerInterfaceVersion' },
    disable_environment: { TRAINPOOL_NO_DEVICE_SELECT: '1' },
  };
  writeFileSync(path.join(data, 'vulkan', 'implicit_layer.d', 'trainpool_device_select.json'), JSON.stringify({ file_format_version: '1.0.0', layer }));
  Object.assign(env, {
    XDG_DATA_DIRS: `${data}:${env.XDG_DATA_DIRS || '/usr/local/share:/usr/share'}`,
    LD_LIBRARY_PATH: [bundled, env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
    NODEVICE_SELECT: '1', // a Mesa of the machine's own, if any, stays out of it
  });
}
const problem = deviceSelectProblem(findDeviceSelectLayers(env));
record('device-select layer', problem === null, problem ?? findDeviceSelectLayers(env).filter((l) => l.enabled).map((l) => `${l.manifest} (Vulkan ${l.apiVersion})`).join(', '));

// 1. List mode.
const devices = listVulkanDevices(env);
const tag = driPrimeTag(gpu.pciBusId);
const address = tag.replace(/^pci-(\w{4})_(\w{2})_(\w{2})_(\d)!$/, '$1:$2:$3.$4');
record('list mode shows the GPU at its PCI address', devices.some((d) => d.pci === address), `nvidia-smi: GPU 0 ${gpu.name} at ${gpu.pciBusId}; layer: ${devices.map((d) => d.line).join('; ') || 'nothing listed'}`);

// The coordinator's replica (cpu) for the layout every worker must match and the weights of a step.
const spec = { name: 'tiny' as const, width: 32, height: 32, depth: 3, classes: 10, seed: 1 };
const cpu = await setupBackend('cpu');
const master = new Replica(spec);
const weights = { version: 1, data: await master.getState() };

const worker = (pciBusId: string) => {
  const config: WorkerConfig = {
    rank: 0,
    model: spec,
    backend: 'webgpu',
    gpu: { index: gpu.index, name: gpu.name, pciBusId, exclusive: true },
    compute: { kind: 'model' },
    layoutHash: master.layoutHash,
  };
  return new WorkerHandle({ config, env, startTimeoutMs: 120_000, firstRequestTimeoutMs: 600_000 });
};

// 2. The right tag: the worker's own start-up and one step, its memory on that bus.
const before = memoryUsed();
const right = worker(gpu.pciBusId);
try {
  const ready = await right.start();
  const x = new Float32Array(64 * 32 * 32 * 3).map((_, i) => Math.sin(i));
  const labels = new Uint8Array(64).map((_, i) => i % 10);
  const step = await right.computeGradients({ x, labels, dropoutSeed: 1 }, weights);
  const during = memoryUsed();
  record('the right tag: the worker sees that GPU alone and trains', ready.device.includes(`alone through DRI_PRIME=${tag}`) && Number.isFinite(step.loss), `${ready.device}; a step's loss ${step.loss.toFixed(4)}`);
  record('its memory shows on that bus', before !== null && during !== null && during > before, `nvidia-smi memory.used on ${gpu.pciBusId}: ${before ?? '?'} MiB before, ${during ?? '?'} MiB with the worker`);
} catch (e) {
  record('the right tag: the worker sees that GPU alone and trains', false, (e as Error).message);
} finally {
  await right.close();
}

// 3. A PCI address this machine does not have.
const wrong = worker('00000000:FE:1F.7');
try {
  await wrong.start();
  record('a wrong tag is refused', false, 'the worker started');
} catch (e) {
  const message = (e as Error).message;
  record('a wrong tag is refused', /\[GPU_SELECTION\]/.test(message), message);
} finally {
  await wrong.close();
}

console.log('\n| step | result | detail |\n|---|---|---|');
for (const r of rows) console.log(`| ${r.step} | ${r.ok ? 'pass' : 'FAIL'} | ${r.detail.replace(/\|/g, '/')} |`);
master.dispose();
await cpu.close();
process.exit(rows.every((r) => r.ok) ? 0 : 1);
