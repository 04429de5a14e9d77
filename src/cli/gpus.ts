/**
 * Which GPUs this machine has. nvidia-smi is the authority where the NVIDIA driver is installed (inside
 * Docker it is mounted with the "utility" capability); /proc/driver/nvidia/gpus is the fallback when it
 * is not on PATH. Other vendors' GPUs are not counted: the tensorflow backend needs CUDA, and the webgpu
 * backend is verified on NVIDIA through Vulkan only.
 *
 * TRAINPOOL_GPUS overrides the discovery with a comma-separated list of names (tests, and machines where
 * discovery is wrong); an empty value means none.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { Gpu } from '../config/config.js';

export function discoverGpus(env: NodeJS.ProcessEnv = process.env): Gpu[] {
  const forced = env.TRAINPOOL_GPUS;
  if (forced !== undefined) {
    return forced
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((name, index) => ({ index, name }));
  }
  return fromNvidiaSmi() ?? fromProc() ?? [];
}

function fromNvidiaSmi(): Gpu[] | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=index,name', '--format=csv,noheader'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    });
    return out
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        const [index, ...name] = l.split(',');
        return { index: Number(index), name: name.join(',').trim() };
      });
  } catch {
    return null;
  }
}

function fromProc(): Gpu[] | null {
  const dir = '/proc/driver/nvidia/gpus';
  try {
    return readdirSync(dir)
      .sort()
      .map((bus, index) => {
        const info = readFileSync(`${dir}/${bus}/information`, 'utf8');
        const model = /^Model:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? `NVIDIA GPU at ${bus}`;
        return { index, name: model };
      });
  } catch {
    return null;
  }
}
