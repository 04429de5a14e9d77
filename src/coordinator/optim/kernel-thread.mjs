/**
 * A helper thread of the exchange arena (kernels.ts): whenever the coordinator's thread starts an update,
 * it takes chunks of it from their common ticket (kernels.wat meanSgdShared) until none is left, over the
 * arena's own shared WebAssembly memory. A helper that wakes late finds fewer chunks, or none: the update
 * never waits for a thread to wake, only for chunks already taken to finish.
 *
 * Plain JavaScript on purpose: a worker thread under Node 20 cannot load .ts (see data/augment-task.mjs),
 * and this loop needs nothing but the memory, the compiled module and the control block.
 *
 * The control block (Int32 index `control`, layout in kernels.ts CONTROL, which also gives the indices of its
 * generation and ready count): the coordinator writes an update's arguments and its ticket, then a new
 * generation, and wakes every helper; a generation of -1 ends the loop.
 */
import { workerData } from 'node:worker_threads';

const { memory, module, control, gen: GEN, ready: READY, bit } = workerData;
const k = new WebAssembly.Instance(module, { env: { memory } }).exports;
const c = new Int32Array(memory.buffer);
let seen = Atomics.load(c, GEN);
Atomics.add(c, READY, 1);
for (;;) {
  Atomics.wait(c, GEN, seen);
  seen = Atomics.load(c, GEN);
  if (seen < 0) break;
  k.meanSgdShared(4 * control, seen, bit);
}
