/**
 * A webgpu training step recorded once and replayed every step: the same dispatches and copies in the same
 * order on buffers of its own, with only the step's inputs (weights, images, labels, dropout masks) written
 * anew. No tfjs kernel runs and no tensor is made in a replayed step.
 *
 * Recording (`ReplayedStep.record`): one eager step on *probe* inputs, captured (capture.ts) with the
 * objects it used. Every value of the probe is distinct, so each upload of the step is told apart by its
 * bytes (inputs.ts): a variable of the layout, the images, the labels (int32), a dropout mask (tfjs draws it
 * on the CPU: seedrandom's alea seeded with the seed's decimal string, tfjs-core rand_util.ts UniformRandom),
 * or a constant of the step. plan.ts turns the calls into a plan: the buffers the step owns, which of them
 * the CPU fills with which input (or once, with a constant), and one command buffer. Then the probe is
 * replayed and its results must equal the eager step's bit for bit, or recording fails.
 *
 * A replayed step is: the flat weights, the images, the labels and each dropout mask copied into one mapped
 * staging buffer; one command buffer (those copied into the buffers the step reads, then the recorded passes
 * and copies, less the uploads' staging copies and the submits between them); one submit; one read-back.
 */
import * as tf from '@tensorflow/tfjs-core';
import { captureGpuWork } from './capture.js';
import { sameBits } from '../../util/bytes.js';
import { identify, maskDrawer, maskValues, probeInputs, RecordingError, type Source, type StepInputs, type StepOutputs, type VariableSpan } from './inputs.js';
import { planStep, READ_BACK, type PlanCommand, type StepPlan } from './plan.js';

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

type Command =
  | { kind: 'pipeline'; pipeline: GPUComputePipeline }
  | { kind: 'bindGroup'; index: number; group: GPUBindGroup }
  | { kind: 'dispatch'; x: number; y: number; z: number }
  | { kind: 'endPass' }
  | { kind: 'copy'; from: GPUBuffer; fromOffset: number; to: GPUBuffer; toOffset: number; size: number };

/** An input other than the weights, and where it goes in the staging buffer. */
interface StagedInput {
  source: Exclude<Source, { kind: 'constant' } | { kind: 'variable' }>;
  /** Byte offset in the staging buffer. */
  offset: number;
  /** Its bytes (a mask's: the length of its draw × 4). */
  bytes: number;
}

const usage = () => globalThis.GPUBufferUsage;
const pad4 = (n: number) => Math.ceil(n / 4) * 4;

export class ReplayedStep {
  /** Host time of the last run, writing its inputs, encoding and submitting, before waiting for the GPU. */
  encodeMs = 0;
  /** encodeMs in parts: writing the inputs, encoding the commands (and finishing), submitting (and mapAsync). */
  phases = { writeMs: 0, commandsMs: 0, submitMs: 0 };
  /** WebGPU calls a run makes. */
  readonly callsPerStep: number;
  /** Bytes of the buffers the step owns (beside tfjs' pool, which keeps its own). */
  readonly bytes: number;

  /** Made by `record` only (materialize below): the plan must come from a verified recording. */
  constructor(
    private readonly device: GPUDevice,
    /**
     * Where the CPU puts a step's inputs: the flat weights at 0, then the others (`inputs`); the first
     * commands copy them into the buffers the step reads. One buffer kept mapped between steps, so a step's
     * inputs are plain copies into memory already there: queue.writeBuffer of 6.6 MB allocates (and faults
     * in) a staging buffer of Dawn's every time, ~5 ms on this VM.
     */
    private readonly staging: GPUBuffer,
    private readonly inputs: StagedInput[],
    private readonly commands: Command[],
    private readonly readBack: GPUBuffer,
    private readonly results: StepPlan['results'],
    private readonly owned: GPUBuffer[],
    readonly batch: number,
  ) {
    const passes = commands.filter((c, i) => c.kind !== 'copy' && c.kind !== 'endPass' && (i === 0 || commands[i - 1].kind === 'copy' || commands[i - 1].kind === 'endPass')).length;
    // getMappedRange and unmap of the staging buffer; the commands, a begin per pass; the encoder, finish,
    // submit; mapAsync of the staging buffer for the next step; mapAsync, getMappedRange, unmap of the read-back.
    this.callsPerStep = 2 + commands.length + passes + 3 + 1 + 3;
    this.bytes = owned.reduce((n, b) => n + b.size, 0);
    this.imageValues = inputs.find((w) => w.source.kind === 'x')!.bytes / 4;
  }

  /** Values of the images a run takes (batch × height × width × depth). */
  private readonly imageValues: number;

  /** The staging buffer mapped for writing: at creation, then again after each step's submit. */
  private mapped: Promise<void> = Promise.resolve();

  /** Records the step of `o`'s shapes; throws RecordingError (with why) where it cannot be replayed exactly. */
  static async record(o: RecordOptions): Promise<ReplayedStep> {
    const probe = probeInputs(o);
    const { ops, objects, result } = await captureGpuWork(() => o.eager(probe), { keep: true });
    const sources = identify(ops, probe, o.variables, o.dropoutRates);
    const facts = (id: number) => objects.get(id) as GPUBuffer;
    const plan = planStep(ops, sources, facts, result.flat.byteLength);
    const step = materialize(o.device, plan, objects, o.variables, o.batch);
    const again = await step.run(probe);
    if (!sameBits(again.flat, result.flat) || !sameBits(Float32Array.of(again.loss), Float32Array.of(result.loss)) || !sameBits(Float32Array.of(again.acc), Float32Array.of(result.acc))) {
      step.dispose();
      throw new RecordingError('the replayed probe step differs from the eager one');
    }
    return step;
  }

  /** Runs the recorded step on `inputs` (of the recorded shapes). */
  async run(inputs: StepInputs): Promise<StepOutputs> {
    if (inputs.labels.length !== this.batch || inputs.x.length !== this.imageValues) {
      throw new Error(`a replayed step takes ${this.batch} images of ${this.imageValues / this.batch} values. Received: ${inputs.labels.length} labels, ${inputs.x.length} values: this is a bug`);
    }
    const { device } = this;
    const queue = device.queue;
    await this.mapped; // resolved once the last step's GPU work is done, before this step's clock starts
    const started = performance.now();
    const staged = this.staging.getMappedRange();
    new Float32Array(staged, 0, inputs.weights.length).set(inputs.weights);
    const mask = maskDrawer(inputs.dropoutSeed);
    for (const w of this.inputs) {
      const s = w.source;
      if (s.kind === 'x') new Float32Array(staged, w.offset, w.bytes / 4).set(inputs.x);
      else if (s.kind === 'labels') new Int32Array(staged, w.offset, w.bytes / 4).set(inputs.labels);
      else new Float32Array(staged, w.offset, w.bytes / 4).set(maskValues(mask(w.bytes / 4), s));
    }
    this.staging.unmap();
    const wrote = performance.now();
    const encoder = device.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    for (const c of this.commands) {
      switch (c.kind) {
        case 'pipeline':
          pass ??= encoder.beginComputePass();
          pass.setPipeline(c.pipeline);
          break;
        case 'bindGroup':
          pass ??= encoder.beginComputePass();
          pass.setBindGroup(c.index, c.group);
          break;
        case 'dispatch':
          pass!.dispatchWorkgroups(c.x, c.y, c.z);
          break;
        case 'endPass':
          pass?.end();
          pass = null;
          break;
        case 'copy':
          if (pass) throw new Error('a copy inside a compute pass: this is a bug');
          encoder.copyBufferToBuffer(c.from, c.fromOffset, c.to, c.toOffset, c.size);
          break;
        default: {
          const never: never = c;
          throw new Error(`replay: command ${JSON.stringify(never)}: this is a bug`);
        }
      }
    }
    pass?.end();
    const commands = encoder.finish();
    const encoded = performance.now();
    queue.submit([commands]);
    this.mapped = this.staging.mapAsync(GPUMapMode.WRITE);
    this.mapped.catch(() => {}); // dispose() before it resolves rejects it; a run awaiting it still sees that
    const read = this.readBack.mapAsync(GPUMapMode.READ);
    const submitted = performance.now();
    this.phases = { writeMs: wrote - started, commandsMs: encoded - wrote, submitMs: submitted - encoded };
    this.encodeMs = submitted - started;
    await read;
    const range = this.readBack.getMappedRange();
    const { flatBytes, loss, acc } = this.results;
    const out = { flat: new Float32Array(range.slice(0, flatBytes)), loss: new Float32Array(range, loss, 1)[0], acc: new Float32Array(range, acc, 1)[0] };
    this.readBack.unmap();
    return out;
  }

  dispose(): void {
    for (const b of this.owned) b.destroy();
  }
}

/** The plan's buffers, bind groups and commands on `device`: constants written and originals copied once. */
function materialize(device: GPUDevice, plan: StepPlan, objects: Map<number, object>, variables: VariableSpan[], batch: number): ReplayedStep {
  const U = usage();
  const owned: GPUBuffer[] = [];
  const buffers = new Map<string, GPUBuffer>();
  const make = (size: number, use: number) => {
    const b = device.createBuffer({ size, usage: use });
    owned.push(b);
    return b;
  };
  const snapshot = device.createCommandEncoder();
  // The staging buffer's layout: the flat weights (the variables are copied out of them), then each other input.
  const weightsBytes = 4 * variables.reduce((n, v) => Math.max(n, v.offset + v.size), 0);
  const inputs: StagedInput[] = [];
  const spread: { from: number; to: GPUBuffer; size: number }[] = [];
  let end = weightsBytes;
  for (const p of plan.buffers) {
    const b = make(p.size, p.usage);
    buffers.set(p.key, b);
    if (p.kind === 'twin' && p.snapshot) {
      // Made before the step and read before it writes them: their contents are part of the program.
      const original = objects.get(p.of) as GPUBuffer;
      if ((original.usage & U.COPY_SRC) === 0) throw new RecordingError(`buffer ${p.of} is read before the step writes it and cannot be copied`);
      snapshot.copyBufferToBuffer(original, 0, b, 0, p.size);
    } else if (p.kind === 'version') {
      if (p.source.kind === 'constant') device.queue.writeBuffer(b, 0, p.bytes);
      else if (p.source.kind === 'variable') {
        const { offset, size } = variables[p.source.index];
        spread.push({ from: 4 * offset, to: b, size: 4 * size });
      } else {
        inputs.push({ source: p.source, offset: end, bytes: p.bytes.length });
        spread.push({ from: end, to: b, size: p.bytes.length });
        end += pad4(p.bytes.length);
      }
    }
  }
  const staging = device.createBuffer({ size: pad4(end), usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true });
  owned.push(staging);
  const copies: Command[] = spread.map((c) => ({ kind: 'copy', from: staging, fromOffset: c.from, to: c.to, toOffset: 0, size: c.size }));
  device.queue.submit([snapshot.finish()]);
  const readBack = make(plan.results.size, U.MAP_READ | U.COPY_DST);
  buffers.set(READ_BACK, readBack);
  const groups = new Map<number, GPUBindGroup>();
  for (const [id, g] of plan.groups) {
    groups.set(
      id,
      device.createBindGroup({
        layout: objects.get(g.layout) as GPUBindGroupLayout,
        entries: g.entries.map((e) => ({ binding: e.binding, resource: { buffer: buffers.get(e.buffer)!, offset: e.offset, size: e.size } })),
      }),
    );
  }
  const recorded = plan.commands.map((c: PlanCommand): Command => {
    switch (c.kind) {
      case 'pipeline':
        return { kind: 'pipeline', pipeline: objects.get(c.pipeline) as GPUComputePipeline };
      case 'bindGroup':
        return { kind: 'bindGroup', index: c.index, group: groups.get(c.group)! };
      case 'copy':
        return { kind: 'copy', from: buffers.get(c.from)!, fromOffset: c.fromOffset, to: buffers.get(c.to)!, toOffset: c.toOffset, size: c.size };
      default:
        return c;
    }
  });
  return new ReplayedStep(device, staging, inputs, [...copies, ...recorded], readBack, plan.results, owned, batch);
}

/** The device of the current tfjs backend, which must be webgpu. */
export function webgpuDevice(): GPUDevice {
  const backend = tf.backend() as unknown as { device?: GPUDevice };
  if (tf.getBackend() !== 'webgpu' || backend.device === undefined) throw new RecordingError(`replay needs the webgpu backend. Received: ${tf.getBackend()}`);
  return backend.device;
}
