/**
 * The launchers' environments (src/config/cluster.ts): each contract as its launcher sets it, which one wins
 * where several are set, and the one-line refusals for what cannot be a run of one bin/train per host.
 */
import { describe, expect, it } from 'vitest';
import { clusterFromEnv, describeCluster, firstHost, type Cluster } from '../src/config/cluster.js';
import { isTrainpoolError } from '../src/util/errors.js';

const refused = (env: Record<string, string>): string => {
  try {
    clusterFromEnv(env);
  } catch (e) {
    expect(isTrainpoolError(e, 'LAUNCH')).toBe(true);
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
};

describe('the launchers’ contracts', () => {
  it('is one host when no launcher variable is set', () => {
    expect(clusterFromEnv({ HOME: '/root', PATH: '/bin' })).toEqual({ contract: 'single', nodes: 1, nodeRank: 0, master: null, read: [], restarts: null });
  });

  it('reads torchrun’s group (one agent per host), not its process ranks, and keeps off the agent’s port', () => {
    // torchrun --nnodes 4 --nproc-per-node 1 --no-python bin/train, on the third host, after one restart.
    const env = { GROUP_RANK: '2', GROUP_WORLD_SIZE: '4', RANK: '2', WORLD_SIZE: '4', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '1', MASTER_ADDR: 'n0.example', MASTER_PORT: '29500', TORCHELASTIC_RESTART_COUNT: '1' };
    const c = clusterFromEnv(env);
    expect(c).toEqual({ contract: 'torchrun', nodes: 4, nodeRank: 2, master: { host: 'n0.example', port: 29600 }, read: ['GROUP_RANK=2', 'GROUP_WORLD_SIZE=4', 'MASTER_ADDR=n0.example'], restarts: 1 });
    expect(describeCluster(c, 4)).toBe('host 2 of 4 (torchrun: GROUP_RANK=2, GROUP_WORLD_SIZE=4, MASTER_ADDR=n0.example, restart 1); global ranks 8–11; coordinator at n0.example:29600');
    expect(refused({ ...env, TRAINPOOL_MASTER_PORT: '29500' })).toBe("TRAINPOOL_MASTER_PORT must differ from MASTER_PORT under torchrun: torchrun's agent on host 0 holds 29500. Received: TRAINPOOL_MASTER_PORT=29500");
    expect(refused({ ...env, LOCAL_WORLD_SIZE: '8', LOCAL_RANK: '3' })).toBe(
      'LOCAL_WORLD_SIZE must be 1: one bin/train per host (torchrun --nproc-per-node 1: trainpool starts one worker per GPU itself). Received: LOCAL_WORLD_SIZE=8',
    );
  });

  it('reads Kubeflow Trainer’s PET_ variables, and refuses an elastic range of hosts', () => {
    const c = clusterFromEnv({ PET_NNODES: '2', PET_NODE_RANK: '0', PET_MASTER_ADDR: 'job-node-0-0.job', PET_MASTER_PORT: '29400', TRAINPOOL_MASTER_PORT: '31000' });
    expect(c).toMatchObject({ contract: 'kubeflow', nodes: 2, nodeRank: 0, master: { host: 'job-node-0-0.job', port: 31000 } });
    expect(describeCluster(c, 1)).toBe('host 0 of 2 (kubeflow: PET_NODE_RANK=0, PET_NNODES=2, PET_MASTER_ADDR=job-node-0-0.job); global rank 0; the coordinator, listening on port 31000');
    expect(refused({ PET_NNODES: '1:4', PET_NODE_RANK: '0', PET_MASTER_ADDR: 'a' })).toBe('PET_NNODES must be an integer ≥ 1 (a fixed number of hosts: trainpool does not resize a run). Received: PET_NNODES="1:4"');
  });

  it('reads the env:// variables of torch.distributed', () => {
    expect(clusterFromEnv({ WORLD_SIZE: '3', RANK: '1', MASTER_ADDR: '10.0.0.5' })).toMatchObject({ contract: 'env', nodes: 3, nodeRank: 1, master: { host: '10.0.0.5', port: 29600 } });
  });

  it('reads a Kubernetes Indexed Job’s index, with the size and host 0 from the manifest', () => {
    const env = { JOB_COMPLETION_INDEX: '3', TRAINPOOL_NNODES: '4', TRAINPOOL_MASTER_ADDR: 'train-0.train', TRAINPOOL_MASTER_PORT: '29601' };
    expect(clusterFromEnv(env)).toMatchObject({ contract: 'kubernetes', nodes: 4, nodeRank: 3, master: { host: 'train-0.train', port: 29601 } });
    expect(refused({ JOB_COMPLETION_INDEX: '3' })).toBe('TRAINPOOL_NNODES must give the number of hosts where JOB_COMPLETION_INDEX gives this one\'s (kubernetes). Received: JOB_COMPLETION_INDEX=3 and no TRAINPOOL_NNODES');
    expect(refused({ JOB_COMPLETION_INDEX: '1', TRAINPOOL_NNODES: '2' })).toBe('TRAINPOOL_MASTER_ADDR must name host 0 when TRAINPOOL_NNODES is 2 (kubernetes). Received: nothing');
  });

  it('reads srun’s task, with host 0 the first of the node list, one task per host', () => {
    const env = { SLURM_NTASKS: '4', SLURM_PROCID: '1', SLURM_LOCALID: '0', SLURM_JOB_NODELIST: 'gpu[07-10],cpu1' };
    expect(clusterFromEnv(env)).toMatchObject({ contract: 'slurm', nodes: 4, nodeRank: 1, master: { host: 'gpu07', port: 29600 }, read: ['SLURM_PROCID=1', 'SLURM_NTASKS=4', 'SLURM_JOB_NODELIST=gpu[07-10],cpu1'] });
    expect(refused({ ...env, SLURM_LOCALID: '2' })).toMatch(/^SLURM_LOCALID must be 0: one bin\/train per host \(srun --ntasks-per-node=1/);
    expect(refused({ ...env, SLURM_JOB_NODELIST: 'gpu[07-10' })).toBe('SLURM_JOB_NODELIST must be a Slurm host list (node[01-04],gpu5). Received: "gpu[07-10"');
  });

  it('takes the first contract whose rank is set, in the documented order', () => {
    // Everything set at once: trainpool's own variables win, then torchrun's group over the env:// ranks.
    const all = { TRAINPOOL_NODE_RANK: '1', TRAINPOOL_NNODES: '2', TRAINPOOL_MASTER_ADDR: 'mine', GROUP_RANK: '0', GROUP_WORLD_SIZE: '3', MASTER_ADDR: 'torch', RANK: '5', WORLD_SIZE: '6', SLURM_PROCID: '0', SLURM_NTASKS: '9', SLURM_JOB_NODELIST: 'x1' };
    expect(clusterFromEnv(all)).toMatchObject({ contract: 'trainpool', nodeRank: 1, master: { host: 'mine' } });
    const { TRAINPOOL_NODE_RANK, ...torch } = all;
    expect(TRAINPOOL_NODE_RANK).toBe('1');
    expect(clusterFromEnv(torch)).toMatchObject({ contract: 'torchrun', nodes: 3, nodeRank: 0, master: { host: 'torch' } });
    // An empty variable is not set (a manifest's `value: ""`).
    expect(clusterFromEnv({ ...torch, GROUP_RANK: '' })).toMatchObject({ contract: 'env', nodes: 6, nodeRank: 5 });
  });

  it('is one host, without an address, where the launcher says one', () => {
    const c: Cluster = clusterFromEnv({ WORLD_SIZE: '1', RANK: '0' });
    expect(c).toMatchObject({ contract: 'env', nodes: 1, master: null });
    expect(describeCluster(c, 2)).toBe('one host (env: RANK=0, WORLD_SIZE=1)');
  });

  it('refuses ranks, sizes and ports that are not numbers in range, naming the variable', () => {
    expect(refused({ RANK: '2', WORLD_SIZE: '2', MASTER_ADDR: 'a' })).toBe('RANK must be below WORLD_SIZE (2) for env. Received: RANK=2');
    expect(refused({ RANK: '-1', WORLD_SIZE: '2', MASTER_ADDR: 'a' })).toBe('RANK must be an integer ≥ 0. Received: RANK="-1"');
    expect(refused({ RANK: '0', WORLD_SIZE: '0', MASTER_ADDR: 'a' })).toBe('WORLD_SIZE must be an integer ≥ 1. Received: WORLD_SIZE="0"');
    expect(refused({ RANK: '0', WORLD_SIZE: 'two' })).toBe('WORLD_SIZE must be an integer ≥ 1. Received: WORLD_SIZE="two"');
    expect(refused({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: 'a', TRAINPOOL_MASTER_PORT: '70000' })).toBe('TRAINPOOL_MASTER_PORT must be a port number, 1 to 65535. Received: "70000"');
    expect(refused({ RANK: '0', WORLD_SIZE: '2' })).toBe('MASTER_ADDR must name host 0 when WORLD_SIZE is 2 (env). Received: nothing');
  });
});

describe('Slurm host lists', () => {
  it.each([
    ['node01', 'node01'],
    ['node[01-04]', 'node01'],
    ['node[007,010-012],gpu5', 'node007'],
    ['rack[2-3]-n[10-11]', 'rack2-n10'],
    ['a1,b[1-2]', 'a1'],
    [' gpu[3] ', 'gpu3'],
  ])('%s begins with %s', (list, host) => {
    expect(firstHost(list)).toBe(host);
  });

  it.each(['', 'n[1-2', 'n]1[', '[]'])('refuses %j', (list) => {
    expect(() => firstHost(list)).toThrow(/^SLURM_JOB_NODELIST must be a Slurm host list/);
  });
});
