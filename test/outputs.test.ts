/**
 * The paths around training, through bin/train: a run owns its output (a lock, another run's files refused
 * unless --resume or --overwrite), everything it will write is checked at the start, and a disk that fills
 * mid-run costs one line naming the file, the last checkpoint and nothing else (no `.tmp` left).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readCheckpoint } from '../src/coordinator/checkpoint.js';
import { LOCK_NAME } from '../src/coordinator/output-lock.js';
import { until } from './helpers/process.js';

const BIN = fileURLToPath(new URL('../bin/train', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-outputs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ENV = { ...process.env, TRAINPOOL_GPUS: '' };
/** One step per epoch: a run of a few epochs takes seconds. */
const TINY = ['--dataset', 'synthetic', '--model', 'tiny', '--gpus', '0', '--workers', '1', '--limit-train', '64', '--limit-test', '32'];

function train(args: string[]) {
  const r = spawnSync(BIN, args, { encoding: 'utf8', env: ENV, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts bin/train and resolves once a stdout line matches `until`; `done` resolves with its exit. */
function start(args: string[], until: RegExp) {
  const child = spawn(BIN, args, { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  const reached = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (until.test(stdout)) resolve();
    });
    child.on('exit', () => reject(new Error(`bin/train exited before ${until}: ${stdout}${stderr}`)));
  });
  return { child, reached, done };
}

/** Every file under `root`, relative. */
const files = (root: string) => readdirSync(root, { recursive: true, withFileTypes: true }).filter((e) => !e.isDirectory()).map((e) => path.relative(root, path.join(e.parentPath, e.name))).sort();
const seedOf = (historyJson: string) => JSON.parse(readFileSync(historyJson, 'utf8')).config.seed;

describe('a run owns its output', () => {
  it("refuses a fresh run on another run's files; --overwrite replaces them; a crash then resumes the new run, never the old", async () => {
    const out = path.join(dir, 'owned', 'p.png');
    const history = path.join(dir, 'owned', 'p.history.json');
    expect(train([...TINY, '--epochs', '1', '--seed', '1', '--output', out]).code).toBe(0);
    const before = readFileSync(history, 'utf8');

    const refused = train([...TINY, '--epochs', '3', '--seed', '2', '--output', out]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toBe(
      `train: error: --output ${out} holds another run's files (epoch-0001-step-000000.ckpt, p.png, p.history.json, p.history.csv, p.model): pass --resume to continue that run or --overwrite to replace it\n`,
    );
    expect(readFileSync(history, 'utf8')).toBe(before); // nothing of the old run touched

    // --overwrite, killed (SIGKILL: no cleanup) after its first epoch: the old run's files are gone and the
    // lock it held is stale.
    const run = start([...TINY, '--epochs', '3', '--seed', '2', '--output', out, '--overwrite'], /^Epoch 1\/3/m);
    await run.reached;
    const ckdir = path.join(dir, 'owned', 'p.checkpoints');
    await until(() => readdirSync(ckdir).includes('epoch-0001-step-000000.ckpt') && existsSync(history) && seedOf(history) === 2);
    run.child.kill('SIGKILL');
    await run.done;
    // Killed after its first epoch, perhaps after its second: its newest checkpoint is where it resumes.
    const left = readdirSync(ckdir).sort();
    expect(left[0]).toBe(LOCK_NAME);
    const epochsDone = left.length - 1;
    expect(left.slice(1)).toEqual(['epoch-0001-step-000000.ckpt', 'epoch-0002-step-000000.ckpt'].slice(0, epochsDone));
    expect(existsSync(path.join(dir, 'owned', 'p.model'))).toBe(false); // the old run's model went with --overwrite
    const runId = readCheckpoint(path.join(ckdir, 'epoch-0001-step-000000.ckpt')).runId;
    expect(runId).toMatch(/^[0-9a-f]{12}$/);

    const resumed = train(['--resume', '--output', out]);
    expect(resumed.stderr).toBe('');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain('seed 2');
    expect(resumed.stdout).toContain(`resuming after epoch ${epochsDone} of 3`);
    const json = JSON.parse(readFileSync(history, 'utf8'));
    expect(json.config).toMatchObject({ seed: 2, epochs: 3, run_id: runId });
    expect(json.epochs.map((e: { epoch: number }) => e.epoch)).toEqual([1, 2, 3]);
    expect(readCheckpoint(path.join(ckdir, 'epoch-0003-step-000000.ckpt')).runId).toBe(runId);
    expect(readdirSync(ckdir)).not.toContain(LOCK_NAME); // taken over, then released

    // A history of another run beside these checkpoints (copied in by hand): --resume refuses to mix them.
    writeFileSync(history, JSON.stringify({ ...json, config: { ...json.config, run_id: 'aaaaaaaaaaaa' } }));
    const mixed = train(['--resume', '--output', out]);
    expect(mixed.code).toBe(1);
    expect(mixed.stderr).toBe(`train: error: --resume: ${path.join(ckdir, 'epoch-0003-step-000000.ckpt')} is run ${runId}'s but the history ${history} is run aaaaaaaaaaaa's; move one of them away or start afresh with --overwrite\n`);
  }, 120_000);

  it('refuses a second run on an output in use at once, naming the first, which finishes untouched', async () => {
    const out = path.join(dir, 'busy', 'p.png');
    // Ten steps an epoch: long enough for the second run to start while the first trains.
    const first = start([...TINY.slice(0, -4), '--limit-train', '640', '--limit-test', '32', '--epochs', '2', '--seed', '1', '--output', out], /^workers: /m);
    await first.reached;
    const second = train([...TINY, '--epochs', '2', '--seed', '2', '--output', out]);
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(new RegExp(`^train: error: --output ${escape(out)} is in use by another run \\(pid ${first.child.pid}, since [-\\d:.TZ]+\\); wait for it to finish or choose another --output\\n$`));
    const done = await first.done;
    expect(done.code).toBe(0);
    expect(seedOf(path.join(dir, 'busy', 'p.history.json'))).toBe(1);
    expect(files(path.join(dir, 'busy'))).toEqual([
      'p.checkpoints/epoch-0001-step-000000.ckpt', 'p.checkpoints/epoch-0002-step-000000.ckpt',
      'p.history.csv', 'p.history.json', 'p.model/mean.bin', 'p.model/model.json', 'p.model/weights.bin', 'p.png',
    ]);
  }, 120_000);
});

describe('bin/train checks what it will write before it starts (one line, status 2, nothing left)', () => {
  const at = path.join(dir, 'start');
  mkdirSync(path.join(at, 'p.png'), { recursive: true });
  mkdirSync(path.join(at, 'logs'), { recursive: true });
  writeFileSync(path.join(at, 'q.model'), 'a file where the model folder goes');
  const cases: [string, string[], string][] = [
    ['--output naming a folder', ['--output', path.join(at, 'p.png')], `--output must name a file, not a folder. Received: ${path.join(at, 'p.png')} (a folder)`],
    ['--output ending in a slash', ['--output', `${path.join(at, 'r.png')}/`], `--output must name a file, not a folder. Received: --output=${path.join(at, 'r.png')}/`],
    ['--log-file naming a folder', ['--output', path.join(at, 's.png'), '--log-file', path.join(at, 'logs')], `--log-file must name a file, not a folder. Received: ${path.join(at, 'logs')} (a folder)`],
    ['a file where the model folder goes', ['--output', path.join(at, 'q.png')], `--output's model goes in the folder ${path.join(at, 'q.model')}, which is a file here: move it or choose another --output`],
    ['--step-timeout beyond what a timer holds', ['--output', path.join(at, 't.png'), '--step-timeout', '3000000'], '--step-timeout must be a number in (0, 2147483]. Received: --step-timeout=3000000'],
    ['--resume with --overwrite', ['--output', path.join(at, 'u.png'), '--resume', '--overwrite'], '--resume continues the run at the output and --overwrite replaces it: give one of them'],
  ];
  it.each(cases)('%s', (_, args, message) => {
    const before = files(at);
    const r = train([...TINY, '--epochs', '1', ...args]);
    expect(r.stderr).toBe(`train: error: ${message}\n`);
    expect(r.code).toBe(2);
    expect(files(at)).toEqual(before);
  });

  it('a run that diverges before its first checkpoint says there is none, not that the last is kept', () => {
    const r = spawnSync(BIN, [...TINY, '--epochs', '2', '--output', path.join(at, 'nan', 'p.png')], { encoding: 'utf8', env: { ...ENV, TRAINPOOL_CHAOS: 'nan-grad=0:1' }, timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('train:'))).toEqual([
      'train: error: the weight update became NaN or infinite at epoch 1, step 1: training stopped (TerminateOnNaN); no checkpoint was written yet',
    ]);
  }, 60_000);

  it('warns about an option given twice and uses the last', () => {
    const r = train([...TINY, '--epochs', '3', '--epochs=1', '--output', path.join(at, 'twice', 'p.png')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('train: warning: --epochs was given 2 times (3, 1); the last, 1, is used\n');
    expect(r.stdout).toMatch(/^Epoch 1\/1 /m);
  }, 60_000);
});

/** A tmpfs of `size` in a mount namespace of its own (nothing mounted outside it), or why there is none. */
const namespace = spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt && echo ok'], { encoding: 'utf8' });
const canMount = namespace.stdout.trim() === 'ok';

describe.skipIf(!canMount)('a full disk (a small tmpfs in a private mount namespace)', () => {
  /** Runs `script` (sh) with $DISK a tmpfs of `size`; its steps' outputs go to files outside it. */
  function onSmallDisk(size: string, script: string) {
    const disk = mkdtempSync(path.join(dir, 'disk-'));
    const r = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o size=${size} tmpfs "$DISK" && ${script}`], {
      encoding: 'utf8',
      env: { ...ENV, DISK: disk, BIN, LOGS: dir },
      timeout: 240_000,
    });
    return { ...r, disk };
  }

  it('too little room for one checkpoint and the model: refused at the start', () => {
    const r = onSmallDisk('128k', `"$BIN" ${TINY.join(' ')} --epochs 1 --output "$DISK/p.png"`);
    expect(r.stderr).toMatch(/^train: error: .*disk-\w+\/p\.checkpoints has 0\.1 MB free; checkpoints, the model and plot need at least 0\.3 MB \(a run there would fail at its first checkpoint\)\n$/);
    expect(r.status).toBe(2);
  });

  it('filling at the third checkpoint: one line naming it and the last one kept, no .tmp left; --resume finishes once there is room', () => {
    // Two checkpoints of 191 KB fit in 480 KB, a third does not.
    const r = onSmallDisk(
      '480k',
      `"$BIN" ${TINY.join(' ')} --epochs 4 --seed 3 --output "$DISK/p.png" > "$LOGS/full.out" 2> "$LOGS/full.err"; echo $? > "$LOGS/full.code"; ` +
        `ls -A "$DISK" "$DISK/p.checkpoints" > "$LOGS/full.ls"; mount -o remount,size=4m "$DISK" && ` +
        `"$BIN" --resume --output "$DISK/p.png" > "$LOGS/resumed.out" 2> "$LOGS/resumed.err"; echo $? > "$LOGS/resumed.code"; ls -A "$DISK" "$DISK/p.checkpoints" > "$LOGS/resumed.ls"`,
    );
    expect(r.status).toBe(0);
    const log = (name: string) => readFileSync(path.join(dir, name), 'utf8');
    const ck = (epoch: number) => `${r.disk}/p.checkpoints/epoch-000${epoch}-step-000000.ckpt`;
    expect(log('full.code').trim()).toBe('1');
    const lines = log('full.err').split('\n').filter((l) => l.startsWith('train: error'));
    expect(lines).toEqual([
      `train: error: could not write the checkpoint ${ck(3)}: no space left on the device (ENOSPC); the last checkpoint, ${ck(2)}, is kept: make room (or fix the folder) and run the same command with --resume`,
    ]);
    expect(log('full.err')).not.toMatch(/\n\s+at /); // no stack trace
    // The warning at the start said the room was short; no .tmp, no lock left.
    expect(log('full.err')).toMatch(/^train: warning: .*p\.checkpoints has 0\.\d MB free; checkpoints, the model and plot need about \d\.\d MB: the run may stop for want of room$/m);
    expect(log('full.ls')).not.toMatch(/\.tmp|\.lock/);
    expect(log('full.ls')).toContain('epoch-0002-step-000000.ckpt');
    expect(log('resumed.err')).toBe('');
    expect(log('resumed.code').trim()).toBe('0');
    expect(log('resumed.out')).toContain('resuming after epoch 2 of 4');
    expect(log('resumed.ls')).toMatch(/p\.model/);
    expect(log('resumed.ls')).not.toMatch(/\.tmp|\.lock/);
  }, 240_000);
});

describe.skipIf(!canMount)('the output disk failing at the end or mid-run (tmpfs in a private mount namespace)', () => {
  const log = (name: string) => readFileSync(path.join(dir, name), 'utf8');
  const errors = (name: string) => log(name).split('\n').filter((l) => l.startsWith('train: error'));
  function inNamespace(script: string[], env: Record<string, string>) {
    return spawnSync('unshare', ['-rm', 'sh', '-c', script.join('\n')], { encoding: 'utf8', env: { ...ENV, BIN, LOGS: dir, ...env }, timeout: 240_000 });
  }

  it('full while the model is exported: one line, no plot, model or .tmp of the run; --resume exports them once there is room', () => {
    const disk = mkdtempSync(path.join(dir, 'export-'));
    // Two checkpoints and the history fit in 440 KB; the plot and the model beside them do not.
    const r = inNamespace([
      'mount -t tmpfs -o size=440k tmpfs "$DISK" || exit 9',
      `"$BIN" ${TINY.join(' ')} --epochs 2 --seed 5 --output "$DISK/p.png" > "$LOGS/export.out" 2> "$LOGS/export.err"; echo $? > "$LOGS/export.code"`,
      'ls -A "$DISK" "$DISK/p.checkpoints" > "$LOGS/export.ls"',
      'mount -o remount,size=4m "$DISK" && "$BIN" --resume --output "$DISK/p.png" > "$LOGS/export2.out" 2> "$LOGS/export2.err"; echo $? > "$LOGS/export2.code"',
      'ls -A "$DISK" > "$LOGS/export2.ls"',
    ], { DISK: disk });
    expect(r.status).toBe(0);
    expect(log('export.code').trim()).toBe('1');
    expect(errors('export.err')).toEqual([
      expect.stringMatching(new RegExp(`^train: error: could not write the (plot|model) ${escape(disk)}/p\\.(png|model): no space left on the device \\(ENOSPC\\); the last checkpoint, ${escape(disk)}/p\\.checkpoints/epoch-0002-step-000000\\.ckpt, is kept: make room`)),
    ]);
    expect(log('export.err')).not.toMatch(/\n\s+at /);
    expect(log('export.ls').split('\n').filter((l) => l && !l.endsWith(':'))).toEqual(expect.arrayContaining(['p.checkpoints', 'p.history.csv', 'p.history.json']));
    expect(log('export.ls')).not.toMatch(/p\.png|p\.model|\.tmp|\.lock/);
    expect(log('export2.code').trim()).toBe('0');
    expect(log('export2.out')).toContain('resuming after epoch 2 of 2');
    expect(log('export2.ls').split('\n')).toEqual(expect.arrayContaining(['p.png', 'p.model', 'p.history.json']));
  }, 240_000);

  it('a log file whose disk fills: said once on stderr, and the run goes on to the end', () => {
    const disk = mkdtempSync(path.join(dir, 'log-'));
    const out = path.join(dir, 'logged', 'p.png');
    const r = inNamespace([
      'mount -t tmpfs -o size=64k tmpfs "$DISK" || exit 9',
      `"$BIN" ${TINY.join(' ')} --epochs 12 --seed 7 --log-level trace --log-file "$DISK/run.log" --output "$OUT" > "$LOGS/log.out" 2> "$LOGS/log.err" &`,
      'pid=$!',
      `while ! grep -q '^Epoch 1/12' "$LOGS/log.out"; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done`,
      'dd if=/dev/zero of="$DISK/fill" bs=1k 2>/dev/null',
      'wait $pid; echo $? > "$LOGS/log.code"',
    ], { DISK: disk, OUT: out });
    expect(r.status).toBe(0);
    expect(log('log.err')).toBe(`train: warning: the log file ${disk}/run.log could not be written: no space left on the device (ENOSPC); log lines are lost from here on\n`);
    expect(log('log.code').trim()).toBe('0');
    expect(log('log.out')).toMatch(/^Epoch 12\/12 /m);
  }, 240_000);

  it.each([
    ['made read-only', 'mount -o remount,ro "$DISK"', /could not write the checkpoint .*\/p\.checkpoints\/epoch-0002-step-000000\.ckpt: the file system is read-only \(EROFS\); the last checkpoint, .*epoch-0001-step-000000\.ckpt, is kept: make room/],
    ['removed', 'rm -rf "$DISK/p.checkpoints" "$DISK/p.history.json" "$DISK/p.history.csv"', /the checkpoint folder .*\/p\.checkpoints was removed during the run; stopping without writing there; its last checkpoint, .*epoch-0001-step-000000\.ckpt, is gone too$/],
  ])('the output %s after the first epoch: one line naming the path and the cause, exit 1, no .tmp', (what, act, message) => {
    const tag = what === 'removed' ? 'gone' : 'ro';
    const disk = mkdtempSync(path.join(dir, `${tag}-`));
    const r = inNamespace([
      'mount -t tmpfs -o size=8m tmpfs "$DISK" || exit 9',
      // Ten steps an epoch: the folder changes while epoch 2 trains.
      `"$BIN" ${TINY.slice(0, -4).join(' ')} --limit-train 640 --limit-test 32 --epochs 2 --seed 6 --output "$DISK/p.png" > "$LOGS/${tag}.out" 2> "$LOGS/${tag}.err" &`,
      'pid=$!',
      `while ! grep -q '^Epoch 1/2' "$LOGS/${tag}.out"; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done`,
      'sleep 0.3',
      act,
      `wait $pid; echo $? > "$LOGS/${tag}.code"`,
      `ls -AR "$DISK" > "$LOGS/${tag}.ls"`,
    ], { DISK: disk });
    expect(r.status).toBe(0);
    expect(log(`${tag}.code`).trim()).toBe('1');
    const lines = errors(`${tag}.err`);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(log(`${tag}.err`)).not.toMatch(/\n\s+at /);
    expect(log(`${tag}.ls`)).not.toMatch(/\.tmp/);
  }, 240_000);
});

describe.skipIf(!canMount)('/dev/shm filling during a run (a tmpfs over it in a private mount namespace)', () => {
  // Regions of every size are allocated at the start (zeros without the addon, posix_fallocate with it), so
  // a /dev/shm that fills up after the workers started fails nothing; before, the first validation chunk's
  // larger request region hit ENOSPC with a stack trace and the run hung until the step timeout.
  // Read/write regions (no addon, as in the Docker image): the mapped ones were reserved with posix_fallocate
  // already, and test/shared-memory.test.ts covers their reservation.
  it('read/write regions: the run finishes as if nothing happened', () => {
    const extra = { TRAINPOOL_NO_MMAP: '1' };
    const tag = 'shm-rw';
    const out = path.join(dir, tag, 'p.png');
    const log = (name: string) => readFileSync(path.join(dir, `${tag}.${name}`), 'utf8');
    const script = [
      // 200 MB: room for the 64 MB that makes /dev/shm the home of the requests' regions (bulk.ts).
      'mount -t tmpfs -o size=200m tmpfs /dev/shm || exit 9',
      `"$BIN" --dataset synthetic --model tiny --gpus 0 --workers 2 --limit-train 640 --limit-test 500 --epochs 1 --seed 4 --output "$OUT" > "$LOGS/${tag}.out" 2> "$LOGS/${tag}.err" &`,
      'pid=$!',
      `while ! grep -q '^global batch' "$LOGS/${tag}.out"; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done`,
      `df -k /dev/shm | tail -1 > "$LOGS/${tag}.before"`,
      'dd if=/dev/zero of=/dev/shm/fill bs=1M 2>/dev/null',
      `df -k /dev/shm | tail -1 > "$LOGS/${tag}.after"`,
      `wait $pid; echo $? > "$LOGS/${tag}.code"`,
    ].join('\n');
    const r = spawnSync('unshare', ['-rm', 'sh', '-c', script], { encoding: 'utf8', env: { ...ENV, ...extra, BIN, LOGS: dir, OUT: out }, timeout: 240_000 });
    expect(r.status).toBe(0);
    const used = (line: string) => Number(line.trim().split(/\s+/)[2]);
    // The regions were there (two workers' requests of ~6 MB, the weights and replies), and then it was full.
    expect(used(log('before'))).toBeGreaterThan(12_000);
    expect(log('after').trim().split(/\s+/)[3]).toBe('0');
    expect(log('err')).toBe('');
    expect(log('code').trim()).toBe('0');
    expect(log('out')).toMatch(/^Epoch 1\/1 .* val_acc: /m);
  }, 240_000);
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
