/**
 * Downloads and unpacks CIFAR-10 (binary version) into a data folder:
 *
 *   <dataDir>/cifar-10-binary.tar.gz.part   while downloading; never taken as complete, always restarted
 *   <dataDir>/cifar-10-binary.tar.gz        only after its size and MD5 matched; reused by later runs
 *   <dataDir>/cifar-10-batches-bin/*.bin    extracted by tar.ts, which refuses anything unexpected
 *
 * The MD5 is computed while streaming, so a verified download costs one pass over the network and none
 * over the disk. Stalls are bounded by undici's defaults behind the global fetch (300 s without headers
 * or without a body chunk).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TrainpoolError } from '../util/errors.js';
import { CIFAR10_SUBDIR, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES } from './cifar10.js';
import { extractTarGz } from './tar.js';

export const CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz';
export const CIFAR10_ARCHIVE = 'cifar-10-binary.tar.gz';
export const CIFAR10_ARCHIVE_BYTES = 170_052_171;
export const CIFAR10_ARCHIVE_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530';

const BIN_FILES = [...CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE];
const ARCHIVE_FILES = new Set([...BIN_FILES, 'batches.meta.txt', 'readme.html'].map((f) => `${CIFAR10_SUBDIR}/${f}`));
const ARCHIVE_DIRECTORIES = new Set([CIFAR10_SUBDIR]);

export interface DownloadProgress {
  bytes: number;
  /** From Content-Length, else the expected size. */
  total: number;
  bytesPerSecond: number;
  /** True once, after the last byte. */
  done: boolean;
}

export interface DownloadCifar10Options {
  dataDir: string;
  url?: string;
  expectedBytes?: number;
  md5?: string;
  /** Called for every chunk received; defaults to a one-line progress on stderr when it is a terminal. */
  onProgress?: (progress: DownloadProgress) => void;
  fetchImpl?: typeof fetch;
}

/** Downloads (or reuses) the archive, extracts it, and returns the folder holding the .bin files. */
export async function downloadCifar10(options: DownloadCifar10Options): Promise<string> {
  const {
    dataDir,
    url = CIFAR10_URL,
    expectedBytes = CIFAR10_ARCHIVE_BYTES,
    md5 = CIFAR10_ARCHIVE_MD5,
    onProgress = stderrProgress(),
    fetchImpl = fetch,
  } = options;
  await mkdir(dataDir, { recursive: true });
  const archive = join(dataDir, CIFAR10_ARCHIVE);
  if (!(await isVerified(archive, expectedBytes, md5))) {
    await fetchVerified({ url, archive, expectedBytes, md5, onProgress, fetchImpl });
  }
  const written = await extractTarGz({ archive, destDir: dataDir, files: ARCHIVE_FILES, directories: ARCHIVE_DIRECTORIES });
  const missing = BIN_FILES.filter((f) => !written.includes(`${CIFAR10_SUBDIR}/${f}`));
  if (missing.length > 0) {
    throw new TrainpoolError(
      'DATA_INVALID',
      `Archive ${archive} lacks ${missing.map((f) => `${CIFAR10_SUBDIR}/${f}`).join(', ')}: expected all of ` +
        `${BIN_FILES.join(', ')} under ${CIFAR10_SUBDIR}/`,
    );
  }
  return join(dataDir, CIFAR10_SUBDIR);
}

/**
 * Whether a complete archive is already there. Only the final name is considered (a `.part` never is),
 * and it must still match: one that does not is deleted and downloaded again, since only this module
 * writes that name and it may have been damaged since.
 */
async function isVerified(archive: string, expectedBytes: number, md5: string): Promise<boolean> {
  const size = (await stat(archive).catch(() => undefined))?.size;
  if (size === undefined) return false;
  if (size === expectedBytes && (await md5OfFile(archive)) === md5) return true;
  await rm(archive, { force: true });
  return false;
}

interface FetchJob {
  url: string;
  archive: string;
  expectedBytes: number;
  md5: string;
  onProgress: (progress: DownloadProgress) => void;
  fetchImpl: typeof fetch;
}

async function fetchVerified(job: FetchJob): Promise<void> {
  const { url, archive, expectedBytes, md5, onProgress } = job;
  const part = `${archive}.part`;
  const failed = (why: string) => new TrainpoolError('DOWNLOAD_FAILED', `Download of ${url} failed: ${why}`);
  await rm(part, { force: true });

  let response: Response;
  try {
    response = await job.fetchImpl(url, { redirect: 'follow' });
  } catch (e) {
    throw failed(`no response (${causeOf(e)})`);
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw failed(`the server answered HTTP ${response.status} ${response.statusText}`.trimEnd());
  }
  // A server announcing the wrong size fails now rather than after 170 MB. With a Content-Encoding the
  // header counts encoded bytes, which fetch decodes, so it says nothing then.
  const announced = response.headers.get('content-encoding') ? null : response.headers.get('content-length');
  if (announced !== null && Number(announced) !== expectedBytes) {
    await response.body.cancel();
    throw failed(`the server offers ${announced} bytes, expected ${expectedBytes} bytes (md5 ${md5})`);
  }

  const total = announced !== null ? Number(announced) : expectedBytes;
  const hash = createHash('md5');
  const handle = await open(part, 'w');
  const start = performance.now();
  let bytes = 0;
  const report = (done: boolean) =>
    onProgress({ bytes, total, bytesPerSecond: bytes / Math.max((performance.now() - start) / 1000, 1e-3), done });
  try {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      await handle.write(chunk);
      bytes += chunk.length;
      report(false);
    }
  } catch (e) {
    await handle.close();
    await rm(part, { force: true });
    throw failed(`the transfer broke off after ${bytes} of ${total} bytes (${causeOf(e)})`);
  }
  await handle.close();
  report(true);

  const digest = hash.digest('hex');
  if (bytes !== expectedBytes || digest !== md5) {
    await rm(part, { force: true });
    throw failed(`expected ${expectedBytes} bytes with md5 ${md5}, received ${bytes} bytes with md5 ${digest}`);
  }
  await rename(part, archive);
}

async function md5OfFile(path: string): Promise<string> {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** undici wraps the useful part ("ECONNREFUSED", "other side closed") in `cause`. */
function causeOf(e: unknown): string {
  const err = e as Error & { cause?: unknown };
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
}

/**
 * The default progress display: one line on stderr, redrawn at most 5 times a second, and only when stderr
 * is a terminal (a log file or CI output gets nothing rather than thousands of carriage returns).
 */
export function stderrProgress(stream: NodeJS.WriteStream = process.stderr, clock: () => number = () => performance.now()): (progress: DownloadProgress) => void {
  if (!stream.isTTY) return () => {};
  let last = Number.NEGATIVE_INFINITY;
  return ({ bytes, total, bytesPerSecond, done }) => {
    const now = clock();
    if (!done && now - last < 200) return;
    last = now;
    const mb = (n: number) => (n / 1e6).toFixed(1);
    const percent = total > 0 ? Math.min(100, (100 * bytes) / total).toFixed(0) : '?';
    stream.write(`\rDownloading CIFAR-10: ${mb(bytes)} / ${mb(total)} MB (${percent} %) at ${mb(bytesPerSecond)} MB/s`);
    if (done) stream.write('\n');
  };
}
