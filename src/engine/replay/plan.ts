/**
 * The replay plan of a recorded step (replay.ts materializes it): which buffers the step needs of its own,
 * which of them the CPU fills and with what, and the one command buffer a step encodes. Pure: it reads the
 * captured calls (capture.ts) and the source of each upload (inputs.ts), and names buffers by key.
 *
 * tfjs' calls, replayed as they came, write the step's inputs between ~30 submits (a staging buffer for each
 * upload, then a copy; a uniform written before each program), so every submit is an ordering point the
 * replay must keep. The plan removes those points:
 *   - every CPU write starts a *version* of its buffer that lasts until the buffer's next write, and that
 *     version is a buffer of its own; the reads in between use it. A version holds an input (written each
 *     step, all before the step's one submit: nothing else writes it) or a constant (written once, here at
 *     build time: uniforms, tfjs' constants), so no write has to wait for work before it;
 *   - a copy of a whole version into a whole buffer (tfjs' staging upload) makes a version of the target
 *     with the same content, written directly: the staging buffer and the copy go;
 *   - buffers the GPU writes keep one *twin* each, reused as tfjs reused them (the recorded order is kept,
 *     so tfjs' aliasing stays correct); a twin read before the step writes it starts as a copy of the
 *     original, made once;
 *   - the reads the step makes become copies into one read-back buffer (values, loss, accuracy), mapped
 *     once; other reads and submits are dropped; passes with nothing between them are one pass (each
 *     dispatch is its own usage scope in WebGPU, so merging changes no result), and a pipeline or bind
 *     group already set in the pass is not set again.
 * Results stay bit-identical: every dispatch and copy runs in the recorded order on the same bytes.
 */
import type { GpuOp } from './capture.js';
import { RecordingError, type Source } from './inputs.js';

/** A buffer the replayed step owns: a twin of one tfjs used, or a version written by the CPU. */
export type PlanBuffer =
  | { kind: 'twin'; key: string; of: number; size: number; usage: number; snapshot: boolean }
  | { kind: 'version'; key: string; of: number; size: number; usage: number; source: Source; bytes: Uint8Array };

export interface PlanBinding {
  binding: number;
  buffer: string;
  offset: number;
  size: number | undefined;
}

export type PlanCommand =
  | { kind: 'pipeline'; pipeline: number }
  | { kind: 'bindGroup'; index: number; group: number }
  | { kind: 'dispatch'; x: number; y: number; z: number }
  | { kind: 'endPass' }
  | { kind: 'copy'; from: string; fromOffset: number; to: string; toOffset: number; size: number };

/** The read-back buffer's key; its layout is `results`. */
export const READ_BACK = 'read';

export interface StepPlan {
  /** Every buffer a command or bind group names (nothing else is made). */
  buffers: PlanBuffer[];
  /** Bind groups by the recorded group's id: its layout's id and entries on plan buffers. */
  groups: Map<number, { layout: number; entries: PlanBinding[] }>;
  /** The step's one command buffer, in order. */
  commands: PlanCommand[];
  /** Byte offsets of the results in the read-back buffer, and its size. */
  results: { flat: number; flatBytes: number; loss: number; acc: number; size: number };
}

export interface BufferFacts {
  size: number;
  usage: number;
}

// WebGPU's GPUBufferUsage bits, spelled out: the plan is made (and unit-tested) without the webgpu globals.
const MAP_READ = 0x0001;
const MAP_WRITE = 0x0002;
const COPY_SRC = 0x0004;
const COPY_DST = 0x0008;

/**
 * The usage of a buffer of the step's own standing in for one of `usage`: a copy target besides (twins of
 * buffers read before the step writes them, versions the CPU fills), except a map-read buffer, which
 * WebGPU allows to be nothing else; a map-write one (a staging buffer) becomes a plain copy source and target.
 */
function ownUsage(usage: number): number {
  if ((usage & MAP_WRITE) !== 0) return COPY_SRC | COPY_DST;
  return usage | ((usage & MAP_READ) === 0 ? COPY_DST : 0);
}

/**
 * The plan of `ops`. `facts(id)` gives a buffer's size and usage, `sources` each upload's source by its
 * position in `ops`, `flatBytes` the size of the values read back (gradients and BN statistics).
 */
export function planStep(ops: GpuOp[], sources: Map<number, Source>, facts: (id: number) => BufferFacts, flatBytes: number): StepPlan {
  const created = new Set(ops.filter((o) => o.op === 'createBuffer').map((o) => (o as { buffer: number }).buffer));
  const twins = new Map<number, PlanBuffer & { kind: 'twin' }>();
  /** The recorded buffer each twin's key stands for. */
  const twinOf = new Map<string, number>();
  const versions = new Map<string, PlanBuffer & { kind: 'version' }>();
  /** The buffer holding each recorded buffer's contents now: a version's key, or none for its twin. */
  const current = new Map<number, string>();
  /** Twins already touched in the step (their first touch decides whether they need the original's bytes). */
  const touched = new Set<number>();
  const twin = (id: number): string => {
    let t = twins.get(id);
    if (t === undefined) {
      const f = facts(id);
      twins.set(id, (t = { kind: 'twin', key: `t${id}`, of: id, size: f.size, usage: ownUsage(f.usage), snapshot: false }));
      twinOf.set(t.key, id);
    }
    return t.key;
  };
  const touch = (id: number, read: boolean) => {
    twin(id);
    if (touched.has(id)) {
      if (!read && twins.get(id)?.snapshot) throw new RecordingError(`buffer ${id} is read before the step writes it, and then written: the next step would read the step's own output`);
      return;
    }
    touched.add(id);
    if (read && !created.has(id)) twins.get(id)!.snapshot = true;
  };
  /** The buffer to read recorded buffer `id` from now. */
  const reading = (id: number): string => current.get(id) ?? twin(id);
  /** The GPU writes `id` (whole, as tfjs' programs and copies write their outputs): its twin holds it from now. */
  const gpuWrites = (id: number): string => {
    current.delete(id);
    return twin(id);
  };
  const version = (at: number, of: number, source: Source, bytes: Uint8Array): void => {
    const f = facts(of);
    const v = { kind: 'version' as const, key: `v${at}`, of, size: f.size, usage: ownUsage(f.usage), source, bytes };
    versions.set(v.key, v);
    current.set(of, v.key);
  };

  const groups = new Map<number, { layout: number; entries: PlanBinding[] }>();
  const commands: PlanCommand[] = [];
  /** Copies into buffers the step maps for reading, by the mapped buffer: placed once the reads are known. */
  const readCopies: { to: number; at: number; command: PlanCommand & { kind: 'copy' } }[] = [];
  const reads: number[] = [];
  let bound = new Map<number, number>();

  ops.forEach((o, at) => {
    switch (o.op) {
      case 'writeBuffer':
      case 'upload': {
        const offset = o.op === 'writeBuffer' ? o.offset : 0;
        const { size } = facts(o.buffer);
        if (offset !== 0 || o.bytes.length !== size) throw new RecordingError(`write ${at} covers bytes ${offset}–${offset + o.bytes.length} of a ${size}-byte buffer, not all of it`);
        const source = sources.get(at);
        if (source === undefined) throw new RecordingError(`write ${at} has no source: this is a bug`);
        version(at, o.buffer, source, o.bytes);
        break;
      }
      case 'copy': {
        const from = current.get(o.from);
        const source = from === undefined ? undefined : versions.get(from)!;
        const to = facts(o.to);
        if (source && o.fromOffset === 0 && o.toOffset === 0 && o.size === source.size && o.size === to.size && (to.usage & MAP_READ) === 0) {
          // A staging upload: the target's new contents are the version's, written there directly.
          version(at, o.to, source.source, source.bytes);
          break;
        }
        if (from === undefined) touch(o.from, true);
        const command = { kind: 'copy' as const, from: reading(o.from), fromOffset: o.fromOffset, to: '', toOffset: o.toOffset, size: o.size };
        if ((to.usage & MAP_READ) !== 0) readCopies.push({ to: o.to, at, command });
        else {
          if (current.has(o.to) && (o.toOffset !== 0 || o.size !== to.size)) throw new RecordingError(`copy ${at} writes part of a buffer the CPU wrote`);
          touch(o.to, false);
          command.to = gpuWrites(o.to);
        }
        commands.push(command);
        break;
      }
      case 'createBindGroup':
        groups.set(o.group, {
          layout: o.layout,
          // Binding 0 is a tfjs program's output (the project's kernels keep to that, webgpu/program.ts).
          entries: o.entries.map((e) => ({ binding: e.binding, buffer: e.binding === 0 ? gpuWrites(e.buffer) : reading(e.buffer), offset: e.offset, size: e.size })),
        });
        break;
      case 'setPipeline':
        commands.push({ kind: 'pipeline', pipeline: o.pipeline });
        break;
      case 'setBindGroup':
        if (!groups.has(o.group)) throw new RecordingError(`bind group ${o.group} was made before the recorded step`);
        bound.set(o.index, o.group);
        commands.push({ kind: 'bindGroup', index: o.index, group: o.group });
        break;
      case 'dispatch':
        for (const g of bound.values()) {
          for (const e of groups.get(g)!.entries) {
            const id = twinOf.get(e.buffer);
            if (id !== undefined) touch(id, e.binding !== 0);
          }
        }
        commands.push({ kind: 'dispatch', x: o.x, y: o.y, z: o.z });
        break;
      case 'endPass':
        bound = new Map();
        commands.push({ kind: 'endPass' });
        break;
      case 'mapRead':
        reads.push(o.buffer);
        break;
      case 'submit':
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

  // The three results: the values (the one read that large), then the loss and the accuracy, in read order.
  const flat = reads.find((b) => facts(b).size >= flatBytes);
  const small = reads.filter((b) => b !== flat);
  if (flat === undefined || small.length < 2) throw new RecordingError(`the step read ${reads.length} buffers, not the values, the loss and the accuracy`);
  const [flatSize, lossSize, accSize] = [flat, small[0], small[1]].map((b) => facts(b).size);
  const base = new Map<number, number>([
    [flat, 0],
    [small[0], flatSize],
    [small[1], flatSize + lossSize],
  ]);
  for (const { to, command } of readCopies) {
    const at = base.get(to);
    if (at === undefined) commands.splice(commands.indexOf(command), 1); // a read the replay has no use for
    else Object.assign(command, { to: READ_BACK, toOffset: at + command.toOffset });
  }
  const size = flatSize + lossSize + accSize;
  const compact = mergePasses(commands);
  const named = new Set<string>();
  for (const c of compact) if (c.kind === 'copy') named.add(c.from).add(c.to);
  const used = new Set(compact.filter((c) => c.kind === 'bindGroup').map((c) => (c as { group: number }).group));
  for (const [id, g] of groups) {
    if (used.has(id)) for (const e of g.entries) named.add(e.buffer);
    else groups.delete(id);
  }
  const buffers = [...twins.values(), ...versions.values()].filter((b) => named.has(b.key));
  return { buffers, groups, commands: compact, results: { flat: 0, flatBytes, loss: flatSize, acc: flatSize + lossSize, size } };
}

/**
 * One pass where passes follow each other with no copy between, and no pipeline or bind group set again
 * while it is still set in the pass.
 */
export function mergePasses(commands: PlanCommand[]): PlanCommand[] {
  const out: PlanCommand[] = [];
  let pipeline: number | undefined;
  let groups = new Map<number, number>();
  // What follows each endPass, other than more endPasses: found once from the end.
  const following: (PlanCommand | undefined)[] = new Array(commands.length);
  for (let i = commands.length - 1, next: PlanCommand | undefined; i >= 0; i--) {
    following[i] = next;
    if (commands[i].kind !== 'endPass') next = commands[i];
  }
  const nextOther = (i: number) => following[i];
  commands.forEach((c, i) => {
    if (c.kind === 'endPass') {
      const next = nextOther(i);
      if (next !== undefined && next.kind !== 'copy') return; // the next pass continues this one
      if (out.length > 0 && out[out.length - 1].kind !== 'endPass' && out[out.length - 1].kind !== 'copy') out.push(c);
      pipeline = undefined;
      groups = new Map();
      return;
    }
    if (c.kind === 'pipeline') {
      if (c.pipeline === pipeline) return;
      pipeline = c.pipeline;
    } else if (c.kind === 'bindGroup') {
      if (groups.get(c.index) === c.group) return;
      groups.set(c.index, c.group);
    }
    out.push(c);
  });
  return out;
}
