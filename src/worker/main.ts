/**
 * A worker process: one model replica on one device. It speaks the protocol of src/protocol on fd 3
 * (a socket pair the coordinator created), computes what it is asked and never logs, plots or
 * checkpoints: that is the coordinator's job. Its stderr is captured by the coordinator.
 *
 * It is started by the coordinator with its GPU already chosen in its environment
 * (CUDA_VISIBLE_DEVICES for tensorflow; the adapter index for webgpu comes in `init`), because CUDA
 * reads that environment once per process.
 */
import net from 'node:net';
import { setupBackend, type BackendHandle, type BackendOptions } from '../engine/backend.js';
import { checkSoleAdapter, listVulkanDevices } from '../engine/gpu-selection.js';
import { Replica, type Compute } from '../model/replica.js';
import { BulkFile, OWN_REGION, RegionSink, RegionSource, SHARED_REGION } from '../protocol/bulk.js';
import { Channel, type ChannelBulk } from '../protocol/channel.js';
import {
  asToWorker,
  PROTOCOL_VERSION,
  type FromWorker,
  type InitMessage,
  type WorkerConfig,
  type ToWorker,
} from '../protocol/messages.js';
import { FakeCompute } from './fake.js';

let compute: Compute | null = null;
let backend: BackendHandle | null = null;
let rank = -1;
/** The region this worker's replies go to (protocol/bulk.ts), mapped when the coordinator reserved it. */
let replyRegion: BulkFile | null = null;

const socket = new net.Socket({ fd: 3, readable: true, writable: true });
const channel = new Channel(
  socket,
  {
    message: (m) => enqueue(m),
    // The coordinator closed the pipe or died: a worker never outlives it.
    close: () => process.exit(0),
  },
  bulkRegions(process.env.TRAINPOOL_BULK_FDS),
);

/** The inherited bulk regions (protocol/bulk.ts): request and shared weights to read, reply to write. */
function bulkRegions(fds: string | undefined): ChannelBulk {
  if (!fds) return {};
  const [request, reply, shared] = fds.split(',').map((fd) => BulkFile.fromFd(Number(fd)));
  // The regions the coordinator reserved (weights, gradients) are mapped: the weights are read where
  // they lie, the gradients written with a memcpy (protocol/shm.ts). The others stay read/write.
  for (const file of [request, reply, shared]) file.mapReserved();
  replyRegion = reply;
  return { out: new RegionSink(reply), in: new RegionSource({ [OWN_REGION]: request, [SHARED_REGION]: shared }) };
}

// Requests are handled strictly one after another, in arrival order.
let queue: Promise<void> = Promise.resolve();
function enqueue(raw: Record<string, unknown>): void {
  queue = queue.then(() => handle(raw));
}

function reply(m: FromWorker): Promise<void> {
  return channel.send(m);
}

async function handle(raw: Record<string, unknown>): Promise<void> {
  let message: ToWorker | null = null;
  try {
    message = asToWorker(raw);
    await dispatch(message);
  } catch (e) {
    const err = e as Error & { code?: string };
    const id = message && 'id' in message ? message.id : undefined;
    await reply({ type: 'failed', id, message: err.message, code: err.code, stack: err.stack }).catch(() => {});
    // A replica in an unknown state is worth less than a fresh one: exit, the coordinator replaces us.
    await shutdown(1);
  }
}

async function dispatch(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'init':
      return init(m);
    case 'computeGradients': {
      const c = ready();
      const started = performance.now();
      if (m.state) c.setState(m.state);
      const g = await c.computeGradients({ x: m.x, labels: m.labels }, m.dropoutSeed, m.nextDropoutSeed);
      return reply({ type: 'gradientsComputed', id: m.id, ...g, computeMs: performance.now() - started });
    }
    case 'evaluate': {
      const c = ready();
      if (m.state) c.setState(m.state);
      const sums = await c.evaluate({ x: m.x, labels: m.labels });
      return reply({ type: 'evaluated', id: m.id, ...sums });
    }
    case 'batchStatistics': {
      const c = ready();
      if (m.state) c.setState(m.state);
      const stats = await c.batchStatistics({ x: m.x, labels: m.labels });
      return reply({ type: 'batchStatisticsComputed', id: m.id, stats });
    }
    case 'shutdown':
      return shutdown(0);
    default: {
      const never: never = m;
      throw new Error(`unhandled message ${JSON.stringify(never)}: this is a bug`);
    }
  }
}

/**
 * Where a reply's gradients lie in the mapped reply region (a reply's first large attachment is at its start:
 * the gradients of gradientsComputed), for a compute to write them in place; undefined where it is not mapped.
 */
function replyView(values: number): Float32Array | undefined {
  const bytes = replyRegion?.view(0, 4 * values);
  return bytes && new Float32Array(bytes.buffer, bytes.byteOffset, values);
}

function ready(): Compute {
  if (!compute) throw new Error(`worker ${rank} received a request before init: this is a bug`);
  return compute;
}

async function init(m: InitMessage): Promise<void> {
  if (m.protocolVersion !== PROTOCOL_VERSION) {
    throw Object.assign(
      new Error(`protocol version must be ${PROTOCOL_VERSION} (this worker's). Received: ${m.protocolVersion}`),
      { code: 'PROTOCOL' },
    );
  }
  const { config } = m;
  rank = config.rank;
  if (config.compute.kind === 'fake') {
    const { startDelayMs, failInitCode } = config.compute;
    if (failInitCode) throw Object.assign(new Error(`fake init failure (${failInitCode})`), { code: failInitCode });
    compute = new FakeCompute(config.compute, replyView(config.compute.trainableSize));
    if (startDelayMs) await new Promise((r) => setTimeout(r, startDelayMs));
    return reply({
      type: 'ready',
      protocolVersion: PROTOCOL_VERSION,
      rank,
      pid: process.pid,
      backend: config.backend,
      device: 'fake compute',
      // No model is built: the fake's layout is the sizes it was given.
      layoutHash: config.layoutHash,
    });
  }
  backend = await setupBackend(config.backend, backendOptions(config));
  // As the fake's: replayed steps read their gradients back straight into the reply region.
  const replica = new Replica(config.model, { gradientsInto: replyView });
  compute = replica;
  return reply({
    type: 'ready',
    protocolVersion: PROTOCOL_VERSION,
    rank,
    pid: process.pid,
    backend: backend.name,
    // A selected GPU says how it was selected: the run's header then shows every worker alone on its own.
    device: config.gpu?.exclusive && backend.name === 'webgpu' ? `${backend.device}, alone through DRI_PRIME=${process.env.DRI_PRIME}` : backend.device,
    layoutHash: replica.layoutHash,
  });
}

/**
 * Which adapter: a worker that must see its GPU alone (the machine has others; the coordinator started it
 * with Mesa's device-select tag) takes the only adapter there is, after checking it is the one; otherwise
 * the GPU's index in Dawn's order, which dawn.node can select by name where names differ.
 */
function backendOptions({ rank, gpu }: WorkerConfig): BackendOptions {
  if (gpu === null) return {};
  if (!gpu.exclusive || gpu.pciBusId === undefined) return { adapterIndex: gpu.index };
  const expected = { rank, index: gpu.index, name: gpu.name, pciBusId: gpu.pciBusId, tag: process.env.DRI_PRIME };
  return { adapterIndex: 0, checkAdapters: (adapters) => checkSoleAdapter(adapters, expected, listVulkanDevices(process.env)) };
}

async function shutdown(code: number): Promise<never> {
  compute?.dispose();
  compute = null;
  await backend?.close().catch(() => {});
  channel.close();
  process.exit(code);
}
