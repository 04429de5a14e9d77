/**
 * A helper thread of the exchange arena (kernels.ts): it runs kernels.wat's meanSgd on its share of the
 * arrays, over the arena's own shared WebAssembly memory, whenever the coordinator's thread asks.
 *
 * Plain JavaScript on purpose: a worker thread under Node 20 cannot load .ts (see data/augment-task.mjs),
 * and this loop needs nothing but the memory, the compiled module and its slot of the control block.
 *
 * The slot (Int32 indices from `slot`, layout in kernels.ts's THREAD_SLOT): the coordinator writes a job's
 * arguments, then a new generation, and notifies; this thread runs the job, stores its result, stores the
 * generation as done, and notifies back. A generation of -1 ends the loop.
 */
import { workerData } from 'node:worker_threads';

const { memory, module, slot } = workerData;
const k = new WebAssembly.Instance(module, { env: { memory } }).exports;
const c = new Int32Array(memory.buffer);
const f = new Float32Array(memory.buffer);
const GEN = slot;
const DONE = slot + 1;
let seen = Atomics.load(c, GEN);
Atomics.store(c, slot + 10, 1); // ready
for (;;) {
  Atomics.wait(c, GEN, seen);
  seen = Atomics.load(c, GEN);
  if (seen < 0) break;
  const ok = k.meanSgd(c[slot + 2], c[slot + 3], c[slot + 4], c[slot + 5], c[slot + 6], f[slot + 7], f[slot + 8]);
  c[slot + 9] = ok;
  Atomics.store(c, DONE, seen);
  Atomics.notify(c, DONE);
}
