/**
 * A minimal, strict .tar.gz extractor: enough for a data set archive, and nothing an archive could use to
 * write outside its folder. Only members named in an allow-list are extracted; absolute paths, `..`,
 * links, devices and any other name fail the whole extraction with an error naming the member.
 *
 * Format: POSIX ustar (IEEE 1003.1-1988; https://www.gnu.org/software/tar/manual/html_node/Standard.html):
 * 512-byte headers, each followed by its data padded to 512 bytes, two zero blocks at the end. Long names
 * come either as a pax extended header ('x', key `path`) or a GNU 'L' header before the member; both are
 * honoured so that the allow-list sees the real name.
 *
 * Every file is written to a temporary name beside its destination and renamed when complete, so an
 * interrupted extraction never leaves a short file under a real name.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { createGunzip } from 'node:zlib';
import { TrainpoolError } from '../util/errors.js';

export interface ExtractOptions {
  archive: string;
  destDir: string;
  /** Names of the regular files that may be extracted, e.g. 'cifar-10-batches-bin/test_batch.bin'. */
  files: ReadonlySet<string>;
  /** Names of the directories that may appear, without a trailing slash. */
  directories: ReadonlySet<string>;
}

const BLOCK = 512;

const TYPE_NAMES: Record<string, string> = {
  '1': 'a hard link',
  '2': 'a symbolic link',
  '3': 'a character device',
  '4': 'a block device',
  '6': 'a FIFO',
  '7': 'a contiguous file',
  K: 'a GNU long link name',
};

/** Extracts the allowed members of a .tar.gz into destDir; returns the names of the files written. */
export async function extractTarGz(options: ExtractOptions): Promise<string[]> {
  const { archive, destDir } = options;
  const source = createReadStream(archive, { highWaterMark: 1 << 20 });
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  source.on('error', (e) => gunzip.destroy(e));
  source.pipe(gunzip);
  const reader = new BlockReader(gunzip[Symbol.asyncIterator]() as AsyncIterator<Buffer>, archive);
  const written: string[] = [];
  try {
    let longName: string | undefined;
    for (;;) {
      const header = await reader.read(BLOCK);
      // A missing end-of-archive marker is tolerated, as GNU tar does; a cut inside a member is not.
      if (header.length === 0 || header.every((b) => b === 0)) break;
      if (header.length < BLOCK) throw invalid(`Archive ${archive} is truncated inside a header`);
      checkChecksum(archive, header);
      const type = String.fromCharCode(header[156] || 0x30); // NUL means a regular file in old tars
      const size = parseSize(archive, header);
      const padded = Math.ceil(size / BLOCK) * BLOCK;

      if (type === 'x' || type === 'L' || type === 'g') {
        const body = await reader.read(padded);
        if (body.length < padded) throw invalid(`Archive ${archive} is truncated inside an extended header`);
        if (type === 'x') longName = paxPath(body.subarray(0, size)) ?? longName;
        if (type === 'L') longName = cString(body.subarray(0, size));
        continue; // 'g' (global pax settings) carries nothing this extractor uses
      }

      const name = normalize(longName ?? headerName(header));
      longName = undefined;
      checkMember(options, name, type);
      if (type === '5') {
        await mkdir(inside(destDir, name), { recursive: true });
        await reader.skip(padded);
        continue;
      }
      await writeMember(reader, inside(destDir, name), size);
      await reader.skip(padded - size);
      written.push(name);
    }
  } catch (e) {
    if (e instanceof TrainpoolError) throw e;
    const { code, message } = e as NodeJS.ErrnoException;
    if (code?.startsWith('Z_')) throw invalid(`Archive ${archive} is not a readable gzip file: ${message}`);
    // Not the archive's fault (a full disk, a permission): no data-set error code fits.
    throw new Error(`Extracting ${archive} into ${destDir} failed: ${message}`, { cause: e });
  } finally {
    source.destroy();
    gunzip.destroy();
  }
  return written;
}

function checkMember(options: ExtractOptions, name: string, type: string): void {
  let reason: string | undefined;
  if (name.startsWith('/')) reason = 'an absolute path';
  else if (name.split('/').includes('..')) reason = "a path with '..'";
  else if (TYPE_NAMES[type]) reason = TYPE_NAMES[type];
  else if (type !== '0' && type !== '5') reason = `of unknown type '${type}'`;
  else if (type === '5' && !options.directories.has(name.replace(/\/$/, ''))) reason = 'an unexpected directory';
  else if (type === '0' && !options.files.has(name)) reason = 'an unexpected file';
  if (reason === undefined) return;
  const allowed = [...[...options.directories].map((d) => `${d}/`), ...options.files].join(', ');
  throw invalid(`Archive ${options.archive} member '${name}' is ${reason}: only these may be extracted: ${allowed}`);
}

/** Writes `size` bytes of member data to a temporary file beside `path`, then renames it. */
async function writeMember(reader: BlockReader, path: string, size: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const handle = await open(temp, 'w');
  try {
    for await (const piece of reader.pieces(size)) await handle.write(piece);
    await handle.close();
    await rename(temp, path);
  } catch (e) {
    await handle.close().catch(() => {});
    await rm(temp, { force: true });
    throw e;
  }
}

/** destDir/name, after making sure (again: checkMember already refused `..` and absolute paths) it stays inside. */
function inside(destDir: string, name: string): string {
  const root = resolve(destDir);
  const path = resolve(root, name);
  if (!path.startsWith(root + sep)) {
    throw new Error(`tar: member '${name}' resolved outside ${root} after passing the checks; this is a bug`);
  }
  return path;
}

function normalize(name: string): string {
  return name.startsWith('./') ? name.slice(2) : name;
}

function headerName(header: Buffer): string {
  const name = cString(header.subarray(0, 100));
  // Only POSIX ustar ("ustar\0") has a name prefix there; old GNU tar ("ustar  \0") keeps times in it.
  const isPosix = header.toString('latin1', 257, 263) === 'ustar\0';
  const prefix = isPosix ? cString(header.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.toString('utf8', 0, end < 0 ? bytes.length : end);
}

/** pax records are "<length> <key>=<value>\n"; returns the value of `path`, if any. */
function paxPath(body: Buffer): string | undefined {
  let path: string | undefined;
  let at = 0;
  while (at < body.length) {
    const space = body.indexOf(0x20, at);
    const length = Number.parseInt(body.toString('latin1', at, space), 10);
    if (space < 0 || !(length > 0)) break;
    const record = body.toString('utf8', space + 1, at + length - 1);
    const eq = record.indexOf('=');
    if (record.slice(0, eq) === 'path') path = record.slice(eq + 1);
    at += length;
  }
  return path;
}

function parseSize(archive: string, header: Buffer): number {
  if (header[124] & 0x80) throw invalid(`Archive ${archive} has a member over 8 GiB (base-256 size), which no data set here has`);
  return parseOctal(archive, header, 124, 12, 'size');
}

function parseOctal(archive: string, header: Buffer, offset: number, length: number, field: string): number {
  const text = header.toString('latin1', offset, offset + length).replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]*$/.test(text)) throw invalid(`Archive ${archive} has a header whose ${field} field is not octal: '${text}'`);
  return text === '' ? 0 : Number.parseInt(text, 8);
}

/** The checksum is the sum of the header's bytes with the checksum field counted as spaces. */
function checkChecksum(archive: string, header: Buffer): void {
  const stored = parseOctal(archive, header, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0; // some old tars summed signed chars
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : header[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed) {
    throw invalid(`Archive ${archive} has a corrupt header: checksum ${stored}, computed ${unsigned} (not a tar file?)`);
  }
}

function invalid(message: string): TrainpoolError {
  return new TrainpoolError('DATA_INVALID', message);
}

/** Exact-size reads over a stream of chunks. */
class BlockReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;

  constructor(
    private readonly source: AsyncIterator<Buffer>,
    private readonly archive: string,
  ) {}

  /** `n` bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const take = Math.min(n, all.length);
    this.chunks = take < all.length ? [all.subarray(take)] : [];
    this.buffered = all.length - take;
    return all.subarray(0, take);
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.pieces(n));
  }

  /** Exactly `n` bytes in pieces as they arrive; throws if the stream ends first. */
  async *pieces(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      await this.fill(1);
      if (this.buffered === 0) throw invalid(`Archive ${this.archive} is truncated inside a member`);
      const first = this.chunks[0];
      const take = Math.min(first.length, left);
      yield first.subarray(0, take);
      if (take === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(take);
      this.buffered -= take;
      left -= take;
    }
  }

  private async fill(n: number): Promise<void> {
    while (this.buffered < n && !this.ended) {
      const next = await this.source.next();
      if (next.done) this.ended = true;
      else {
        this.chunks.push(next.value);
        this.buffered += next.value.length;
      }
    }
  }
}
