/**
 * Training-step speed of one backend in this process: MiniGoogLeNet (or tiny), forward in training mode
 * plus gradients, as a worker computes them.
 *
 *   npm run bench:engine -- --backend wasm --batch 64 --steps 5 [--model minigooglenet] [--depth 3] [--out file.json]
 *   npm run bench:engine -- --backend webgpu --batch 64 --steps 20 --kernels stock   # tfjs' own kernels only
 *   npm run bench:engine -- --backend webgpu --batch 64 --steps 20 --kernels project-forward   # + the project's forward convolution
 *
 * Prints one table row and, with --out, writes {backend, device, model, batch, steps, kernels, msPerStep,
 * imgPerSec, kernelsPerStep, hostMsPerStep, dispatchesPerStep, uploadBytesPerStep, apiCallsPerStep, sameProgramAcrossSteps}. The first step (kernel compilation,
 * lazy allocation) is a warm-up and not counted. kernelsPerStep counts tfjs kernel invocations (from
 * tf.profile, one step of its own).
 *
 * hostMsPerStep: CPU time of this process's main thread in the synchronous part of a step, i.e. tfjs and
 * tfjs-layers running every kernel of the forward and backward pass up to the read of the gradients
 * (Linux /proc schedstat, nanoseconds; null elsewhere). On webgpu that is the host's share, which the GPU
 * cannot hide: recording, encoding and submitting the step's dispatches. At 64 images a step, 1,600 img/s
 * leaves it 40 ms and 4,600 img/s 13.9 ms. On wasm and cpu the step computes synchronously, so it is
 * nearly all of msPerStep.
 *
 * profiledKernelMs and topKernels: the time tf.profile gives each tfjs kernel in that profiled step,
 * summed, and the 12 kernels (by name) with the most. On webgpu with the timestamp-query feature that is
 * GPU time from timestamp queries (tfjs then submits each program alone, so the profiled step itself runs
 * slower than a timed one), and set against msPerStep it says whether a step is bound by the GPU or by the
 * host; elsewhere it is each kernel call's wall time (profiledKernelClock says which).
 *
 * On webgpu, one more step of its own is counted at the WebGPU API (src/engine/diagnostics/webgpu-counters.ts):
 * dispatchesPerStep, every compute dispatch; uploadBytesPerStep, every byte written from the CPU to the GPU
 * (queue.writeBuffer, which carries each program's uniforms, plus write-mapped buffers, which carry tensor
 * values), less the input batch: the step's images (batch·32·32·3 float32) and labels (batch int32) are
 * each one upload of exactly that size, and those two are taken out (the step fails if either is missing,
 * as the exclusion would then be wrong). Elsewhere both are null. Both counts are exact on any adapter,
 * the software one included; milliseconds are only worth reporting from a real GPU.
 *
 * Two more webgpu steps are captured (src/engine/replay/capture.ts): apiCallsPerStep, every WebGPU call an
 * eager step makes (buffers, bind groups, writes, passes, dispatches, copies, submits: what a recorded
 * replay would cut to a few), and sameProgramAcrossSteps, whether the two steps (other dropout seeds) were
 * one program, the premise of that replay. Null elsewhere.
 *
 * Then on webgpu the same step replayed (a second replica, replay on: its first step records; every step gets
 * its weights by setState, as a worker's does): replayedMsPerStep and replayedImgPerSec, encodeMsPerStep (host
 * time of a replayed step from its start up to its submit, the median over the steps, and encodeMsEachStep
 * every step's: writing the shard, encoding the commands where they were not encoded ahead, submitting; the
 * GPU's work is not in it) and encodePhases: those three parts, aheadMs (encoding the next step's commands
 * right after the submit, while the GPU runs this one) and weightsMs (setState copying the weights where the
 * step reads them, when they arrive); replayedApiCallsPerStep, replayedBufferBytes (the buffers the replayed
 * steps own) and replayedKernelsPerStep (tfjs kernels in a replayed step, from tf.profile: 0). Null elsewhere.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { KERNEL_SETS, setupBackend, type BackendName, type KernelSet } from '../src/engine/backend.js';
import { countGpuWork, type Upload } from '../src/engine/diagnostics/webgpu-counters.js';
import { captureGpuWork, compareSteps } from '../src/engine/replay/capture.js';
import type { ModelName } from '../src/model/minigooglenet.js';
import { Replica } from '../src/model/replica.js';
import { Rng } from '../src/util/random.js';

export interface EngineResult {
  backend: string;
  device: string;
  model: ModelName;
  batch: number;
  steps: number;
  kernels: KernelSet;
  msPerStep: number;
  imgPerSec: number;
  kernelsPerStep: number;
  hostMsPerStep: number | null;
  /** Kernel time of the profiled step (see the header): its sum, and the kernels that took the most. */
  profiledKernelMs: number;
  profiledKernelClock: 'gpu' | 'wall';
  topKernels: Array<{ name: string; ms: number; calls: number }>;
  dispatchesPerStep: number | null;
  uploadBytesPerStep: number | null;
  /** webgpu: WebGPU calls an eager step makes (src/engine/replay/capture.ts), what a replay would cut. */
  apiCallsPerStep: number | null;
  /** webgpu: two captured steps (other dropout seeds) are one program, the premise of replay. */
  sameProgramAcrossSteps: boolean | null;
  /** webgpu: the same steps replayed (src/engine/replay/replay.ts), measured after the eager ones. */
  replayedMsPerStep: number | null;
  replayedImgPerSec: number | null;
  /** Host time of a replayed step before the GPU starts it: writing the shard, encoding unless done ahead, submitting (the median). */
  encodeMsPerStep: number | null;
  /** The same for every replayed step, in order: the median alone hides this VM's spread between steps. */
  encodeMsEachStep: number[] | null;
  /** encodeMsPerStep in parts (medians), and the host's other work for a step: encoding ahead, copying the weights in. */
  encodePhases: { writeMs: number; commandsMs: number; submitMs: number; aheadMs: number; weightsMs: number } | null;
  /** Bytes of the buffers a replayed step owns, beside tfjs' pool. */
  replayedBufferBytes: number | null;
  replayedApiCallsPerStep: number | null;
  /** tfjs kernels a replayed step runs (tf.profile): 0. */
  replayedKernelsPerStep: number | null;
}

export interface EngineOptions {
  backend: BackendName;
  batch: number;
  steps: number;
  model: ModelName;
  kernels: KernelSet;
  /** Image channels: 3 for CIFAR-10, 1 for Fashion-MNIST (whose first convolution is then cheaper). */
  depth?: number;
}

export async function benchEngine(o: EngineOptions): Promise<EngineResult> {
  const handle = await setupBackend(o.backend, { kernels: o.kernels });
  const depth = o.depth ?? 3;
  const spec = { name: o.model, width: 32, height: 32, depth, classes: 10, seed: 1 };
  // The eager measurements first, on a replica that never replays; the replayed ones on one that does.
  const replica = new Replica(spec, { replay: false });
  try {
    const rng = new Rng(7);
    const x = Float32Array.from({ length: o.batch * 32 * 32 * depth }, () => rng.uniform(-120, 120));
    const labels = Uint8Array.from({ length: o.batch }, (_, i) => i % 10);
    await replica.computeGradients({ x, labels }, 0); // warm-up: compilation, allocation
    let dispatchesPerStep: number | null = null;
    let uploadBytesPerStep: number | null = null;
    let apiCallsPerStep: number | null = null;
    let sameProgramAcrossSteps: boolean | null = null;
    if (handle.name === 'webgpu') {
      const { counts } = await countGpuWork(() => replica.computeGradients({ x, labels }, 1));
      dispatchesPerStep = counts.dispatches;
      uploadBytesPerStep = bytesLessInput(counts.uploads, [x.length * 4, labels.length * 4]);
      const [a, b] = [(await captureGpuWork(() => replica.computeGradients({ x, labels }, 2))).ops, (await captureGpuWork(() => replica.computeGradients({ x, labels }, 3))).ops];
      apiCallsPerStep = a.length;
      sameProgramAcrossSteps = compareSteps(a, b).sameProgram;
    }
    // tf.profile hands back one object, which its next call empties: keep the kernels of this one.
    const profiled = (
      await tf.profile(async () => {
        await replica.computeGradients({ x, labels }, 1);
        return [];
      })
    ).kernels.slice();
    let hostNs: number | null = 0;
    const started = performance.now();
    for (let s = 0; s < o.steps; s++) {
      const before = mainThreadCpuNs();
      const step = replica.computeGradients({ x, labels }, s + 2); // runs synchronously up to its first read
      const after = mainThreadCpuNs();
      hostNs = before === null || after === null || hostNs === null ? null : hostNs + (after - before);
      await step;
    }
    const msPerStep = (performance.now() - started) / o.steps;
    const replayed = handle.name === 'webgpu' ? await benchReplay(spec, x, labels, o.steps) : null;
    return {
      backend: handle.name,
      device: handle.device,
      model: o.model,
      batch: o.batch,
      steps: o.steps,
      kernels: o.kernels,
      msPerStep,
      imgPerSec: (o.batch * 1000) / msPerStep,
      kernelsPerStep: profiled.length,
      ...kernelTimes(profiled, handle.name === 'webgpu' && gpuTimestamps()),
      hostMsPerStep: hostNs === null ? null : hostNs / 1e6 / o.steps,
      dispatchesPerStep,
      uploadBytesPerStep,
      apiCallsPerStep,
      sameProgramAcrossSteps,
      replayedMsPerStep: replayed?.msPerStep ?? null,
      replayedImgPerSec: replayed ? (o.batch * 1000) / replayed.msPerStep : null,
      encodeMsPerStep: replayed?.encodeMs ?? null,
      encodeMsEachStep: replayed?.encodeEach ?? null,
      encodePhases: replayed?.phases ?? null,
      replayedBufferBytes: replayed?.bytes ?? null,
      replayedApiCallsPerStep: replayed?.calls ?? null,
      replayedKernelsPerStep: replayed?.kernels ?? null,
    };
  } finally {
    replica.dispose();
    await handle.close();
  }
}

/** `steps` replayed steps (after the eager step that records): ms per step, median host time before the GPU and its parts, calls, bytes, kernels. */
async function benchReplay(spec: ConstructorParameters<typeof Replica>[0], x: Float32Array, labels: Uint8Array, steps: number) {
  const replica = new Replica(spec, { replay: true });
  try {
    const state = await replica.getState();
    replica.setState(state);
    await replica.computeGradients({ x, labels }, 0); // eager, and records
    if (!replica.replaying(labels.length)) throw new Error('bench:engine: the step could not be recorded for replay (its reason is on stderr)');
    // Each step names the next one's dropout seed, as the trainer does: its masks are drawn during this step's GPU work.
    const profile = await tf.profile(async () => void (await replica.computeGradients({ x, labels }, 1, 2)));
    const each: NonNullable<ReturnType<Replica['replayStats']>>[] = [];
    const started = performance.now();
    for (let s = 0; s < steps; s++) {
      replica.setState(state);
      await replica.computeGradients({ x, labels }, s + 2, s + 3);
      each.push(replica.replayStats(labels.length)!);
    }
    const msPerStep = (performance.now() - started) / steps;
    // Medians: one step preempted on this VM (or a GC) is not the host's share.
    const phases = {
      writeMs: median(each.map((e) => e.phases.writeMs)),
      commandsMs: median(each.map((e) => e.phases.commandsMs)),
      submitMs: median(each.map((e) => e.phases.submitMs)),
      aheadMs: median(each.map((e) => e.phases.aheadMs)),
      weightsMs: median(each.map((e) => e.stateMs)),
    };
    const encodeEach = each.map((e) => e.encodeMs);
    return { msPerStep, encodeMs: median(encodeEach), encodeEach, phases, calls: each[0].calls, bytes: each[0].bytes, kernels: profile.kernels.length };
  } finally {
    replica.dispose();
  }
}

/** Whether tfjs-backend-webgpu times programs with GPU timestamp queries on this device. */
function gpuTimestamps(): boolean {
  return (tf.backend() as unknown as { supportTimestampQuery?: boolean }).supportTimestampQuery === true;
}

/** Sums a profile's kernel times, and the kernels with the most time by name. */
export function kernelTimes(
  kernels: ReadonlyArray<{ name: string; kernelTimeMs: unknown }>,
  gpu: boolean,
): Pick<EngineResult, 'profiledKernelMs' | 'profiledKernelClock' | 'topKernels'> {
  const byName = new Map<string, { name: string; ms: number; calls: number }>();
  let total = 0;
  for (const k of kernels) {
    // Ops with a custom gradient (fusedConv2d__op, fusedMatMul__op) are listed around their kernel too.
    if (k.name.endsWith('__op')) continue;
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0; // {error} where a backend cannot time
    const entry = byName.get(k.name) ?? { name: k.name, ms: 0, calls: 0 };
    entry.ms += ms;
    entry.calls++;
    byName.set(k.name, entry);
    total += ms;
  }
  const topKernels = [...byName.values()].sort((a, b) => b.ms - a.ms).slice(0, 12);
  return { profiledKernelMs: total, profiledKernelClock: gpu ? 'gpu' : 'wall', topKernels };
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** CPU time this thread has run, in nanoseconds (Linux: /proc/<pid>/task/<pid>/schedstat, the main thread); null elsewhere. */
export function mainThreadCpuNs(): number | null {
  try {
    return Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return null;
  }
}

/** Total bytes uploaded, less one write-mapped upload of each of `inputSizes` bytes (the input batch). */
export function bytesLessInput(uploads: readonly Upload[], inputSizes: readonly number[]): number {
  const rest = uploads.slice();
  for (const size of inputSizes) {
    const i = rest.findIndex((u) => u.via === 'mapped' && u.bytes === size);
    if (i < 0) {
      throw new Error(
        `the step uploaded no buffer of ${size} bytes, the size of one of its inputs, so the input batch cannot be told apart: ` +
          `this is a bug (uploads: ${uploads.length}, largest ${Math.max(0, ...uploads.map((u) => u.bytes))} bytes)`,
      );
    }
    rest.splice(i, 1);
  }
  return rest.reduce((n, u) => n + u.bytes, 0);
}

async function cli(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'wasm' },
      batch: { type: 'string', default: '64' },
      steps: { type: 'string', default: '5' },
      model: { type: 'string', default: 'minigooglenet' },
      kernels: { type: 'string', default: 'project' },
      depth: { type: 'string', default: '3' },
      out: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (!(KERNEL_SETS as readonly string[]).includes(values.kernels!)) {
    throw new Error(`--kernels must be one of ${KERNEL_SETS.join(', ')}. Received: ${JSON.stringify(values.kernels)}`);
  }
  const r = await benchEngine({
    kernels: values.kernels as KernelSet,
    backend: values.backend as BackendName,
    batch: Number(values.batch),
    steps: Number(values.steps),
    model: values.model as ModelName,
    depth: Number(values.depth),
  });
  if (values.out) writeFileSync(values.out, `${JSON.stringify(r, null, 2)}\n`);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
  } else {
    console.log(`profiled step: ${r.profiledKernelMs.toFixed(1)} ms of ${r.profiledKernelClock} time in kernels; the most:`);
    console.table(r.topKernels.map((k) => ({ kernel: k.name, ms: k.ms.toFixed(2), calls: k.calls })));
    console.table([
      {
        backend: r.backend, device: r.device, model: r.model, 'kernel set': r.kernels, batch: r.batch, 'ms/step': r.msPerStep.toFixed(1),
        'img/s': r.imgPerSec.toFixed(1), 'host ms/step': r.hostMsPerStep?.toFixed(1) ?? '-', 'tfjs kernels': r.kernelsPerStep, dispatches: r.dispatchesPerStep ?? '-', 'upload B': r.uploadBytesPerStep ?? '-', 'API calls': r.apiCallsPerStep ?? '-', 'same program': r.sameProgramAcrossSteps ?? '-',
        'replayed img/s': r.replayedImgPerSec?.toFixed(1) ?? '-', 'encode ms': r.encodeMsPerStep === null ? '-' : `${r.encodeMsPerStep.toFixed(2)} (${Math.min(...r.encodeMsEachStep!).toFixed(2)}–${Math.max(...r.encodeMsEachStep!).toFixed(2)})`, 'shard/commands/submit ms': r.encodePhases ? [r.encodePhases.writeMs, r.encodePhases.commandsMs, r.encodePhases.submitMs].map((v) => v.toFixed(2)).join(' / ') : '-', 'ahead ms': r.encodePhases?.aheadMs.toFixed(2) ?? '-', 'weights in ms': r.encodePhases?.weightsMs.toFixed(2) ?? '-', 'replayed calls': r.replayedApiCallsPerStep ?? '-', 'replayed kernels': r.replayedKernelsPerStep ?? '-',
      },
    ]);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  cli().catch((e) => {
    process.stderr.write(`bench:engine: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
