/**
 * The deployment files work as written (deploy/): the Kubernetes manifests parse, agree with each other
 * (the Service's name and port, pod 0's DNS name, the Secret's mount, the number of hosts) and give each
 * pod the environment config/cluster.ts reads as intended; the sbatch script is valid bash that makes a
 * private secret, runs srun with one task per node and removes the secret after. bin/train's arguments in
 * both are accepted by its option parser on a machine with the GPUs they ask for.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseArgs } from '../src/cli/options.js';
import { clusterFromEnv } from '../src/config/cluster.js';
import type { Gpu } from '../src/config/config.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FOUR_GPUS: Gpu[] = Array.from({ length: 4 }, (_, index) => ({ index, name: 'NVIDIA H100', pciBusId: `00000000:1${index}:00.0`, hostGpus: 4 }));
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-deploy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface K8s {
  kind: string;
  metadata: { name: string };
  // Read as the API server would; the assertions say which fields matter.
  spec: Record<string, any>;
}

describe('deploy/kubernetes.yaml', () => {
  const docs = parseAllDocuments(readFileSync(path.join(ROOT, 'deploy', 'kubernetes.yaml'), 'utf8')).map((d) => {
    if (d.errors.length) throw d.errors[0];
    return d.toJS() as K8s;
  });
  const service = docs.find((d) => d.kind === 'Service')!;
  const job = docs.find((d) => d.kind === 'Job')!;

  it('is a headless Service and an Indexed Job that agree on names, port and hosts', () => {
    expect(service.spec.clusterIP).toBe('None');
    expect(service.spec.selector).toEqual({ 'job-name': job.metadata.name });
    expect(job.spec.completionMode).toBe('Indexed');
    expect(job.spec.parallelism).toBe(job.spec.completions);
    // A lost host's pod comes back under its index, as the rejoin expects (pods that never restart in place).
    expect(job.spec.backoffLimitPerIndex).toBeGreaterThan(0);
    expect(job.spec.template.spec.restartPolicy).toBe('Never');
    const pod = job.spec.template.spec;
    expect(pod.subdomain).toBe(service.metadata.name);
    const [container] = pod.containers;
    const env = Object.fromEntries((container.env as { name: string; value: string }[]).map((e) => [e.name, e.value]));
    expect(Number(env.TRAINPOOL_NNODES)).toBe(job.spec.completions);
    expect(env.TRAINPOOL_MASTER_ADDR).toBe(`${job.metadata.name}-0.${service.metadata.name}`);
    expect(Number(env.TRAINPOOL_MASTER_PORT)).toBe(service.spec.ports[0].port);
    expect(container.ports[0].containerPort).toBe(service.spec.ports[0].port);
    // The secret file lies in the Secret's volume, readable by the owner alone.
    const mount = container.volumeMounts.find((m: { mountPath: string }) => env.TRAINPOOL_SECRET_FILE.startsWith(`${m.mountPath}/`));
    const volume = pod.volumes.find((v: { name: string }) => v.name === mount.name);
    expect(volume.secret.secretName).toBeTruthy();
    expect(volume.secret.defaultMode).toBe(0o400);
    expect(container.resources.limits['nvidia.com/gpu']).toBe(4);
  });

  it('gives pod i the place config/cluster.ts reads: host i of the Job, host 0 at pod 0’s name', () => {
    const [container] = job.spec.template.spec.containers;
    const env = Object.fromEntries((container.env as { name: string; value: string }[]).map((e) => [e.name, e.value]));
    expect(clusterFromEnv({ ...env, JOB_COMPLETION_INDEX: '1' })).toMatchObject({ contract: 'kubernetes', nodes: 2, nodeRank: 1, master: { host: 'trainpool-0.trainpool', port: 29600 } });
    const config = parseArgs(container.args, FOUR_GPUS);
    expect(config).toMatchObject({ workers: 4, dataDir: '/data' });
  });
});

describe('deploy/slurm.sbatch', () => {
  const script = path.join(ROOT, 'deploy', 'slurm.sbatch');

  it('asks for one task per node and runs srun so, with a secret of its own that it removes after', () => {
    const text = readFileSync(script, 'utf8');
    expect(text).toMatch(/^#SBATCH --ntasks-per-node=1$/m);
    expect(spawnSync('bash', ['-n', script]).status).toBe(0);
    // srun stands in: it records its arguments and what the secret file held while the tasks would run.
    const bin = path.join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const fake = path.join(bin, 'srun');
    writeFileSync(fake, `#!/bin/bash\nprintf '%s\\n' "$@" > "${dir}/srun.args"\nstat -c %a "$TRAINPOOL_SECRET_FILE" > "${dir}/secret.mode"\ncat "$TRAINPOOL_SECRET_FILE" > "${dir}/secret.bytes"\necho "$TRAINPOOL_MASTER_PORT" > "${dir}/port"\n`);
    chmodSync(fake, 0o755);
    const home = path.join(dir, 'home');
    mkdirSync(home, { recursive: true });
    const r = spawnSync('bash', [script], { encoding: 'utf8', env: { PATH: `${bin}:${process.env.PATH}`, HOME: home, SLURM_SUBMIT_DIR: ROOT, SLURM_JOB_ID: '42' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const args = readFileSync(path.join(dir, 'srun.args'), 'utf8').trim().split('\n');
    expect(args.slice(0, 2)).toEqual(['--ntasks-per-node=1', 'bin/train']);
    expect(parseArgs(args.slice(2), FOUR_GPUS)).toMatchObject({ workers: 4 });
    expect(readFileSync(path.join(dir, 'secret.mode'), 'utf8').trim()).toBe('600');
    expect(readFileSync(path.join(dir, 'secret.bytes'), 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    expect(existsSync(path.join(home, '.trainpool-secret-42'))).toBe(false);
    // What srun then sets for task 1 of 2 on node[07-08]: host 1, host 0 the first node, at the script's port.
    const port = readFileSync(path.join(dir, 'port'), 'utf8').trim();
    expect(clusterFromEnv({ SLURM_NTASKS: '2', SLURM_PROCID: '1', SLURM_LOCALID: '0', SLURM_JOB_NODELIST: 'node[07-08]', TRAINPOOL_MASTER_PORT: port })).toMatchObject({ contract: 'slurm', nodes: 2, nodeRank: 1, master: { host: 'node07', port: 29600 } });
    expect(statSync(script).mode & 0o111).not.toBe(0);
  });
});
