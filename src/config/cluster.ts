/**
 * Which hosts a run spans and which one this is, read from the environment that the launcher users already
 * run sets: one bin/train per host, started by torchrun, a Kubernetes Indexed Job, Slurm's srun, or by hand.
 * Host (node) rank 0 runs the coordinator; global rank = node rank × workers per host + local rank.
 *
 * The contracts, first match wins (a contract matches when its rank variable is set):
 *
 * | contract   | hosts               | this host's rank       | coordinator's address                  |
 * |------------|---------------------|------------------------|----------------------------------------|
 * | trainpool  | TRAINPOOL_NNODES    | TRAINPOOL_NODE_RANK    | TRAINPOOL_MASTER_ADDR                  |
 * | torchrun   | GROUP_WORLD_SIZE    | GROUP_RANK             | MASTER_ADDR                            |
 * | kubeflow   | PET_NNODES          | PET_NODE_RANK          | PET_MASTER_ADDR                        |
 * | env        | WORLD_SIZE          | RANK                   | MASTER_ADDR                            |
 * | kubernetes | TRAINPOOL_NNODES    | JOB_COMPLETION_INDEX   | TRAINPOOL_MASTER_ADDR                  |
 * | slurm      | SLURM_NTASKS        | SLURM_PROCID           | first host of SLURM_JOB_NODELIST       |
 *
 * The coordinator listens on TRAINPOOL_MASTER_PORT (default 29600), never on the launcher's MASTER_PORT:
 * under torchrun the agent of group rank 0 holds that one (its c10d store). torchrun: GROUP_WORLD_SIZE is
 * the number of agents, one per host, and `--nproc-per-node 1` runs one bin/train under each (torchrun's
 * `torch/distributed/elastic/agent/server/api.py` sets GROUP_RANK and GROUP_WORLD_SIZE beside
 * RANK/WORLD_SIZE, which count processes). Kubeflow Trainer v2 (PET_*) writes what torchrun would read.
 * Kubernetes: JOB_COMPLETION_INDEX is the pod's index in an Indexed Job; the job's size and pod 0's DNS name
 * (`<job>-0.<service>` with a headless Service) are the manifest's to give. Slurm: `srun --ntasks-per-node=1`
 * runs one task per host; SLURM_JOB_NODELIST's first host runs task 0 (block distribution, the default).
 */
import { TrainpoolError } from '../util/errors.js';

export type Contract = 'single' | 'trainpool' | 'torchrun' | 'kubeflow' | 'env' | 'kubernetes' | 'slurm';

export interface Cluster {
  contract: Contract;
  /** Hosts in the run (1: this host alone). */
  nodes: number;
  nodeRank: number;
  /** Where host 0's coordinator listens; null when the run has one host. */
  master: { host: string; port: number } | null;
  /** The variables the contract was read from, as `NAME=value`, for the start line. */
  read: string[];
  /** torchrun's TORCHELASTIC_RESTART_COUNT, where set: how many times the launcher restarted the group. */
  restarts: number | null;
}

export const DEFAULT_MASTER_PORT = 29600;

type Env = Record<string, string | undefined>;

export class LaunchError extends TrainpoolError {
  constructor(message: string) {
    super('LAUNCH', message);
  }
}

interface ContractSpec {
  contract: Exclude<Contract, 'single'>;
  size: string;
  rank: string;
  /** The variable naming the coordinator's host, or how to find it. */
  master: string | ((env: Env) => string | undefined);
  /** Variables that must say "one bin/train per host", with what they must be. */
  onePerHost?: { name: string; value: string; fix: string }[];
}

const CONTRACTS: ContractSpec[] = [
  { contract: 'trainpool', size: 'TRAINPOOL_NNODES', rank: 'TRAINPOOL_NODE_RANK', master: 'TRAINPOOL_MASTER_ADDR' },
  {
    contract: 'torchrun',
    size: 'GROUP_WORLD_SIZE',
    rank: 'GROUP_RANK',
    master: 'MASTER_ADDR',
    onePerHost: [{ name: 'LOCAL_WORLD_SIZE', value: '1', fix: 'torchrun --nproc-per-node 1: trainpool starts one worker per GPU itself' }],
  },
  { contract: 'kubeflow', size: 'PET_NNODES', rank: 'PET_NODE_RANK', master: 'PET_MASTER_ADDR' },
  { contract: 'env', size: 'WORLD_SIZE', rank: 'RANK', master: 'MASTER_ADDR' },
  { contract: 'kubernetes', size: 'TRAINPOOL_NNODES', rank: 'JOB_COMPLETION_INDEX', master: 'TRAINPOOL_MASTER_ADDR' },
  {
    contract: 'slurm',
    size: 'SLURM_NTASKS',
    rank: 'SLURM_PROCID',
    master: (env) => (env.SLURM_JOB_NODELIST ? firstHost(env.SLURM_JOB_NODELIST) : undefined),
    onePerHost: [{ name: 'SLURM_LOCALID', value: '0', fix: 'srun --ntasks-per-node=1: trainpool starts one worker per GPU itself' }],
  },
];

/** This host's place in the run, from `env`; throws LaunchError naming the variable where it is inconsistent. */
export function clusterFromEnv(env: Env): Cluster {
  const spec = CONTRACTS.find((c) => env[c.rank] !== undefined && env[c.rank] !== '');
  if (!spec) return { contract: 'single', nodes: 1, nodeRank: 0, master: null, read: [], restarts: null };
  const read = [`${spec.rank}=${env[spec.rank]}`];
  if (env[spec.size] === undefined) throw new LaunchError(`${spec.size} must give the number of hosts where ${spec.rank} gives this one's (${spec.contract}). Received: ${read[0]} and no ${spec.size}`);
  const nodes = count(env, spec.size, 1);
  read.push(`${spec.size}=${env[spec.size]}`);
  const nodeRank = count(env, spec.rank, 0);
  if (nodeRank >= nodes) throw new LaunchError(`${spec.rank} must be below ${spec.size} (${nodes}) for ${spec.contract}. Received: ${spec.rank}=${nodeRank}`);
  for (const { name, value, fix } of spec.onePerHost ?? []) {
    if (env[name] !== undefined && env[name] !== value) throw new LaunchError(`${name} must be ${value}: one bin/train per host (${fix}). Received: ${name}=${env[name]}`);
  }
  const restarts = spec.contract === 'torchrun' && env.TORCHELASTIC_RESTART_COUNT !== undefined ? count(env, 'TORCHELASTIC_RESTART_COUNT', 0) : null;
  if (nodes === 1) return { contract: spec.contract, nodes, nodeRank, master: null, read, restarts };
  const masterName = typeof spec.master === 'string' ? spec.master : 'SLURM_JOB_NODELIST';
  const host = typeof spec.master === 'string' ? env[spec.master] : spec.master(env);
  if (!host) throw new LaunchError(`${masterName} must name host 0 when ${spec.size} is ${nodes} (${spec.contract}). Received: ${env[masterName] === undefined ? 'nothing' : JSON.stringify(env[masterName])}`);
  read.push(`${masterName}=${env[masterName]}`);
  return { contract: spec.contract, nodes, nodeRank, master: { host, port: masterPort(env, spec.contract) }, read, restarts };
}

function count(env: Env, name: string, min: number): number {
  const raw = env[name] ?? '';
  const n = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    // Kubeflow and torchrun accept an elastic range (1:4) for the number of nodes; trainpool's runs do not resize.
    const why = /^\d+:\d+$/.test(raw.trim()) ? ' (a fixed number of hosts: trainpool does not resize a run)' : '';
    throw new LaunchError(`${name} must be an integer ≥ ${min}${why}. Received: ${name}=${JSON.stringify(raw)}`);
  }
  return n;
}

function masterPort(env: Env, contract: Contract): number {
  const raw = env.TRAINPOOL_MASTER_PORT;
  const port = raw === undefined ? DEFAULT_MASTER_PORT : /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new LaunchError(`TRAINPOOL_MASTER_PORT must be a port number, 1 to 65535. Received: ${JSON.stringify(raw)}`);
  if (contract === 'torchrun' && env.MASTER_PORT !== undefined && Number(env.MASTER_PORT) === port) {
    throw new LaunchError(`TRAINPOOL_MASTER_PORT must differ from MASTER_PORT under torchrun: torchrun's agent on host 0 holds ${port}. Received: TRAINPOOL_MASTER_PORT=${port}`);
  }
  return port;
}

/**
 * The first host of a Slurm node list: `node[01-04,07],gpu5` → `node01`. Slurm's hostlist syntax
 * (src/common/hostlist.c): comma-separated entries, each a name with bracketed ranges and lists,
 * zero-padding kept; the first entry's first value of each bracket is the first host.
 */
export function firstHost(nodelist: string): string {
  let depth = 0;
  let end = nodelist.length;
  for (let i = 0; i < nodelist.length; i++) {
    const c = nodelist[i];
    if (c === '[') depth++;
    else if (c === ']') depth--;
    else if (c === ',' && depth === 0) {
      end = i;
      break;
    }
  }
  const entry = nodelist.slice(0, end).trim();
  const host = entry.replace(/\[([^\]]*)\]/g, (_, inside: string) => inside.split(',')[0].split('-')[0]);
  if (!host || /[[\]]/.test(host) || depth !== 0) throw new LaunchError(`SLURM_JOB_NODELIST must be a Slurm host list (node[01-04],gpu5). Received: ${JSON.stringify(nodelist)}`);
  return host;
}

/** Whether `host` names this machine's loopback interface, where only local processes can connect. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The start line: which contract was read and this host's place in it. */
export function describeCluster(c: Cluster, workersPerHost: number): string {
  if (c.nodes === 1) return c.contract === 'single' ? 'one host' : `one host (${c.contract}: ${c.read.join(', ')})`;
  const first = c.nodeRank * workersPerHost;
  const ranks = workersPerHost === 1 ? `global rank ${first}` : `global ranks ${first}–${first + workersPerHost - 1}`;
  const role = c.nodeRank === 0 ? `the coordinator, listening on port ${c.master!.port}` : `coordinator at ${c.master!.host}:${c.master!.port}`;
  const restarts = c.restarts ? `, restart ${c.restarts}` : '';
  return `host ${c.nodeRank} of ${c.nodes} (${c.contract}: ${c.read.join(', ')}${restarts}); ${ranks}; ${role}`;
}
