/**
 * Counting what a piece of webgpu work asks of the device: compute dispatches, and bytes written from the
 * CPU to the GPU.
 *
 * tfjs-backend-webgpu's own counter (WebGPUBackend.dispatchCountInPass) is reset at every submit, and it
 * has none for uploads, so this counts at the WebGPU API that Dawn (the `webgpu` package) exposes, below
 * every kernel, stock or the project's:
 *   - dispatches: GPUComputePassEncoder.dispatchWorkgroups and dispatchWorkgroupsIndirect calls.
 *   - uploads, the two ways bytes leave the CPU for the GPU in WebGPU: GPUQueue.writeBuffer (tfjs writes
 *     every program's uniforms this way, backend_webgpu.ts makeUniforms), and a buffer mapped for writing
 *     (created with mappedAtCreation, or mapAsync(GPUMapMode.WRITE)) and then unmapped, which is how
 *     tfjs uploads tensor values (backend_webgpu.ts uploadToGPU: the buffer itself or a MAP_WRITE staging
 *     buffer). A write-mapped buffer counts its whole size when unmapped, as tfjs fills it all.
 * Reads (mapAsync READ) are not uploads and are not counted.
 *
 * The wrappers are installed once on the prototypes of the classes the `webgpu` package put on
 * globalThis (backend.ts does that before tfjs-backend-webgpu loads) and count only while a `GpuCounts`
 * is active, so code that is not being measured pays one branch per call.
 */

/** What one measured piece of work did. */
export interface GpuCounts {
  dispatches: number;
  /** Every upload's byte count, in order, with how it was made. */
  uploads: Upload[];
}

export interface Upload {
  bytes: number;
  via: 'writeBuffer' | 'mapped';
}

let active: GpuCounts | undefined;
let installed = false;
/** Buffers mapped for writing whose contents are on the CPU until unmap. */
const writeMapped = new WeakSet<object>();

type Method = (this: unknown, ...args: unknown[]) => unknown;

function wrap(proto: Record<string, unknown>, name: string, before: (self: unknown, args: unknown[]) => void): void {
  const original = proto[name] as Method | undefined;
  if (typeof original !== 'function') throw new Error(`WebGPU counters: ${name} is not a method of the prototype given. Received: ${typeof original}`);
  proto[name] = function (this: unknown, ...args: unknown[]) {
    if (active !== undefined) before(this, args);
    return original.apply(this, args);
  };
}

/** Wraps the WebGPU methods once; needs the `webgpu` package's globals on globalThis (setupBackend). */
export function installGpuCounters(): void {
  if (installed) return;
  const g = globalThis as unknown as Record<string, { prototype: Record<string, unknown> } | undefined>;
  const pass = g.GPUComputePassEncoder?.prototype;
  const queue = g.GPUQueue?.prototype;
  const device = g.GPUDevice?.prototype;
  const buffer = g.GPUBuffer?.prototype;
  if (pass === undefined || queue === undefined || device === undefined || buffer === undefined) {
    throw new Error('WebGPU counters need the WebGPU classes on globalThis: call setupBackend("webgpu") first');
  }
  installed = true;
  const count = () => active!.dispatches++;
  wrap(pass, 'dispatchWorkgroups', count);
  wrap(pass, 'dispatchWorkgroupsIndirect', count);
  wrap(queue, 'writeBuffer', (_self, args) => {
    // writeBuffer(buffer, bufferOffset, data, dataOffset?, size?): size and dataOffset are in elements of
    // a typed array, bytes of an ArrayBuffer (WebGPU spec, GPUQueue.writeBuffer).
    const data = args[2] as ArrayBufferView | ArrayBuffer;
    const element = ArrayBuffer.isView(data) ? ((data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1) : 1;
    const total = ArrayBuffer.isView(data) ? data.byteLength / element : data.byteLength;
    const size = (args[4] as number | undefined) ?? total - ((args[3] as number | undefined) ?? 0);
    active!.uploads.push({ bytes: size * element, via: 'writeBuffer' });
  });
  // createBuffer's result must be marked after the call: wrap it by hand.
  const create = device.createBuffer as Method;
  device.createBuffer = function (this: unknown, descriptor: GPUBufferDescriptor) {
    const made = create.call(this, descriptor) as GPUBuffer;
    if (descriptor.mappedAtCreation === true) writeMapped.add(made);
    return made;
  };
  const mapAsync = buffer.mapAsync as Method;
  buffer.mapAsync = function (this: GPUBuffer, mode: number, ...rest: unknown[]) {
    const done = mapAsync.call(this, mode, ...rest) as Promise<void>;
    if ((mode & GPUMapMode.WRITE) !== 0) return done.then(() => void writeMapped.add(this));
    return done;
  };
  const unmap = buffer.unmap as Method;
  buffer.unmap = function (this: GPUBuffer) {
    if (writeMapped.has(this)) {
      writeMapped.delete(this);
      if (active !== undefined) active.uploads.push({ bytes: this.size, via: 'mapped' });
    }
    return unmap.call(this);
  };
}

/**
 * Runs `f` and returns what it dispatched and uploaded. Not reentrant: one measurement at a time (a
 * nested call would split the counts between the two).
 */
export async function countGpuWork<T>(f: () => Promise<T>): Promise<{ result: T; counts: GpuCounts }> {
  if (active !== undefined) throw new Error('countGpuWork is already measuring; measurements cannot nest');
  installGpuCounters();
  const counts: GpuCounts = { dispatches: 0, uploads: [] };
  active = counts;
  try {
    return { result: await f(), counts };
  } finally {
    active = undefined;
  }
}
