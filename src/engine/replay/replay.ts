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
 * A replayed step is: the images, the labels and each dropout mask copied into one mapped staging buffer (the
 * weights are already in theirs, weights.ts: the replica's state lives there); one command buffer (both
 * copied to the GPU, each input at an offset the recorded dispatches bind, then the recorded passes and
 * copies, less the uploads' staging copies and the submits between them); one submit; one read-back. The
 * command buffer is encoded during the previous step's GPU work, and so are the dropout masks where the
 * previous step named this one's seed, so the host's part of a step that the GPU waits for is writing the
 * shard and submitting.
 */
import * as tf from '@tensorflow/tfjs-core';
import { captureGpuWork } from './capture.js';
import { sameBits } from '../../util/bytes.js';
import { drawMask, identify, probeInputs, RecordingError, type Source, type StepInputs, type StepOutputs, type VariableSpan } from './inputs.js';
import { planStep, READ_BACK, type PlanBuffer, type PlanCommand, type StepPlan } from './plan.js';
import { WeightStage } from './weights.js';

export { RecordingError, WeightStage, type StepInputs, type StepOutputs, type VariableSpan };

/**
 * A step's inputs other than the weights, which are in the replica's WeightStage; and the dropout seed the
 * next step will likely take (the trainer's guess for this rank), whose masks are drawn while the GPU runs.
 */
export type ShardInputs = Omit<StepInputs, 'weights'> & { nextDropoutSeed?: number };

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
  /** Where the replica keeps its weights: the recording binds its GPU copy (its contents are kept). */
  weights: WeightStage;
}

type Command =
  | { kind: 'pipeline'; pipeline: GPUComputePipeline }
  | { kind: 'bindGroup'; index: number; group: GPUBindGroup }
  | { kind: 'dispatch'; x: number; y: number; z: number }
  | { kind: 'endPass' }
  | { kind: 'copy'; from: GPUBuffer; fromOffset: number; to: GPUBuffer; toOffset: number; size: number };

/** An input other than the weights, and where it goes in the staging buffer (and the GPU's copy of it). */
interface StagedInput {
  source: Exclude<Source, { kind: 'constant' } | { kind: 'variable' }>;
  /** Byte offset in both. */
  offset: number;
  /** Its bytes (a mask's: the length of its draw × 4). */
  bytes: number;
}

const usage = () => globalThis.GPUBufferUsage;
/** Below this a sleep is not worth a timer (Node's are whole milliseconds): the results are asked for at once. */
const MIN_QUIET_MS = 2;
const pad4 = (n: number) => Math.ceil(n / 4) * 4;

export class ReplayedStep {
  /** Host time of the last run before the GPU could start it: writing the shard, encoding unless done ahead, submitting. */
  encodeMs = 0;
  /**
   * encodeMs in parts: writing the shard, encoding the commands (0 where encoded ahead), submitting; then
   * aheadMs, encoding the next run's commands and drawing its masks after the submit, while the GPU runs the step.
   */
  phases = { writeMs: 0, commandsMs: 0, submitMs: 0, aheadMs: 0 };
  /** The last run's time from its submit to its results: what the next run's quiet wait is a share of. */
  private gpuMs = 0;
  /** How long the last run slept before asking for its results (0: it asked at once). */
  quietMs = 0;
  /** Whether the last run submitted commands encoded ahead (all but the recording's check of its probe). */
  encodedAhead = false;
  /** Whether the last run's dropout masks were drawn ahead (its seed was the last run's nextDropoutSeed). */
  masksAhead = false;
  /** WebGPU calls a run makes. */
  readonly callsPerStep: number;
  /** Bytes of the buffers the step owns (beside tfjs' pool, which keeps its own). */
  readonly bytes: number;

  /** Made by `record` only (materialize below): the plan must come from a verified recording. */
  constructor(
    private readonly device: GPUDevice,
    /**
     * Where the CPU puts a step's shard (`inputs`); the first commands copy it to the GPU. One buffer kept
     * mapped between steps, so a step's inputs are plain copies into memory already there:
     * queue.writeBuffer allocates (and faults in) a staging buffer of Dawn's every time (~5 ms on this VM for
     * the weights, when they went that way).
     */
    private readonly staging: GPUBuffer,
    private readonly weights: WeightStage,
    private readonly inputs: StagedInput[],
    private readonly commands: Command[],
    private readonly readBack: GPUBuffer,
    private readonly results: StepPlan['results'],
    private readonly owned: GPUBuffer[],
    readonly batch: number,
  ) {
    const passes = commands.filter((c, i) => c.kind !== 'copy' && c.kind !== 'endPass' && (i === 0 || commands[i - 1].kind === 'copy' || commands[i - 1].kind === 'endPass')).length;
    // getMappedRange and unmap of the staging buffer, unmap of the weights'; the commands, a begin per pass;
    // the encoder, finish, submit; mapAsync of both for the next step and getMappedRange of the weights';
    // mapAsync, getMappedRange, unmap of the read-back.
    this.callsPerStep = 3 + commands.length + passes + 3 + 3 + 3;
    this.bytes = owned.reduce((n, b) => n + b.size, 0);
    this.imageValues = inputs.find((w) => w.source.kind === 'x')!.bytes / 4;
    this.aheadMasks = inputs.map((w) => (w.source.kind === 'mask' ? new Float32Array(w.bytes / 4) : null));
  }

  /** Values of the images a run takes (batch × height × width × depth). */
  private readonly imageValues: number;

  /** The next run's command buffer, encoded while the GPU runs the last one. */
  private next: GPUCommandBuffer | null = null;

  /** The staging buffer mapped for writing: at creation, then again after each step's submit. */
  private mapped: Promise<void> = Promise.resolve();

  /**
   * The masks of `aheadSeed`, drawn while the GPU ran the last step, by the index of their input (null for
   * the others): a run on that seed copies them (~10 µs) instead of drawing them on its critical path (0.4–0.7
   * ms of a batch of 64's ~2.5 before the GPU can start, lavapipe).
   */
  private readonly aheadMasks: (Float32Array | null)[];
  private aheadSeed: number | null = null;

  /** Records the step of `o`'s shapes; throws RecordingError (with why) where it cannot be replayed exactly. */
  static async record(o: RecordOptions): Promise<ReplayedStep> {
    const probe = probeInputs(o);
    const { ops, objects, result } = await captureGpuWork(() => o.eager(probe), { keep: true });
    const sources = identify(ops, probe, o.variables, o.dropoutRates);
    const facts = (id: number) => objects.get(id) as GPUBuffer;
    const plan = planStep(ops, sources, facts, result.flat.byteLength);
    const step = materialize(o.device, plan, objects, o.weights, o.batch);
    // The probe's weights go where the replica's are; those are put back whatever happens.
    await o.weights.ready();
    const kept = o.weights.read();
    let again: StepOutputs;
    try {
      o.weights.write(0, probe.weights);
      again = await step.run(probe);
    } catch (e) {
      step.dispose();
      throw e;
    } finally {
      await o.weights.ready();
      o.weights.write(0, kept);
    }
    if (!sameBits(again.flat, result.flat) || !sameBits(Float32Array.of(again.loss), Float32Array.of(result.loss)) || !sameBits(Float32Array.of(again.acc), Float32Array.of(result.acc))) {
      step.dispose();
      throw new RecordingError('the replayed probe step differs from the eager one');
    }
    return step;
  }

  /**
   * Runs the recorded step on `inputs` (of the recorded shapes) and the weights in the WeightStage. When it
   * resolves, the stage is mapped again (the replica may write its next state).
   *
   * `into`: where the results' first `into.length` values go, straight from the read-back (a worker's reply
   * region, for the gradients); `flat` then holds only the values after them. Without it, `flat` is all of them.
   */
  async run(inputs: ShardInputs, into?: Float32Array): Promise<StepOutputs> {
    if (inputs.labels.length !== this.batch || inputs.x.length !== this.imageValues) {
      throw new Error(`a replayed step takes ${this.batch} images of ${this.imageValues / this.batch} values. Received: ${inputs.labels.length} labels, ${inputs.x.length} values: this is a bug`);
    }
    const queue = this.device.queue;
    await this.mapped; // resolved once the last step's GPU work is done, before this step's clock starts
    await this.weights.ready();
    const started = performance.now();
    const staged = this.staging.getMappedRange();
    this.masksAhead = this.aheadSeed === inputs.dropoutSeed;
    this.inputs.forEach((w, i) => {
      const s = w.source;
      if (s.kind === 'x') new Float32Array(staged, w.offset, w.bytes / 4).set(inputs.x);
      else if (s.kind === 'labels') new Int32Array(staged, w.offset, w.bytes / 4).set(inputs.labels);
      else if (this.masksAhead) new Float32Array(staged, w.offset, w.bytes / 4).set(this.aheadMasks[i]!);
      else drawMask(inputs.dropoutSeed, s, new Float32Array(staged, w.offset, w.bytes / 4));
    });
    this.staging.unmap();
    this.weights.unmap();
    const wrote = performance.now();
    // Encoded while the last step's GPU work ran (below); only the first run of a recording encodes here.
    this.encodedAhead = this.next !== null;
    const commands = this.next ?? this.encode();
    this.next = null;
    const encoded = performance.now();
    queue.submit([commands]);
    // The GPU has the step from here: what follows overlaps its work, and is timed apart (aheadMs).
    const submitted = performance.now();
    // The next run's commands, encoded now while the GPU runs this one: a command buffer is submitted once,
    // but what it records (buffers, bind groups, dispatches) is the same every step, and a buffer's mapping is
    // checked at submit, not while encoding. So the host's ~3 ms of encoding overlaps the GPU's work instead
    // of adding to it.
    this.next = this.encode();
    // And the next run's masks, where the trainer said which seed it will likely take (a wrong guess costs
    // only this: that run draws its own).
    const next = inputs.nextDropoutSeed;
    if (next !== undefined && next !== this.aheadSeed) {
      this.inputs.forEach((w, i) => {
        if (w.source.kind === 'mask') drawMask(next, w.source, this.aheadMasks[i]!);
      });
      this.aheadSeed = next;
    }
    const aheadDone = performance.now();
    // dawn.node polls the device in a setImmediate loop while any of its promises is pending (AsyncRunner):
    // a map requested now would keep this thread busy for the whole of the GPU's step (on lavapipe, 1.9–2.3 s
    // of CPU in a 2.4–2.9 s step, taken from the two cores its own threads run on). So the thread sleeps
    // until the GPU is likely near done (3/4 of the last run's submit-to-results time, which corrects itself:
    // a step that got faster answers at once after the sleep, and the next sleep is shorter) and only then
    // asks for the read-back and for the staging buffers for the next step's writes.
    const quiet = this.gpuMs * 0.75 - (aheadDone - submitted);
    this.quietMs = quiet >= MIN_QUIET_MS ? quiet : 0;
    if (this.quietMs > 0) await new Promise((resolve) => setTimeout(resolve, this.quietMs));
    const read = this.readBack.mapAsync(GPUMapMode.READ);
    this.mapped = this.staging.mapAsync(GPUMapMode.WRITE);
    this.mapped.catch(() => {}); // dispose() before it resolves rejects it; a run awaiting it still sees that
    this.weights.remap();
    this.phases = { writeMs: wrote - started, commandsMs: encoded - wrote, submitMs: submitted - encoded, aheadMs: aheadDone - submitted };
    this.encodeMs = submitted - started;
    await read;
    this.gpuMs = performance.now() - submitted;
    const range = this.readBack.getMappedRange();
    const { flatBytes, loss, acc } = this.results;
    const values = new Float32Array(range, 0, flatBytes / 4);
    const head = into ? Math.min(into.length, values.length) : 0;
    // One copy out of the mapped range, which unmap takes away: where `into` says, the rest into an array.
    if (into) into.set(values.subarray(0, head));
    const out = { flat: values.slice(head), loss: new Float32Array(range, loss, 1)[0], acc: new Float32Array(range, acc, 1)[0] };
    this.readBack.unmap();
    await this.weights.ready();
    return out;
  }

  /** One step's command buffer: the recorded passes and copies. */
  private encode(): GPUCommandBuffer {
    const encoder = this.device.createCommandEncoder();
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
    return encoder.finish();
  }

  dispose(): void {
    this.next = null;
    for (const b of this.owned) b.destroy();
  }
}

/**
 * The plan's buffers, bind groups and commands on `device`: constants written and originals copied once. The
 * variables are bound where the WeightStage holds them; the other inputs lie in one buffer of the step's,
 * each at a bindable offset, filled by one copy from the staging buffer of the same layout.
 */
function materialize(device: GPUDevice, plan: StepPlan, objects: Map<number, object>, weights: WeightStage, batch: number): ReplayedStep {
  const U = usage();
  const align = Math.max(device.limits.minStorageBufferOffsetAlignment, device.limits.minUniformBufferOffsetAlignment);
  const owned: GPUBuffer[] = [];
  /** Where each plan buffer lies: a buffer of its own, or a range of a shared one. */
  const places = new Map<string, { buffer: GPUBuffer; base: number; size: number }>();
  const make = (size: number, use: number) => {
    const b = device.createBuffer({ size, usage: use });
    owned.push(b);
    return b;
  };
  const snapshot = device.createCommandEncoder();
  const constants: (PlanBuffer & { kind: 'version' })[] = [];
  const shard: (PlanBuffer & { kind: 'version' })[] = [];
  // The inputs' buffers are ranges of the weights' and of the shard's: those allow what a tfjs tensor's does.
  const inputUsage = U.STORAGE | U.COPY_SRC | U.COPY_DST;
  for (const p of plan.buffers) {
    if (p.kind === 'version') {
      if (p.source.kind === 'constant') {
        constants.push(p);
        continue;
      }
      if ((p.usage & ~inputUsage) !== 0) throw new RecordingError(`input buffer ${p.of} has usage ${p.usage}, more than a range of a storage buffer allows`);
      if (p.source.kind === 'variable') places.set(p.key, { buffer: weights.gpu, base: weights.slots[p.source.index], size: p.size });
      else shard.push(p);
      continue;
    }
    const b = make(p.size, p.usage);
    places.set(p.key, { buffer: b, base: 0, size: p.size });
    if (p.snapshot) {
      // Made before the step and read before it writes them: their contents are part of the program.
      const original = objects.get(p.of) as GPUBuffer;
      if ((original.usage & U.COPY_SRC) === 0) throw new RecordingError(`buffer ${p.of} is read before the step writes it and cannot be copied`);
      snapshot.copyBufferToBuffer(original, 0, b, 0, p.size);
    }
  }
  // The constants (a uniform buffer per dispatch, tfjs' constant tensors) are ranges of one buffer, written
  // once: Dawn's submit walks every buffer each dispatch binds, and ~400 small buffers of their own cost it
  // ~20 % more than one (MiniGoogLeNet's step on lavapipe, submits after the caches were flushed, seven runs
  // alternated: median 2.19 ms, 1.80–2.30, against 1.74, 1.55–2.27). The GPU never writes them (a write starts
  // a twin), so uniform and read-only storage bindings of the one buffer do not conflict.
  const { offsets: constantAt, bytes: constantBytes } = layOut(constants.map((p) => p.size), align);
  const constantData = new Uint8Array(constantBytes);
  const constantBuffer = make(constantBytes, constants.reduce((u, p) => u | p.usage, U.COPY_DST));
  constants.forEach((p, i) => {
    constantData.set(p.bytes, constantAt[i]);
    places.set(p.key, { buffer: constantBuffer, base: constantAt[i], size: p.size });
  });
  device.queue.writeBuffer(constantBuffer, 0, constantData);
  const { offsets: shardAt, bytes: shardBytes } = layOut(shard.map((p) => p.bytes.length), align);
  const inputs: StagedInput[] = shard.map((p, i) => ({ source: p.source as StagedInput['source'], offset: shardAt[i], bytes: p.bytes.length }));
  const staging = device.createBuffer({ size: shardBytes, usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true });
  owned.push(staging);
  const shardBuffer = make(shardBytes, inputUsage);
  shard.forEach((p, i) => places.set(p.key, { buffer: shardBuffer, base: shardAt[i], size: p.size }));
  device.queue.submit([snapshot.finish()]);
  const readBack = make(plan.results.size, U.MAP_READ | U.COPY_DST);
  places.set(READ_BACK, { buffer: readBack, base: 0, size: plan.results.size });
  const place = (key: string) => places.get(key)!;
  const groups = new Map<number, GPUBindGroup>();
  for (const [id, g] of plan.groups) {
    groups.set(
      id,
      device.createBindGroup({
        layout: objects.get(g.layout) as GPUBindGroupLayout,
        entries: g.entries.map((e) => {
          const { buffer, base, size } = place(e.buffer);
          // A range of a shared buffer is bound with its size; a buffer of its own as tfjs bound it.
          return { binding: e.binding, resource: { buffer, offset: base + e.offset, size: e.size ?? (buffer.size === size && base === 0 ? undefined : size - e.offset) } };
        }),
      }),
    );
  }
  const recorded = plan.commands.map((c: PlanCommand): Command => {
    switch (c.kind) {
      case 'pipeline':
        return { kind: 'pipeline', pipeline: objects.get(c.pipeline) as GPUComputePipeline };
      case 'bindGroup':
        return { kind: 'bindGroup', index: c.index, group: groups.get(c.group)! };
      case 'copy': {
        const from = place(c.from);
        const to = place(c.to);
        return { kind: 'copy', from: from.buffer, fromOffset: from.base + c.fromOffset, to: to.buffer, toOffset: to.base + c.toOffset, size: c.size };
      }
      default:
        return c;
    }
  });
  const copies: Command[] = [
    { kind: 'copy', from: weights.host, fromOffset: 0, to: weights.gpu, toOffset: 0, size: weights.bytes },
    { kind: 'copy', from: staging, fromOffset: 0, to: shardBuffer, toOffset: 0, size: shardBytes },
  ];
  return new ReplayedStep(device, staging, weights, inputs, [...copies, ...recorded], readBack, plan.results, owned, batch);
}

/** Offsets of ranges of `sizes` bytes laid one after another, each at a multiple of `align`, and the bytes they span. */
function layOut(sizes: number[], align: number): { offsets: number[]; bytes: number } {
  let end = 0;
  const offsets = sizes.map((size) => {
    const at = Math.ceil(end / align) * align;
    end = at + pad4(size);
    return at;
  });
  return { offsets, bytes: Math.max(4, end) };
}

/** The device of the current tfjs backend, which must be webgpu. */
export function webgpuDevice(): GPUDevice {
  const backend = tf.backend() as unknown as { device?: GPUDevice };
  if (tf.getBackend() !== 'webgpu' || backend.device === undefined) throw new RecordingError(`replay needs the webgpu backend. Received: ${tf.getBackend()}`);
  return backend.device;
}
