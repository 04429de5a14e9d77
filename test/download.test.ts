import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readCifar10 } from '../src/data/cifar10.js';
import { downloadCifar10, stderrProgress, type DownloadCifar10Options, type DownloadProgress } from '../src/data/download.js';
import { extractTarGz } from '../src/data/tar.js';
import { cifarArchive, cifarFileBytes, paxPath, tarGz, tarMember } from './helpers/cifar-files.js';
import { rejection } from './helpers/errors.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const ARCHIVE = cifarArchive(2);
const ARCHIVE_MD5 = md5(ARCHIVE);
const CORRUPT = Buffer.from(ARCHIVE);
CORRUPT[CORRUPT.length >> 1] ^= 0xff;

/** Requests served, by path: the reuse test checks that none was made. */
const requests = new Map<string, number>();
let server: Server;
let base: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    const path = req.url ?? '';
    requests.set(path, (requests.get(path) ?? 0) + 1);
    const send = (body: Buffer) => {
      res.writeHead(200, { 'content-type': 'application/x-gzip', 'content-length': body.length });
      // Four writes 20 ms apart, so that the client sees several chunks and progress several times.
      const quarter = Math.ceil(body.length / 4);
      const next = (at: number) => {
        if (at >= body.length) return void res.end();
        res.write(body.subarray(at, at + quarter), () => setTimeout(() => next(at + quarter), 20));
      };
      next(0);
    };
    if (path === '/cifar.tar.gz') send(ARCHIVE);
    else if (path === '/corrupt.tar.gz') send(CORRUPT);
    else if (path === '/moved') res.writeHead(302, { location: '/cifar.tar.gz' }).end();
    else if (path === '/drop') {
      res.writeHead(200, { 'content-length': ARCHIVE.length });
      res.write(ARCHIVE.subarray(0, 1000), () => setTimeout(() => res.destroy(), 20));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});

let root: string;
let dataDir: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'trainpool-download-'));
  dataDir = join(root, 'data');
  requests.clear();
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

function download(path: string, extra: Partial<DownloadCifar10Options> = {}) {
  return downloadCifar10({ dataDir, url: `${base}${path}`, expectedBytes: ARCHIVE.length, md5: ARCHIVE_MD5, onProgress: () => {}, ...extra });
}


describe('downloadCifar10', () => {
  it('downloads, verifies, extracts, and reports progress up to the last byte', async () => {
    const seen: DownloadProgress[] = [];
    const dir = await download('/cifar.tar.gz', { onProgress: (p) => seen.push(p) });
    expect(dir).toBe(join(dataDir, 'cifar-10-batches-bin'));
    expect(readdirSync(dataDir).sort()).toEqual(['cifar-10-batches-bin', 'cifar-10-binary.tar.gz']);
    expect(readFileSync(join(dataDir, 'cifar-10-binary.tar.gz')).equals(ARCHIVE)).toBe(true);
    expect(readdirSync(dir).sort()).toEqual([
      'batches.meta.txt', 'data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin',
      'data_batch_5.bin', 'readme.html', 'test_batch.bin',
    ]);
    expect(readFileSync(join(dir, 'test_batch.bin')).equals(cifarFileBytes(10, 2))).toBe(true);
    const d = await readCifar10(dataDir, { recordsPerFile: 2 });
    expect(d.train.count).toBe(10);

    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen.every((p) => p.total === ARCHIVE.length && p.bytesPerSecond > 0)).toBe(true);
    expect(seen.map((p) => p.bytes)).toEqual([...seen.map((p) => p.bytes)].sort((a, b) => a - b));
    expect(seen.at(-1)).toMatchObject({ bytes: ARCHIVE.length, done: true });
    expect(seen.filter((p) => p.done)).toHaveLength(1);
  });

  it('follows a redirect', async () => {
    await download('/moved');
    expect(requests.get('/moved')).toBe(1);
    expect(requests.get('/cifar.tar.gz')).toBe(1);
    expect(existsSync(join(dataDir, 'cifar-10-batches-bin', 'data_batch_5.bin'))).toBe(true);
  });

  it('reuses a complete archive already there without asking the server', async () => {
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'cifar-10-binary.tar.gz'), ARCHIVE);
    await download('/cifar.tar.gz');
    expect(requests.size).toBe(0);
    expect(existsSync(join(dataDir, 'cifar-10-batches-bin', 'test_batch.bin'))).toBe(true);
  });

  it('downloads again over an archive that no longer matches, and never trusts a .part', async () => {
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'cifar-10-binary.tar.gz'), CORRUPT);
    writeFileSync(join(dataDir, 'cifar-10-binary.tar.gz.part'), ARCHIVE);
    await download('/cifar.tar.gz');
    expect(requests.get('/cifar.tar.gz')).toBe(1);
    expect(readFileSync(join(dataDir, 'cifar-10-binary.tar.gz')).equals(ARCHIVE)).toBe(true);
    expect(existsSync(join(dataDir, 'cifar-10-binary.tar.gz.part'))).toBe(false);
  });

  it('a checksum mismatch deletes the part, leaves no archive, and names both checksums', async () => {
    const e = await rejection(download('/corrupt.tar.gz'));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toBe(
      `Download of ${base}/corrupt.tar.gz failed: expected ${ARCHIVE.length} bytes with md5 ${ARCHIVE_MD5}, ` +
        `received ${ARCHIVE.length} bytes with md5 ${md5(CORRUPT)}`,
    );
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('a server announcing another size fails before the body is read', async () => {
    const e = await rejection(download('/cifar.tar.gz', { expectedBytes: 170_052_171 }));
    expect(e.message).toBe(
      `Download of ${base}/cifar.tar.gz failed: the server offers ${ARCHIVE.length} bytes, expected 170052171 bytes ` +
        `(md5 ${ARCHIVE_MD5})`,
    );
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('a connection dropped midway fails, leaving neither archive nor part', async () => {
    const e = await rejection(download('/drop'));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toMatch(
      new RegExp(`^Download of ${base}/drop failed: the transfer broke off after 1000 of ${ARCHIVE.length} bytes \\(.+\\)$`),
    );
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('an HTTP 404 names the status', async () => {
    const e = await rejection(download('/nothing-here'));
    expect(e.message).toBe(`Download of ${base}/nothing-here failed: the server answered HTTP 404 Not Found`);
  });

  it('a refused connection names the cause', async () => {
    const closed = createServer();
    await new Promise<void>((done) => closed.listen(0, '127.0.0.1', done));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((done) => closed.close(done));
    const e = await rejection(downloadCifar10({ dataDir, url: `http://127.0.0.1:${port}/x`, onProgress: () => {} }));
    expect(e.message).toBe(`Download of http://127.0.0.1:${port}/x failed: no response (fetch failed: connect ECONNREFUSED 127.0.0.1:${port})`);
  });

  it('an archive that lacks a batch file is rejected after extraction', async () => {
    mkdirSync(dataDir);
    const partial = tarGz([tarMember({ name: 'cifar-10-batches-bin/test_batch.bin', data: Buffer.alloc(10) })]);
    writeFileSync(join(dataDir, 'cifar-10-binary.tar.gz'), partial);
    const e = await rejection(download('/unused', { expectedBytes: partial.length, md5: md5(partial) }));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toMatch(/lacks cifar-10-batches-bin\/data_batch_1\.bin, .*data_batch_5\.bin: expected all of/);
  });

  it('a hostile archive with a matching checksum is still refused, and nothing lands outside', async () => {
    const evil = tarGz([tarMember({ name: '../evil', data: Buffer.from('x') })]);
    const e = await rejection(download('/unused', { expectedBytes: evil.length, md5: md5(evil), fetchImpl: (async () => new Response(evil)) as typeof fetch }));
    expect(e.code).toBe('DATA_INVALID');
    expect(e.message).toContain(`member '../evil' is a path with '..'`);
    expect(readdirSync(root)).toEqual(['data']);
  });
});

describe('extractTarGz', () => {
  const files = new Set(['d/a.bin', 'd/b.txt']);
  const directories = new Set(['d']);
  const allowed = 'only these may be extracted: d/, d/a.bin, d/b.txt';

  function extract(members: Buffer[]) {
    const archive = join(root, 'x.tar.gz');
    writeFileSync(archive, tarGz(members));
    mkdirSync(dataDir);
    return { archive, done: extractTarGz({ archive, destDir: dataDir, files, directories }) };
  }

  it('extracts allowed members, ./-prefixed and ustar-prefixed names included, leaving no temp files', async () => {
    const { done } = extract([
      tarMember({ name: './d/', type: '5' }),
      tarMember({ name: 'a.bin', prefix: 'd', data: Buffer.alloc(1500, 7) }),
      tarMember({ name: './d/b.txt', data: Buffer.from('hello') }),
    ]);
    expect(await done).toEqual(['d/a.bin', 'd/b.txt']);
    expect(readFileSync(join(dataDir, 'd/a.bin')).equals(Buffer.alloc(1500, 7))).toBe(true);
    expect(readdirSync(join(dataDir, 'd')).sort()).toEqual(['a.bin', 'b.txt']);
  });

  const x = Buffer.from('x');
  it.each([
    { name: '../evil', member: { name: '../evil', data: x }, reason: "is a path with '..'" },
    { name: 'd/../../evil', member: { name: 'd/../../evil', data: x }, reason: "is a path with '..'" },
    { name: '<root>/abs-evil', member: { name: '<root>/abs-evil', data: x }, reason: 'is an absolute path' },
    { name: 'd/a.bin', member: { name: 'd/a.bin', type: '2', linkname: '/etc/passwd' }, reason: 'is a symbolic link' },
    { name: 'd/a.bin', member: { name: 'd/a.bin', type: '1', linkname: '../evil' }, reason: 'is a hard link' },
    { name: 'd/run.sh', member: { name: 'd/run.sh', data: x }, reason: 'is an unexpected file' },
    { name: 'e/', member: { name: 'e/', type: '5' }, reason: 'is an unexpected directory' },
    { name: 'd/a.bin', member: { name: 'd/a.bin', type: '6' }, reason: 'is a FIFO' },
  ])('refuses $name ($reason) and writes nothing outside', async ({ name, member, reason }) => {
    const absolute = (s: string) => s.replace('<root>', root);
    const { archive, done } = extract([tarMember({ name: 'd/', type: '5' }), tarMember({ ...member, name: absolute(member.name) })]);
    const e = await rejection(done);
    expect(e.message).toBe(`Archive ${archive} member '${absolute(name)}' ${reason}: ${allowed}`);
    expect(readdirSync(root).sort()).toEqual(['data', 'x.tar.gz']);
    expect(readdirSync(dataDir)).toEqual(['d']);
    expect(readdirSync(join(dataDir, 'd'))).toEqual([]);
  });

  it('honours a pax path header, so a harmless ustar name cannot smuggle ../', async () => {
    const { archive, done } = extract([paxPath('../pax-evil'), tarMember({ name: 'd/a.bin', data: Buffer.from('x') })]);
    const e = await rejection(done);
    expect(e.message).toBe(`Archive ${archive} member '../pax-evil' is a path with '..': ${allowed}`);
  });

  it('a member cut short is a truncated archive', async () => {
    const archive = join(root, 'x.tar.gz');
    const whole = Buffer.concat([tarMember({ name: 'd/a.bin', data: Buffer.alloc(2000, 1) })]);
    writeFileSync(archive, gzipSync(whole.subarray(0, 1200)));
    const e = await rejection(extractTarGz({ archive, destDir: root, files, directories }));
    expect(e.message).toBe(`Archive ${archive} is truncated inside a member`);
    expect(readdirSync(join(root, 'd'))).toEqual([]); // the temporary file is gone, not renamed
  });

  it('a damaged header fails its checksum; a non-gzip file says so', async () => {
    const archive = join(root, 'x.tar.gz');
    const member = tarMember({ name: 'd/a.bin', data: Buffer.from('x') });
    member[0] = 'e'.charCodeAt(0);
    writeFileSync(archive, tarGz([member]));
    const e = await rejection(extractTarGz({ archive, destDir: root, files, directories }));
    expect(e.message).toMatch(new RegExp(`^Archive ${archive} has a corrupt header: checksum \\d+, computed \\d+ \\(not a tar file\\?\\)$`));
    writeFileSync(archive, 'plain text');
    const e2 = await rejection(extractTarGz({ archive, destDir: root, files, directories }));
    expect(e2.message).toBe(`Archive ${archive} is not a readable gzip file: incorrect header check`);
  });

  it.each(['gnu', 'oldgnu', 'ustar', 'pax'])('reads what GNU tar writes in --format=%s, long names included', async (format) => {
    const src = join(root, 'src');
    const long = `d/${'n'.repeat(120)}.bin`;
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'd/a.bin'), Buffer.alloc(700, 3));
    writeFileSync(join(src, long), 'long');
    const archive = join(root, 'x.tar.gz');
    const names = format === 'ustar' ? ['d/', 'd/a.bin'] : ['d/', 'd/a.bin', long]; // ustar has no 120-char names
    execFileSync('tar', ['-czf', archive, `--format=${format}`, '--no-recursion', '-C', src, ...names]);
    mkdirSync(dataDir);
    const written = await extractTarGz({ archive, destDir: dataDir, files: new Set([...files, long]), directories });
    expect(written).toEqual(names.slice(1));
    expect(readFileSync(join(dataDir, 'd/a.bin')).equals(Buffer.alloc(700, 3))).toBe(true);
  });
});

describe('stderrProgress', () => {
  it('draws nothing when stderr is not a terminal', () => {
    const writes: string[] = [];
    const draw = stderrProgress({ isTTY: false, write: (s: string) => writes.push(s) } as unknown as NodeJS.WriteStream);
    draw({ bytes: 1, total: 2, bytesPerSecond: 1, done: true });
    expect(writes).toEqual([]);
  });

  it('on a terminal redraws one line at most 5 times a second, and ends it when done', () => {
    const writes: string[] = [];
    let now = 1_000; // ms, set by the test: no wall clock
    const draw = stderrProgress({ isTTY: true, write: (s: string) => writes.push(s) } as unknown as NodeJS.WriteStream, () => now);
    draw({ bytes: 42_500_000, total: 170_052_171, bytesPerSecond: 5_000_000, done: false });
    now += 199;
    draw({ bytes: 42_600_000, total: 170_052_171, bytesPerSecond: 5_000_000, done: false }); // within 200 ms: dropped
    now += 1;
    draw({ bytes: 42_700_000, total: 170_052_171, bytesPerSecond: 5_000_000, done: false }); // 200 ms after the first: drawn
    now += 10;
    draw({ bytes: 170_052_171, total: 170_052_171, bytesPerSecond: 5_000_000, done: true }); // the end: always drawn
    expect(writes).toEqual([
      '\rDownloading CIFAR-10: 42.5 / 170.1 MB (25 %) at 5.0 MB/s',
      '\rDownloading CIFAR-10: 42.7 / 170.1 MB (25 %) at 5.0 MB/s',
      '\rDownloading CIFAR-10: 170.1 / 170.1 MB (100 %) at 5.0 MB/s',
      '\n',
    ]);
  });
});
