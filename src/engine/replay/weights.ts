/**
 * Where a replaying replica's weights live (model/replica.ts): a buffer the CPU writes, kept mapped between
 * steps, and its copy on the GPU that every recording of the replica (one per batch size) binds.
 *
 * The flat state (trainable weights, then BN statistics) arrives in a region the coordinator wrote; it is
 * copied once, straight into this mapped buffer, and stays there as the replica's state (a buffer mapped for
 * writing shows its contents, so the next step or an eager op reads it back). A step then moves it to the GPU
 * with one copy. Each variable lies at an offset the device can bind (256 bytes, WebGPU's default
 * minStorageBufferOffsetAlignment), so the recorded dispatches read the weights where they lie: one copy
 * instead of one per variable, which cost ~4.6 µs each to encode and submit (116 for MiniGoogLeNet).
 */
import type { VariableSpan } from './inputs.js';

export class WeightStage {
  /** Byte offset of each variable in both buffers. */
  readonly slots: number[];
  /** What the CPU writes: mapped except while a step that reads it is on the GPU. */
  readonly host: GPUBuffer;
  /** What the recorded steps bind. */
  readonly gpu: GPUBuffer;
  readonly bytes: number;
  /** The host buffer's range while it is mapped. */
  private range: ArrayBuffer | null;
  private mapping: Promise<void> = Promise.resolve();
  private readonly size: number;

  constructor(
    device: GPUDevice,
    private readonly variables: VariableSpan[],
    align = Math.max(device.limits.minStorageBufferOffsetAlignment, device.limits.minUniformBufferOffsetAlignment),
  ) {
    let end = 0;
    this.slots = variables.map((v) => {
      const at = Math.ceil(end / align) * align;
      end = at + 4 * v.size;
      return at;
    });
    this.bytes = Math.max(4, Math.ceil(end / 4) * 4);
    this.size = variables.reduce((n, v) => Math.max(n, v.offset + v.size), 0);
    const U = globalThis.GPUBufferUsage;
    this.host = device.createBuffer({ size: this.bytes, usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true });
    this.gpu = device.createBuffer({ size: this.bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
    this.range = this.host.getMappedRange();
  }

  /** Values of the flat state it holds. */
  get length(): number {
    return this.size;
  }

  /** Writes `values` at `start` of the flat state (the state itself at 0, its BN statistics after the trainable part). */
  write(start: number, values: Float32Array): void {
    const range = this.mapped();
    const end = start + values.length;
    if (start < 0 || end > this.size) throw new Error(`values ${start}–${end} of a ${this.size}-value state: this is a bug`);
    this.variables.forEach((v, i) => {
      const from = Math.max(start, v.offset);
      const to = Math.min(end, v.offset + v.size);
      if (from < to) new Float32Array(range, this.slots[i] + 4 * (from - v.offset), to - from).set(values.subarray(from - start, to - start));
    });
  }

  /** The flat state, copied out. */
  read(): Float32Array {
    const range = this.mapped();
    const out = new Float32Array(this.size);
    this.variables.forEach((v, i) => out.set(new Float32Array(range, this.slots[i], v.size), v.offset));
    return out;
  }

  /** Before a submit that copies it to the GPU: unmapped (WebGPU refuses a mapped buffer in a submit). */
  unmap(): void {
    this.mapped();
    this.host.unmap();
    this.range = null;
  }

  /** After that submit: mapped again once the GPU has copied it, with its contents. */
  remap(): void {
    this.mapping = this.host.mapAsync(GPUMapMode.WRITE).then(() => {
      this.range = this.host.getMappedRange();
    });
    this.mapping.catch(() => {}); // destroy() before it resolves rejects it; ready() still sees that
  }

  /** Resolves once it is mapped. */
  ready(): Promise<void> {
    return this.mapping;
  }

  destroy(): void {
    this.range = null;
    this.host.destroy();
    this.gpu.destroy();
  }

  private mapped(): ArrayBuffer {
    if (this.range === null) throw new Error('the weights are on their way to the GPU (a step is running): this is a bug');
    return this.range;
  }
}
