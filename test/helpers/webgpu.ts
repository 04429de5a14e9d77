/**
 * Whether this machine has a WebGPU adapter (a real GPU, or lavapipe after
 *   eval "$(bash tools/soft-gpu.sh)"
 * ), and what a webgpu test file should do without one: skip, saying why, unless TRAINPOOL_REQUIRE_WEBGPU=1
 * (CI) makes that a failure.
 */
import { describeBackends } from '../../src/engine/backend.js';

export interface WebgpuAvailability {
  available: boolean;
  /** The adapters, or why there is none. */
  detail: string;
  required: boolean;
  skipReason: string;
}

export async function webgpuAvailability(file: string): Promise<WebgpuAvailability> {
  const webgpu = (await describeBackends()).find((b) => b.name === 'webgpu')!;
  const required = process.env.TRAINPOOL_REQUIRE_WEBGPU === '1';
  const skipReason = `no WebGPU adapter found (${webgpu.detail}); run eval "$(bash tools/soft-gpu.sh)" first, or set TRAINPOOL_REQUIRE_WEBGPU=1 to fail instead`;
  if (!webgpu.available && !required) console.warn(`${file} skipped: ${skipReason}`);
  return { available: webgpu.available, detail: webgpu.detail, required, skipReason };
}
