/**
 * Which GPUs this run may use. nvidia-smi is the authority where the NVIDIA driver is installed (inside
 * Docker it is mounted with the "utility" capability); /proc/driver/nvidia/gpus is the fallback when it
 * is not on PATH. Each GPU comes with its index, name, UUID and PCI bus id: identical cards differ only in
 * the last two, and the webgpu backend selects a worker's GPU by its PCI address (engine/gpu-selection.ts).
 * Other vendors' GPUs are not counted: the tensorflow backend needs CUDA, and the webgpu backend is
 * verified on NVIDIA through Vulkan only.
 *
 * CUDA_VISIBLE_DEVICES, when bin/train is given one, is the set and order of GPUs to use, as for CUDA tools:
 * indices or UUIDs (or unique UUID prefixes), comma-separated; an empty value or "none" means none.
 * NVIDIA_VISIBLE_DEVICES the same when CUDA_VISIBLE_DEVICES is unset, with one difference: in a container
 * the NVIDIA runtime has already applied it, and nvidia-smi lists just those GPUs renumbered from 0, so
 * indices are applied only when every one of them is listed and fewer GPUs are asked for than are seen.
 *
 * TRAINPOOL_GPUS overrides the discovery with a comma-separated list of names (tests, and machines where
 * discovery is wrong); an empty value means none.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { UsageError, type Gpu } from '../config/config.js';

export function discoverGpus(env: NodeJS.ProcessEnv = process.env): Gpu[] {
  const forced = env.TRAINPOOL_GPUS;
  if (forced !== undefined) {
    return forced
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((name, index) => ({ index, name }));
  }
  const found = fromNvidiaSmi(env) ?? fromProc() ?? [];
  const host = found.map((g) => ({ ...g, hostGpus: found.length }));
  return visibleGpus(host, env);
}

/** nvidia-smi's CSV (`index, name, uuid, pci.bus_id`, no header) as GPUs; exported for tests. */
export function parseNvidiaSmi(csv: string): Gpu[] {
  return csv
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const fields = l.split(',').map((f) => f.trim());
      // A name may hold commas; index comes first and uuid, bus id last.
      const [index, ...rest] = fields;
      const pciBusId = rest.pop();
      const uuid = rest.pop();
      return { index: Number(index), name: rest.join(', '), uuid, pciBusId };
    });
}

function fromNvidiaSmi(env: NodeJS.ProcessEnv): Gpu[] | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=index,name,uuid,pci.bus_id', '--format=csv,noheader'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
      env,
    });
    return parseNvidiaSmi(out);
  } catch {
    return null;
  }
}

/** The driver's own listing, one folder per GPU named by its PCI bus id; exported for tests. */
export function fromProc(dir = '/proc/driver/nvidia/gpus'): Gpu[] | null {
  try {
    return readdirSync(dir)
      .sort()
      .map((bus, index) => {
        const info = readFileSync(`${dir}/${bus}/information`, 'utf8');
        const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'm').exec(info)?.[1]?.trim();
        return { index, name: field('Model') ?? `NVIDIA GPU at ${bus}`, uuid: field('GPU UUID'), pciBusId: field('Bus Location') ?? bus };
      });
  } catch {
    return null;
  }
}

/** The GPUs CUDA_VISIBLE_DEVICES (or NVIDIA_VISIBLE_DEVICES) allows, in its order; all of them without either. */
export function visibleGpus(gpus: Gpu[], env: NodeJS.ProcessEnv): Gpu[] {
  const cuda = env.CUDA_VISIBLE_DEVICES;
  const nvidia = env.NVIDIA_VISIBLE_DEVICES;
  const [variable, value] = cuda !== undefined ? ['CUDA_VISIBLE_DEVICES', cuda] : nvidia !== undefined ? ['NVIDIA_VISIBLE_DEVICES', nvidia] : [null, ''];
  if (variable === null || value.trim() === 'all') return gpus;
  const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0 || entries[0] === 'none' || entries[0] === 'void') return [];
  if (variable === 'NVIDIA_VISIBLE_DEVICES' && entries.every((e) => /^\d+$/.test(e)) && (entries.length >= gpus.length || entries.some((e) => !gpus.some((g) => g.index === Number(e))))) {
    return gpus; // already applied by the container runtime (see the header)
  }
  return entries.map((entry) => {
    const matches = /^\d+$/.test(entry) ? gpus.filter((g) => g.index === Number(entry)) : gpus.filter((g) => g.uuid?.startsWith(entry));
    if (matches.length !== 1) {
      const listed = gpus.map((g) => `${g.index}: ${g.uuid ?? g.name}`).join('; ') || 'none';
      const why = matches.length === 0 ? 'no GPU' : `${matches.length} GPUs`;
      throw new UsageError(`${variable} must name GPUs of this machine by index or UUID. Received: ${variable}=${value}, whose ${entry} matches ${why} (found ${listed})`);
    }
    return matches[0];
  });
}
