/**
 * `--gpus 2 --backend webgpu` on a machine whose two GPUs are identical: each worker alone on its own, by
 * Mesa's device-select layer, on two identical software adapters (two ICD manifests naming two copies of
 * lavapipe's library: the loader drops a manifest given twice) and an nvidia-smi double listing them.
 *
 * lavapipe has no PCI bus (VK_EXT_pci_bus_info says 0000:00:00.0 for every device it makes), so the double
 * lists that address for both GPUs: the tag then leaves one of the two, which is all a test can tell
 * apart on identical software devices. Needs tools/soft-gpu.sh's exports (its adapter and layer).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { selectionEnv } from '../src/engine/gpu-selection.js';
import { webgpuAvailability } from './helpers/webgpu.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'train');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const soft = process.env.VK_DRIVER_FILES?.split(':')[0];
const webgpu = await webgpuAvailability('gpu-selection.test.ts');
const ready = webgpu.available && soft !== undefined;
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-gpu-selection-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.runIf(webgpu.required && !ready)('selecting GPUs, required by TRAINPOOL_REQUIRE_WEBGPU=1', () => {
  it('has the software adapter', () => {
    expect.fail(`needs eval "$(bash tools/soft-gpu.sh)" (VK_DRIVER_FILES=${soft ?? 'unset'}; ${webgpu.detail})`);
  });
});

/** Two identical software adapters: VK_DRIVER_FILES for them. */
function twoSoftGpus(): string {
  const library = JSON.parse(readFileSync(soft!, 'utf8')).ICD.library_path as string;
  return ['a', 'b']
    .map((copy) => {
      copyFileSync(library, path.join(dir, `${copy}_lvp.so`));
      const manifest = path.join(dir, `${copy}_icd.json`);
      writeFileSync(manifest, JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: path.join(dir, `${copy}_lvp.so`), api_version: '1.3.0' } }));
      return manifest;
    })
    .join(':');
}

/** Dawn's adapters as a child process with `env` sees them. */
function adaptersSeen(env: NodeJS.ProcessEnv): { name: string }[] {
  const script = `
    import { listAdapters } from '${ROOT}src/engine/webgpu-adapters.ts';
    const dawn = await import('webgpu');
    console.log(JSON.stringify(await listAdapters(dawn)));
    process.exit(0);`;
  const r = spawnSync(process.execPath, ['--import', TSX, '--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** A folder whose nvidia-smi lists `names` at `pciBusId`. */
function nvidiaSmi(name: string, names: string[], pciBusId: string): string {
  const bin = path.join(dir, name);
  mkdirSync(bin, { recursive: true });
  const lines = names.map((n, i) => `${i}, ${n}, GPU-${String(i).repeat(8)}-0000-0000-0000-000000000000, ${pciBusId}`).join('\n');
  writeFileSync(path.join(bin, 'nvidia-smi'), `#!/bin/sh\ncat <<'EOF'\n${lines}\nEOF\n`);
  chmodSync(path.join(bin, 'nvidia-smi'), 0o755);
  return bin;
}

describe.runIf(ready)('webgpu workers on two identical GPUs', () => {
  const { TRAINPOOL_GPUS: _t, CUDA_VISIBLE_DEVICES: _c, NVIDIA_VISIBLE_DEVICES: _n, ...base } = process.env;
  // Made only where it can be: a skipped describe's body still runs, to collect its tests.
  const env: NodeJS.ProcessEnv = { ...base, VK_DRIVER_FILES: ready ? twoSoftGpus() : '' };
  let names: string[] = [];
  const train = (bin: string, out: string, extra: NodeJS.ProcessEnv = {}) =>
    spawnSync(
      BIN,
      ['--gpus', '2', '--backend', 'webgpu', '--dataset', 'synthetic', '--model', 'tiny', '--epochs', '1', '--limit-train', '128', '--limit-test', '64', '--seed', '5', '--output', out],
      { env: { ...env, PATH: `${bin}:${env.PATH}`, ...extra }, encoding: 'utf8', timeout: 300_000 },
    );

  it('are two adapters of one name, and the layer with the tag leaves exactly one', () => {
    const all = adaptersSeen(env);
    names = all.map((a) => a.name);
    expect(names).toHaveLength(2);
    expect(names[1]).toBe(names[0]);
    expect(adaptersSeen(selectionEnv(env, '00000000:00:00.0'))).toEqual([all[0]]);
  });

  it('bin/train --gpus 2 --backend webgpu trains, each worker alone on its GPU, and a rerun gives the same losses', () => {
    const bin = nvidiaSmi('same', names, '00000000:00:00.0');
    const runs = ['first', 'second'].map((run) => {
      const out = path.join(dir, run, 'p.png');
      const r = train(bin, out);
      expect(r.status, r.stderr).toBe(0);
      const workers = r.stdout.split('\n').find((l) => l.startsWith('workers: '))!;
      expect(workers).toMatch(/^workers: 2 \(\[0\] webgpu: .*, alone through DRI_PRIME=pci-0000_00_00_0!; \[1\] webgpu: .*, alone through DRI_PRIME=pci-0000_00_00_0!\)$/);
      return (JSON.parse(readFileSync(path.join(dir, run, 'p.history.json'), 'utf8')).epochs as Record<string, number>[]).map(({ seconds: _, ...r }) => r);
    });
    expect(runs[1]).toEqual(runs[0]);
  }, 300_000);

  it('refuses, at once and in one line, a tag the layer cannot take: every device stays visible', () => {
    const r = train(nvidiaSmi('elsewhere', names, '00000000:17:00.0'), path.join(dir, 'elsewhere', 'p.png'));
    expect(r.status).toBe(1);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('train: error:'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(
      /^train: error: worker ([01]) \(GPU \1, pid \d+\) failed: worker \1 must see only GPU \1 \(.+, PCI 00000000:17:00\.0\) through DRI_PRIME=pci-0000_17_00_0!, but Dawn sees 2 adapters: 0: .+; 1: .+; the device-select layer did not select: .* \[GPU_SELECTION\]$/,
    );
    expect(r.stderr).not.toMatch(/times in a row/); // not retried: the next process would see the same
  }, 120_000);

  it('stops before anything slow without a device-select layer', () => {
    // tools/soft-gpu.sh's layer off as well as Debian's (NODEVICE_SELECT): none is left.
    const r = train(nvidiaSmi('same', names, '00000000:00:00.0'), path.join(dir, 'nolayer', 'p.png'), { TRAINPOOL_NO_DEVICE_SELECT: '1', NODEVICE_SELECT: '1' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^train: error: the webgpu backend on a machine with several GPUs needs Mesa's device-select Vulkan layer, and none is enabled \(.*\): install Mesa's Vulkan drivers 25 or newer/);
    expect(r.stdout).toBe('');
  });
});
