/**
 * A webgpu training step recorded once and replayed every step: the same WebGPU calls in the same order on
 * buffers of its own, with only the step's inputs (weights, images, labels, dropout masks) written anew.
 * No tfjs kernel runs and no tensor is made in a replayed step; the host's work is encoding ~2,000 calls.
 *
 * Recording (`ReplayedStep.record`): one eager step on *probe* inputs, captured (capture.ts) with the
 * objects it used. Every value of the probe is distinct, so each upload of the step is told apart by its
 * bytes: a variable of the layout, the images, the labels (int32), a dropout mask (tfjs draws it on the
 * CPU: seedrandom's alea seeded with the seed's decimal string, tfjs-core rand_util.ts UniformRandom), or
 * a constant of the step. Every buffer the step touched gets a twin of the same size and usage (staging
 * buffers a copy source that queue.writeBuffer can fill), every bind group a twin on the twins; buffers
 * read before the step writes them keep their contents (copied once). Then the probe is replayed and its
 * results must equal the eager step's bit for bit, or recording fails.
 *
 * Replaying keeps the recorded order exactly: uploads and uniform writes are queue.writeBuffer calls at
 * their places between submits (a staging buffer reused after a submit gets its second upload there), and
 * passes, copies and submits follow as recorded. So a replayed step computes what the eager one would, on
 * the same bytes, in the same order: bit-identical results (test/replay.test.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GpuOp } from './capture.js';
import { captureGpuWork } from './capture.js';
import { identify, maskDrawer, maskValues, probeInputs, RecordingError, sameBits, type Source, type StepInputs, type StepOutputs, type VariableSpan } from './inputs.js';

export { RecordingError, type StepInputs, type StepOutputs, type VariableSpan };

export interface RecordOptions {
  device: GPUDevice;
  /** The layout's variables, in order. */
  variables: VariableSpan[];
  /** Runs one eager step (setState + computeGradients). */
  eager: (inputs: StepInputs) => Promise<StepOutputs>;
  /** The shapes of the step to record: a probe of these sizes is made. */
  batch: number;
  imageSize: number;
  weightsSize: number;
  /** The rates of the model's Dropout layers: what a mask upload may be (see MaskForm). */
  dropoutRates: number[];
}

type Action =
  | { kind: 'pipeline'; pipeline: GPUComputePipeline }
  | { kind: 'bindGroup'; index: number; group: GPUBindGroup }
  | { kind: 'dispatch'; x: number; y: number; z: number }
  | { kind: 'endPass' }
  | { kind: 'copy'; from: GPUBuffer; fromOffset: number; to: GPUBuffer; toOffset: number; size: number }
  | { kind: 'write'; buffer: GPUBuffer; offset: number; bytes: Uint8Array; source: Source }
  | { kind: 'submit' }
  | { kind: 'read'; buffer: GPUBuffer };

const usage = () => globalThis.GPUBufferUsage;

export class ReplayedStep {
  /** Host time of the last run, writing, encoding and submitting, before waiting for the GPU. */
  encodeMs = 0;
  /** WebGPU calls a run makes (each submit also finishes and begins an encoder). */
  readonly callsPerStep: number;

  /** Made by `record` only (build below): the actions must come from a verified recording. */
  constructor(
    private readonly device: GPUDevice,
    private readonly actions: Action[],
    private readonly variables: VariableSpan[],
    private readonly owned: GPUBuffer[],
    /** Which reads are the flat values, the loss and the accuracy. */
    private readonly reads: { flat: GPUBuffer; loss: GPUBuffer; acc: GPUBuffer },
    readonly batch: number,
  ) {
    const read = new Set(actions.filter((a) => a.kind === 'read').map((a) => (a as { buffer: GPUBuffer }).buffer));
    this.otherReads = [...read].filter((b) => b !== reads.flat && b !== reads.loss && b !== reads.acc);
    this.callsPerStep = actions.length + actions.filter((a) => a.kind === 'submit').length * 2 + 1;
  }

  /** Buffers the step reads back besides its three results: unmapped after each run. */
  private readonly otherReads: GPUBuffer[];

  /** Records the step of `o`'s shapes; throws RecordingError (with why) where it cannot be replayed exactly. */
  static async record(o: RecordOptions): Promise<ReplayedStep> {
    const probe = probeInputs(o);
    const { ops, objects, result } = await captureGpuWork(() => o.eager(probe), { keep: true });
    const sources = identify(ops, probe, o.variables, o.dropoutRates);
    const step = build(o.device, ops, objects, sources, o.variables, result, o.batch);
    const again = await step.run(probe);
    if (!sameBits(again.flat, result.flat) || !sameBits(Float32Array.of(again.loss), Float32Array.of(result.loss)) || !sameBits(Float32Array.of(again.acc), Float32Array.of(result.acc))) {
      step.dispose();
      throw new RecordingError('the replayed probe step differs from the eager one');
    }
    return step;
  }

  /** Runs the recorded step on `inputs` (of the recorded shapes). */
  async run(inputs: StepInputs): Promise<StepOutputs> {
    if (inputs.labels.length !== this.batch) throw new Error(`a replayed step takes ${this.batch} images. Received: ${inputs.labels.length}: this is a bug`);
    const { device } = this;
    const queue = device.queue;
    const labels = new Int32Array(inputs.labels);
    let encoder = device.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    const reads: Promise<void>[] = [];
    const mask = maskDrawer(inputs.dropoutSeed);
    const started = performance.now();
    for (const a of this.actions) {
      switch (a.kind) {
        case 'pipeline':
          pass ??= encoder.beginComputePass();
          pass.setPipeline(a.pipeline);
          break;
        case 'bindGroup':
          pass ??= encoder.beginComputePass();
          pass.setBindGroup(a.index, a.group);
          break;
        case 'dispatch':
          pass!.dispatchWorkgroups(a.x, a.y, a.z);
          break;
        case 'endPass':
          pass?.end();
          pass = null;
          break;
        case 'copy':
          encoder.copyBufferToBuffer(a.from, a.fromOffset, a.to, a.toOffset, a.size);
          break;
        case 'write':
          queue.writeBuffer(a.buffer, a.offset, this.bytesFor(a, inputs, labels, mask));
          break;
        case 'submit':
          if (pass) throw new Error('a recorded submit inside a compute pass: this is a bug');
          queue.submit([encoder.finish()]);
          encoder = device.createCommandEncoder();
          break;
        case 'read':
          reads.push(a.buffer.mapAsync(GPUMapMode.READ));
          break;
        default: {
          const never: never = a;
          throw new Error(`replay: action ${JSON.stringify(never)}: this is a bug`);
        }
      }
    }
    this.encodeMs = performance.now() - started;
    await Promise.all(reads);
    const take = (b: GPUBuffer) => {
      const values = new Float32Array(b.getMappedRange().slice(0));
      b.unmap();
      return values;
    };
    const flat = take(this.reads.flat);
    const loss = take(this.reads.loss)[0];
    const acc = take(this.reads.acc)[0];
    for (const b of this.otherReads) if (b.mapState === 'mapped') b.unmap();
    return { flat, loss, acc };
  }

  private bytesFor(a: Extract<Action, { kind: 'write' }>, inputs: StepInputs, labels: Int32Array, mask: (n: number) => Float32Array): ArrayBufferView {
    switch (a.source.kind) {
      case 'constant':
        return a.bytes;
      case 'variable': {
        const { offset, size } = this.variables[a.source.index];
        return inputs.weights.subarray(offset, offset + size);
      }
      case 'x':
        return inputs.x;
      case 'labels':
        return labels;
      case 'mask':
        return maskValues(mask(a.bytes.length / 4), a.source);
    }
  }

  dispose(): void {
    for (const b of this.owned) b.destroy();
  }
}

/** The replayable step: twins of every buffer and bind group, and the recorded calls as actions on them. */
function build(
  device: GPUDevice,
  ops: GpuOp[],
  objects: Map<number, object>,
  sources: Map<number, Source>,
  variables: VariableSpan[],
  eager: StepOutputs,
  batch: number,
): ReplayedStep {
  const U = usage();
  const twins = new Map<number, GPUBuffer>();
  const owned: GPUBuffer[] = [];
  const created = new Set(ops.filter((o) => o.op === 'createBuffer').map((o) => (o as { buffer: number }).buffer));
  const readFirst = buffersReadFirst(ops);
  const snapshot = device.createCommandEncoder();
  const twin = (id: number): GPUBuffer => {
    let b = twins.get(id);
    if (b === undefined) {
      const original = objects.get(id) as GPUBuffer;
      // Staging buffers for writing become copy sources queue.writeBuffer can fill; others keep their usage.
      const mapWrite = (original.usage & U.MAP_WRITE) !== 0;
      const use = mapWrite ? U.COPY_SRC | U.COPY_DST : original.usage | ((original.usage & U.MAP_READ) === 0 ? U.COPY_DST : 0);
      b = device.createBuffer({ size: original.size, usage: use });
      owned.push(b);
      twins.set(id, b);
      if (!created.has(id) && readFirst.has(id)) {
        // Made before the step and read before it writes them: their contents are part of the program.
        if ((original.usage & U.COPY_SRC) === 0) throw new RecordingError(`buffer ${id} is read before the step writes it and cannot be copied`);
        snapshot.copyBufferToBuffer(original, 0, b, 0, original.size);
      }
    }
    return b;
  };
  // Uniform buffers: tfjs' pool hands the same one to program after program, each time written with the
  // program's constants. Each write gets a buffer of its own instead, written once now, so that a step
  // makes none of those ~400 calls; the bind groups made after a write use its buffer.
  const constantOnly = constantlyWritten(ops, sources);
  const version = new Map<number, GPUBuffer>();
  const groups = new Map<number, GPUBindGroup>();
  const actions: Action[] = [];
  let passPipeline: GPUComputePipeline | undefined;
  ops.forEach((o, at) => {
    switch (o.op) {
      case 'createBindGroup':
        groups.set(
          o.group,
          device.createBindGroup({
            layout: objects.get(o.layout) as GPUBindGroupLayout,
            entries: o.entries.map((e) => ({ binding: e.binding, resource: { buffer: version.get(e.buffer) ?? twin(e.buffer), offset: e.offset, size: e.size } })),
          }),
        );
        break;
      case 'setPipeline': {
        // The same pipeline again in the same pass is state WebGPU keeps: a call fewer per dispatch.
        const pipeline = objects.get(o.pipeline) as GPUComputePipeline;
        if (pipeline !== passPipeline) actions.push({ kind: 'pipeline', pipeline });
        passPipeline = pipeline;
        break;
      }
      case 'setBindGroup': {
        const group = groups.get(o.group);
        if (group === undefined) throw new RecordingError(`bind group ${o.group} was made before the recorded step`);
        actions.push({ kind: 'bindGroup', index: o.index, group });
        break;
      }
      case 'dispatch':
        actions.push({ kind: 'dispatch', x: o.x, y: o.y, z: o.z });
        break;
      case 'endPass':
        actions.push({ kind: 'endPass' });
        passPipeline = undefined;
        break;
      case 'copy':
        actions.push({ kind: 'copy', from: twin(o.from), fromOffset: o.fromOffset, to: twin(o.to), toOffset: o.toOffset, size: o.size });
        break;
      case 'writeBuffer':
      case 'upload': {
        const offset = o.op === 'writeBuffer' ? o.offset : 0;
        if (constantOnly.has(o.buffer)) {
          const original = objects.get(o.buffer) as GPUBuffer;
          const fresh = device.createBuffer({ size: original.size, usage: original.usage | U.COPY_DST });
          owned.push(fresh);
          device.queue.writeBuffer(fresh, offset, o.bytes);
          version.set(o.buffer, fresh);
        } else {
          actions.push({ kind: 'write', buffer: twin(o.buffer), offset, bytes: o.bytes, source: sources.get(at)! });
        }
        break;
      }
      case 'submit':
        if (o.commandBuffers > 0) actions.push({ kind: 'submit' });
        break;
      case 'mapRead':
        actions.push({ kind: 'read', buffer: twin(o.buffer) });
        break;
      case 'createBuffer':
      case 'getBindGroupLayout':
      case 'destroy':
        break;
      default: {
        const never: never = o;
        throw new RecordingError(`op ${JSON.stringify(never)}`);
      }
    }
  });
  device.queue.submit([snapshot.finish()]);
  const reads = actions.filter((a) => a.kind === 'read').map((a) => (a as { buffer: GPUBuffer }).buffer);
  const flat = reads.find((b) => b.size >= eager.flat.byteLength);
  const small = reads.filter((b) => b !== flat);
  if (flat === undefined || small.length < 2) throw new RecordingError(`the step read ${reads.length} buffers, not the values, the loss and the accuracy`);
  return new ReplayedStep(device, actions, variables, owned, { flat, loss: small[0], acc: small[1] }, batch);
}

/** Buffers whose first use in the step reads them: binding 0 of a tfjs program is its output, the rest inputs. */
function buffersReadFirst(ops: GpuOp[]): Set<number> {
  const seen = new Set<number>();
  const readFirst = new Set<number>();
  const groups = new Map<number, { binding: number; buffer: number }[]>();
  const touch = (buffer: number, read: boolean) => {
    if (seen.has(buffer)) return;
    seen.add(buffer);
    if (read) readFirst.add(buffer);
  };
  let bound = new Map<number, number>();
  for (const o of ops) {
    if (o.op === 'createBindGroup') groups.set(o.group, o.entries);
    else if (o.op === 'setBindGroup') bound.set(o.index, o.group);
    else if (o.op === 'dispatch') {
      for (const g of bound.values()) for (const e of groups.get(g) ?? []) touch(e.buffer, e.binding !== 0);
    } else if (o.op === 'endPass') bound = new Map();
    else if (o.op === 'copy') {
      touch(o.from, true);
      touch(o.to, false);
    } else if (o.op === 'writeBuffer' || o.op === 'upload') touch(o.buffer, false);
    else if (o.op === 'mapRead') touch(o.buffer, true);
  }
  return readFirst;
}

/**
 * Buffers written only by the CPU with constants, and used only by bind groups (no copy, no dispatch output,
 * no read-back): uniforms. Each of their writes can be a buffer of its own, written once.
 */
function constantlyWritten(ops: GpuOp[], sources: Map<number, Source>): Set<number> {
  const candidates = new Set<number>();
  const excluded = new Set<number>();
  ops.forEach((o, at) => {
    if (o.op === 'writeBuffer' || o.op === 'upload') {
      if (sources.get(at)?.kind === 'constant' && o.op === 'writeBuffer') candidates.add(o.buffer);
      else excluded.add(o.buffer);
    } else if (o.op === 'createBindGroup') {
      for (const e of o.entries) if (e.binding === 0) excluded.add(e.buffer);
    } else if (o.op === 'copy') {
      excluded.add(o.from);
      excluded.add(o.to);
    } else if (o.op === 'mapRead') excluded.add(o.buffer);
  });
  return new Set([...candidates].filter((b) => !excluded.has(b)));
}

/** The device of the current tfjs backend, which must be webgpu. */
export function webgpuDevice(): GPUDevice {
  const backend = tf.backend() as unknown as { device?: GPUDevice };
  if (tf.getBackend() !== 'webgpu' || backend.device === undefined) throw new RecordingError(`replay needs the webgpu backend. Received: ${tf.getBackend()}`);
  return backend.device;
}
