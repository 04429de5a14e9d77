/**
 * bin/train's part in a run on several hosts (config/cluster.ts reads which one this is): the run's shared
 * secret, and the whole of what a host other than host 0 does (coordinator/hosts/agent.ts).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { describeCluster, isLoopback, LaunchError, type Cluster } from '../config/cluster.js';
import type { ResolvedConfig } from '../config/config.js';
import { DATASET_SHAPES } from '../data/dataset.js';
import { readSecret } from '../protocol/handshake.js';

/**
 * The secret every host proves it holds: TRAINPOOL_SECRET_FILE's bytes. Required when host 0 is reached
 * beyond loopback; on loopback without a file, a well-known one (the handshake still frames and caps what
 * arrives, but any process on this machine could join: set the file to keep them out).
 */
export function hostSecret(cluster: Cluster, env: NodeJS.ProcessEnv): Buffer {
  const file = env.TRAINPOOL_SECRET_FILE;
  if (file) {
    try {
      return readSecret(file);
    } catch (e) {
      throw new LaunchError((e as Error).message);
    }
  }
  const host = cluster.master!.host;
  if (!isLoopback(host)) {
    throw new LaunchError(`TRAINPOOL_SECRET_FILE must name the run's shared secret (the same file on every host: openssl rand -hex 32 > secret) when host 0 is reached at ${host}, beyond loopback. Received: nothing`);
  }
  return createHash('sha256').update('trainpool: loopback run without TRAINPOOL_SECRET_FILE').digest();
}

/**
 * TLS between hosts, optional (the handshake authenticates either way; TLS also hides the weights on the
 * wire): host 0 serves TRAINPOOL_TLS_CERT with TRAINPOOL_TLS_KEY (serverTls); the others check it against
 * TRAINPOOL_TLS_CA, or against TRAINPOOL_TLS_CERT itself where no CA is given (clientTls: one self-signed
 * certificate for the run, the same variables on every host). Each is null where none is set.
 */
export function serverTls(env: NodeJS.ProcessEnv): { cert: Buffer; key: Buffer } | null {
  if (!env.TRAINPOOL_TLS_CERT && !env.TRAINPOOL_TLS_KEY) return null;
  const missing = ['TRAINPOOL_TLS_CERT', 'TRAINPOOL_TLS_KEY'].find((n) => !env[n]);
  if (missing) throw new LaunchError(`${missing} must be set with ${missing === 'TRAINPOOL_TLS_KEY' ? 'TRAINPOOL_TLS_CERT' : 'TRAINPOOL_TLS_KEY'} on host 0 (its certificate and its key). Received: nothing`);
  return { cert: readTlsFile(env, 'TRAINPOOL_TLS_CERT'), key: readTlsFile(env, 'TRAINPOOL_TLS_KEY') };
}

/** What a host other than host 0 trusts host 0's certificate by (serverTls above). */
export function clientTls(env: NodeJS.ProcessEnv): { ca: Buffer } | null {
  if (env.TRAINPOOL_TLS_CA) return { ca: readTlsFile(env, 'TRAINPOOL_TLS_CA') };
  return env.TRAINPOOL_TLS_CERT ? { ca: readTlsFile(env, 'TRAINPOOL_TLS_CERT') } : null;
}

function readTlsFile(env: NodeJS.ProcessEnv, name: string): Buffer {
  const file = env[name]!;
  try {
    return readFileSync(file);
  } catch (e) {
    throw new LaunchError(`${name} must name a readable file. Received: ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** What bin/train does on host k > 0: serve its ranks until host 0 ends the run. Returns the exit code. */
export async function runHost(config: ResolvedConfig, cluster: Cluster, out: (line: string) => void): Promise<number> {
  const secret = hostSecret(cluster, process.env);
  const tls = clientTls(process.env);
  // The layout its workers must build, from the coordinator's own recipe (cpu backend, no data needed).
  const [{ setupBackend }, { Replica }, { runAgent }, { loadDataset }, { datasetOptions }] = await Promise.all([
    import('../engine/backend.js'),
    import('../model/replica.js'),
    import('../coordinator/hosts/agent.js'),
    import('../data/load.js'),
    import('../config/resolve.js'),
  ]);
  // Its ranks' shards are built here, from the same data as host 0's (their fingerprints are compared).
  const data = await loadDataset(datasetOptions(config));
  const spec = { name: config.model, ...DATASET_SHAPES[config.dataset], seed: config.seed };
  const cpu = await setupBackend('cpu');
  const master = new Replica(spec);
  const layoutHash = master.layoutHash;
  const sizes = { totalSize: master.layout.totalSize, trainableSize: master.layout.trainableSize };
  master.dispose();
  await cpu.close();
  out(describeCluster(cluster, config.workers));
  const logger = pino({ level: config.logLevel, base: { pid: process.pid, node: cluster.nodeRank } }, pino.destination(2));
  try {
    const reason = await runAgent({ config, cluster, secret, spec, layoutHash, sizes, logger, out, tls: tls ?? undefined, data, augmentThreads: config.augmentThreads, reduce: config.hostReduce });
    out(`done: ${reason}`);
    return 0;
  } finally {
    logger.flush();
  }
}
