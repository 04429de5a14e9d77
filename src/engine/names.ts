/**
 * The compute backends by name, apart from backend.ts: the command line checks a name without loading
 * tfjs and every backend (a mistyped option is answered in a fraction of a second).
 */
export type BackendName = 'auto' | 'webgpu' | 'tensorflow' | 'wasm' | 'cpu';
export const BACKEND_NAMES: readonly BackendName[] = ['auto', 'webgpu', 'tensorflow', 'wasm', 'cpu'];
