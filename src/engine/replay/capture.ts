/**
 * Recording a webgpu training step at the WebGPU API: the first part of record-once, replay-every-step
 * (PyTorch's CUDA Graphs for WebGPU). Replay rests on one claim: a step is the same program every time
 * (the same pipelines, dispatch sizes, uniform values and buffer wiring), and differs only in the bytes
 * uploaded from the CPU (weights, images, labels, dropout masks). `captureGpuWork` records what a piece
 * of work asks of the device; `canonicalProgram` renames every object by first use, so that two steps
 * whose buffers came from different places in tfjs' pool compare equal when they are the same program;
 * `compareSteps` says whether they are, and which uploads are the step's inputs.
 *
 * Like diagnostics/webgpu-counters.ts, the wrappers go on the prototypes of the classes the `webgpu`
 * package put on globalThis (backend.ts does that before tfjs-backend-webgpu loads), once, and record only
 * while a capture is active.
 */

import { sameBits } from '../../util/bytes.js';

/** One WebGPU call, with the objects it names as capture-wide ids. */
export type GpuOp =
  | { op: 'createBuffer'; buffer: number; size: number; usage: number; mapped: boolean }
  | { op: 'createBindGroup'; group: number; layout: number; entries: { binding: number; buffer: number; offset: number; size: number | undefined }[] }
  | { op: 'getBindGroupLayout'; pipeline: number; index: number; layout: number }
  | { op: 'setPipeline'; pipeline: number }
  | { op: 'setBindGroup'; index: number; group: number }
  | { op: 'dispatch'; x: number; y: number; z: number }
  | { op: 'endPass' }
  | { op: 'copy'; from: number; fromOffset: number; to: number; toOffset: number; size: number }
  | { op: 'writeBuffer'; buffer: number; offset: number; bytes: Uint8Array }
  | { op: 'upload'; buffer: number; bytes: Uint8Array }
  | { op: 'submit'; commandBuffers: number }
  | { op: 'mapRead'; buffer: number }
  | { op: 'destroy'; buffer: number };

type Method = (this: object, ...args: unknown[]) => unknown;

let recording: GpuOp[] | undefined;
/** The objects the recording names, by id, while a capture keeps them (replay.ts rebuilds the step on them). */
let kept: Map<number, object> | undefined;
let installed = false;
const ids = new WeakMap<object, number>();
let nextId = 1;
const idOf = (o: object): number => {
  let id = ids.get(o);
  if (id === undefined) ids.set(o, (id = nextId++));
  kept?.set(id, o);
  return id;
};
/** Buffers mapped for writing, and the ranges handed out, whose bytes reach the GPU at unmap. */
const writeMapped = new WeakMap<object, ArrayBuffer[]>();

function wrap(proto: Record<string, unknown>, name: string, after: (self: object, args: unknown[], result: unknown) => void): void {
  const original = proto[name] as Method | undefined;
  if (typeof original !== 'function') throw new Error(`WebGPU capture: ${name} is not a method of the prototype given. Received: ${typeof original}`);
  proto[name] = function (this: object, ...args: unknown[]) {
    const result = original.apply(this, args);
    if (recording !== undefined) after(this, args, result);
    return result;
  };
}

const bytesOf = (data: ArrayBufferView | ArrayBuffer, start = 0, length?: number): Uint8Array => {
  const view = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
  return view.slice(start, length === undefined ? undefined : start + length);
};

/** Wraps the WebGPU methods once; needs the `webgpu` package's globals on globalThis (setupBackend). */
export function installGpuCapture(): void {
  if (installed) return;
  const g = globalThis as unknown as Record<string, { prototype: Record<string, unknown> } | undefined>;
  const [device, queue, encoder, pass, buffer, pipeline] = ['GPUDevice', 'GPUQueue', 'GPUCommandEncoder', 'GPUComputePassEncoder', 'GPUBuffer', 'GPUComputePipeline'].map(
    (name) => g[name]?.prototype,
  );
  if (!device || !queue || !encoder || !pass || !buffer || !pipeline) {
    throw new Error('WebGPU capture needs the WebGPU classes on globalThis: call setupBackend("webgpu") first');
  }
  installed = true;
  const push = (op: GpuOp) => recording!.push(op);
  wrap(device, 'createBuffer', (_d, [desc], made) => {
    const d = desc as GPUBufferDescriptor;
    if (d.mappedAtCreation === true) writeMapped.set(made as object, []);
    push({ op: 'createBuffer', buffer: idOf(made as object), size: d.size, usage: d.usage, mapped: d.mappedAtCreation === true });
  });
  wrap(device, 'createBindGroup', (_d, [desc], made) => {
    const d = desc as GPUBindGroupDescriptor;
    const entries = [...d.entries].map((e) => {
      const r = e.resource as GPUBufferBinding;
      return { binding: e.binding, buffer: idOf(r.buffer), offset: r.offset ?? 0, size: r.size };
    });
    push({ op: 'createBindGroup', group: idOf(made as object), layout: idOf(d.layout as object), entries });
  });
  wrap(pipeline, 'getBindGroupLayout', (p, [index], layout) => push({ op: 'getBindGroupLayout', pipeline: idOf(p), index: index as number, layout: idOf(layout as object) }));
  wrap(pass, 'setPipeline', (_p, [p]) => push({ op: 'setPipeline', pipeline: idOf(p as object) }));
  wrap(pass, 'setBindGroup', (_p, [index, group]) => push({ op: 'setBindGroup', index: index as number, group: idOf(group as object) }));
  wrap(pass, 'dispatchWorkgroups', (_p, [x, y, z]) => push({ op: 'dispatch', x: x as number, y: (y as number | undefined) ?? 1, z: (z as number | undefined) ?? 1 }));
  wrap(pass, 'end', () => push({ op: 'endPass' }));
  wrap(encoder, 'copyBufferToBuffer', (_e, [from, fromOffset, to, toOffset, size]) =>
    push({ op: 'copy', from: idOf(from as object), fromOffset: fromOffset as number, to: idOf(to as object), toOffset: toOffset as number, size: size as number }),
  );
  wrap(queue, 'writeBuffer', (_q, [target, offset, data, dataOffset, size]) => {
    // dataOffset and size count elements of a typed array, bytes of an ArrayBuffer (WebGPU spec).
    const view = data as ArrayBufferView | ArrayBuffer;
    const element = ArrayBuffer.isView(view) ? ((view as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1) : 1;
    const start = ((dataOffset as number | undefined) ?? 0) * element;
    push({ op: 'writeBuffer', buffer: idOf(target as object), offset: offset as number, bytes: bytesOf(view, start, size === undefined ? undefined : (size as number) * element) });
  });
  wrap(queue, 'submit', (_q, [buffers]) => push({ op: 'submit', commandBuffers: (buffers as unknown[]).length }));
  wrap(buffer, 'getMappedRange', (b, _args, range) => writeMapped.get(b)?.push(range as ArrayBuffer));
  wrap(buffer, 'destroy', (b) => push({ op: 'destroy', buffer: idOf(b) }));
  // The bytes of a write-mapped buffer are read at unmap, before the call makes the ranges unusable.
  const unmap = buffer.unmap as Method;
  buffer.unmap = function (this: object) {
    const ranges = writeMapped.get(this);
    if (ranges !== undefined) {
      writeMapped.delete(this);
      if (recording !== undefined) {
        const parts = ranges.map((r) => bytesOf(r));
        const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        parts.reduce((at, p) => (bytes.set(p, at), at + p.length), 0);
        recording.push({ op: 'upload', buffer: idOf(this), bytes });
      }
    }
    return unmap.call(this);
  };
  const mapAsync = buffer.mapAsync as Method;
  buffer.mapAsync = function (this: object, mode: unknown, ...rest: unknown[]) {
    if (recording !== undefined && ((mode as number) & GPUMapMode.READ) !== 0) recording.push({ op: 'mapRead', buffer: idOf(this) });
    const done = mapAsync.call(this, mode, ...rest) as Promise<void>;
    if (((mode as number) & GPUMapMode.WRITE) !== 0) return done.then(() => void writeMapped.set(this, []));
    return done;
  };
}

/**
 * Runs `f` and returns every WebGPU call it made, in order, and with `keep` the objects those calls named
 * (buffers, pipelines, layouts, bind groups), by id. Not reentrant.
 */
export async function captureGpuWork<T>(f: () => Promise<T>, o: { keep?: boolean } = {}): Promise<{ result: T; ops: GpuOp[]; objects: Map<number, object> }> {
  if (recording !== undefined) throw new Error('captureGpuWork is already recording; captures cannot nest');
  installGpuCapture();
  const ops: GpuOp[] = [];
  const objects = new Map<number, object>();
  recording = ops;
  kept = o.keep ? objects : undefined;
  try {
    return { result: await f(), ops, objects };
  } finally {
    recording = undefined;
    kept = undefined;
  }
}

/**
 * The program of a capture: every op with its objects renamed in order of first appearance (b0, b1, … for
 * buffers, p0, … for pipelines, g0, … for bind groups, l0, … for layouts) and the bytes of uploads and
 * writes left out, as one line each. Two steps are the same program iff their programs are equal.
 */
export function canonicalProgram(ops: GpuOp[]): string[] {
  const names = new Map<string, string>();
  const counters: Record<string, number> = {};
  const name = (kind: string, id: number) => {
    const key = `${kind}${id}`;
    let n = names.get(key);
    if (n === undefined) names.set(key, (n = `${kind}${(counters[kind] = (counters[kind] ?? -1) + 1)}`));
    return n;
  };
  return ops.map((o) => {
    switch (o.op) {
      case 'createBuffer':
        return `createBuffer ${name('b', o.buffer)} ${o.size} usage ${o.usage}${o.mapped ? ' mapped' : ''}`;
      case 'createBindGroup':
        return `createBindGroup ${name('g', o.group)} ${name('l', o.layout)} [${o.entries.map((e) => `${e.binding}:${name('b', e.buffer)}+${e.offset}/${e.size ?? 'all'}`).join(' ')}]`;
      case 'getBindGroupLayout':
        return `getBindGroupLayout ${name('p', o.pipeline)}[${o.index}] ${name('l', o.layout)}`;
      case 'setPipeline':
        return `setPipeline ${name('p', o.pipeline)}`;
      case 'setBindGroup':
        return `setBindGroup ${o.index} ${name('g', o.group)}`;
      case 'dispatch':
        return `dispatch ${o.x}×${o.y}×${o.z}`;
      case 'endPass':
        return 'endPass';
      case 'copy':
        return `copy ${name('b', o.from)}+${o.fromOffset} → ${name('b', o.to)}+${o.toOffset} ${o.size}`;
      case 'writeBuffer':
        return `writeBuffer ${name('b', o.buffer)}+${o.offset} ${o.bytes.length}`;
      case 'upload':
        return `upload ${name('b', o.buffer)} ${o.bytes.length}`;
      case 'submit':
        return `submit ${o.commandBuffers}`;
      case 'mapRead':
        return `mapRead ${name('b', o.buffer)}`;
      case 'destroy':
        return `destroy ${name('b', o.buffer)}`;
      default: {
        const never: never = o;
        throw new Error(`canonicalProgram: op ${JSON.stringify(never)}: this is a bug`);
      }
    }
  });
}

export interface StepComparison {
  /** The two captures are the same program (canonicalProgram equal). */
  sameProgram: boolean;
  /** Where they first differ, when they do: the op's position and both lines. */
  firstDifference?: string;
  /** Positions (in ops) of the uploads and writes whose bytes differ: the step's inputs. */
  inputs: number[];
  /** Bytes those carry. */
  inputBytes: number;
}

/** Whether two captured steps are one program, and which of their uploads and writes changed. */
export function compareSteps(a: GpuOp[], b: GpuOp[]): StepComparison {
  const pa = canonicalProgram(a);
  const pb = canonicalProgram(b);
  const at = pa.findIndex((line, i) => line !== pb[i]);
  if (at >= 0 || pa.length !== pb.length) {
    const i = at >= 0 ? at : Math.min(pa.length, pb.length);
    return { sameProgram: false, firstDifference: `op ${i}: ${pa[i] ?? '(end)'} | ${pb[i] ?? '(end)'}`, inputs: [], inputBytes: 0 };
  }
  const inputs: number[] = [];
  let inputBytes = 0;
  a.forEach((o, i) => {
    const p = b[i];
    if ((o.op === 'upload' || o.op === 'writeBuffer') && (p.op === 'upload' || p.op === 'writeBuffer') && !sameBits(o.bytes, p.bytes)) {
      inputs.push(i);
      inputBytes += o.bytes.length;
    }
  });
  return { sameProgram: true, inputs, inputBytes };
}

/** What a capture holds, by kind of op. */
export function summarizeCapture(ops: GpuOp[]): Record<GpuOp['op'], number> {
  const counts = Object.fromEntries(
    (['createBuffer', 'createBindGroup', 'getBindGroupLayout', 'setPipeline', 'setBindGroup', 'dispatch', 'endPass', 'copy', 'writeBuffer', 'upload', 'submit', 'mapRead', 'destroy'] as const).map((k) => [k, 0]),
  ) as Record<GpuOp['op'], number>;
  for (const o of ops) counts[o.op]++;
  return counts;
}
