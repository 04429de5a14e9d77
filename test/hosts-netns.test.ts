/**
 * Two hosts that do not share a loopback: host 1 runs in a network namespace of its own, joined to this one
 * by a veth pair (10.77.x.1 here, .2 there), so host 0 is reached at a real interface's address — where the
 * shared secret is required. A host 1 with another secret is refused and host 0 goes on; the one with the
 * secret joins, and the run ends with one host's weights, byte for byte.
 *
 * Needs root (ip netns, ip link): skipped with the reason where they fail, unless
 * TRAINPOOL_REQUIRE_NETNS=1 makes that a failure.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
const tag = `tp${process.pid % 100_000}`;
const ns = `${tag}-ns`;
const subnet = `10.77.${process.pid % 250}`;
const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });

/** Makes the namespace and the veth pair; the reason it cannot, or null. */
function setUp(): string | null {
  const steps = [
    ['netns', 'add', ns],
    ['link', 'add', `${tag}a`, 'type', 'veth', 'peer', 'name', `${tag}b`],
    ['link', 'set', `${tag}b`, 'netns', ns],
    ['addr', 'add', `${subnet}.1/24`, 'dev', `${tag}a`],
    ['link', 'set', `${tag}a`, 'up'],
    ['-n', ns, 'addr', 'add', `${subnet}.2/24`, 'dev', `${tag}b`],
    ['-n', ns, 'link', 'set', `${tag}b`, 'up'],
    ['-n', ns, 'link', 'set', 'lo', 'up'],
  ];
  for (const s of steps) {
    const r = ip(...s);
    if (r.status !== 0 || r.error) return `ip ${s.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`;
  }
  return null;
}

const unavailable = setUp();
const required = process.env.TRAINPOOL_REQUIRE_NETNS === '1';
if (unavailable && !required) console.warn(`hosts-netns.test.ts skipped: ${unavailable}; TRAINPOOL_REQUIRE_NETNS=1 makes this a failure`);
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-netns-'));
afterAll(() => {
  ip('netns', 'del', ns); // takes its end of the pair, and so the pair, with it
  ip('link', 'del', `${tag}a`);
  rmSync(dir, { recursive: true, force: true });
});

describe.runIf(unavailable !== null && required)('network namespaces, required by TRAINPOOL_REQUIRE_NETNS=1', () => {
  it('can be made here', () => {
    expect.fail(unavailable!);
  });
});

const RUN = ['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '1', '--epochs', '2', '--limit-train', '512', '--limit-test', '128', '--seed', '9', '--batch-size', '16'];

function start(argv: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, TRAINPOOL_GPUS: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += c));
  child.stderr!.on('data', (c) => (stderr += c));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { exit, stdout: () => stdout, stderr: () => stderr };
}

describe.skipIf(unavailable !== null)('a host in a network namespace of its own', () => {
  it('is refused with another secret, joins with the run’s, and the run ends with one host’s weights', async () => {
    const secret = path.join(dir, 'secret');
    writeFileSync(secret, `${'5e'.repeat(32)}\n`, { mode: 0o600 });
    const other = path.join(dir, 'other');
    writeFileSync(other, `${'a1'.repeat(32)}\n`, { mode: 0o600 });
    const cluster = { TRAINPOOL_NNODES: '2', TRAINPOOL_MASTER_ADDR: `${subnet}.1`, TRAINPOOL_MASTER_PORT: '29677' };
    const h0 = start([BIN, ...RUN, '--output', path.join(dir, 'h0', 'plot.png')], { ...cluster, TRAINPOOL_NODE_RANK: '0', TRAINPOOL_SECRET_FILE: secret });
    const inNamespace = (file: string) => start(['ip', 'netns', 'exec', ns, BIN, ...RUN, '--output', path.join(dir, 'h1', 'plot.png')], { ...cluster, TRAINPOOL_NODE_RANK: '1', TRAINPOOL_SECRET_FILE: file });
    const impostor = inNamespace(other);
    expect(await impostor.exit).toBe(2);
    expect(impostor.stderr()).toBe(`train: error: host 0 at ${subnet}.1:29677 did not let this host in (the connection closed before its proof): TRAINPOOL_SECRET_FILE must hold the same secret on every host\n`);
    const h1 = inNamespace(secret);
    const code = await h1.exit;
    expect(h1.stderr()).toBe('');
    expect(code).toBe(0);
    expect(await h0.exit).toBe(0);
    // Host 0 saw the impostor come from the namespace's address, and said so in one line.
    expect(h0.stderr()).toContain(`refused a connection from ${subnet}.2:`);
    expect(h0.stderr()).toMatch(/does not hold the run's secret \(its proof does not match\)/);
    expect(h0.stdout()).toMatch(new RegExp(`^host 1 \\(${subnet.replaceAll('.', '\\.')}\\.2:\\d+\\): \\[1\\] wasm`, 'm'));
    const single = spawnSync(BIN, [...RUN.map((a, i) => (RUN[i - 1] === '--workers' ? '2' : a)), '--output', path.join(dir, 'single', 'plot.png')], { encoding: 'utf8', env: { ...process.env, TRAINPOOL_GPUS: '' }, timeout: 120_000 });
    expect(single.status).toBe(0);
    const weights = (name: string) => readFileSync(path.join(dir, name, 'plot.model', 'weights.bin'));
    expect(weights('h0').equals(weights('single'))).toBe(true);
  }, 180_000);
});
