/**
 * Writes CIFAR-10 binary-version files (data_batch_1..5.bin, test_batch.bin) in the exact on-disk format,
 * with pixel values that are a known function of (record, channel, pixel), so a reader's channel-major →
 * HWC transpose can be checked value by value; and builds .tar.gz archives of them (or of anything else,
 * hostile members included) as the download is served them.
 *
 * Records are numbered globally: data_batch_1 holds 0..n-1, data_batch_2 holds n..2n-1, ...,
 * test_batch holds 5n..6n-1.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const CIFAR_FILE_NAMES = [
  'data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin',
] as const;

const RECORD = 3073;

/** Label of global record k. */
export function fixtureLabel(k: number): number {
  return k % 10;
}

/**
 * Value of channel c (0 R, 1 G, 2 B) at pixel p (= y·32 + x) of global record k. R at (0,0) is k % 256;
 * the three planes differ by constant offsets and slopes, so a channel or plane mix-up shows.
 */
export function fixturePixel(k: number, c: number, p: number): number {
  return (k + (c + 1) * p + c * 85) & 255;
}

/** The bytes of one file: `records` records starting at global record `first`. */
export function cifarFileBytes(first: number, records: number): Buffer {
  const out = Buffer.allocUnsafe(records * RECORD);
  for (let i = 0; i < records; i++) {
    const k = first + i;
    const base = i * RECORD;
    out[base] = fixtureLabel(k);
    for (let c = 0; c < 3; c++) {
      const plane = base + 1 + c * 1024;
      for (let p = 0; p < 1024; p++) out[plane + p] = (k + (c + 1) * p + c * 85) & 255;
    }
  }
  return out;
}

/** Writes all six files into `dir` with `recordsPerFile` records each (10,000 in the real set). */
export function writeCifarFiles(dir: string, recordsPerFile: number): void {
  CIFAR_FILE_NAMES.forEach((name, f) => writeFileSync(join(dir, name), cifarFileBytes(f * recordsPerFile, recordsPerFile)));
}

export interface TarMember {
  name: string;
  data?: Buffer;
  /** ustar typeflag: '0' file, '5' directory, '2' symlink, '1' hard link, 'x' pax header, 'L' GNU long name. */
  type?: string;
  linkname?: string;
  /** ustar name prefix (joined to the name with '/'). */
  prefix?: string;
}

/** One POSIX ustar member: header block, data, zero padding to 512 bytes. */
export function tarMember({ name, data = Buffer.alloc(0), type = '0', linkname = '', prefix = '' }: TarMember): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
  header.write('14000000000\0', 136);
  header.write('        ', 148);
  header.write(type, 156);
  header.write(linkname, 157, 100, 'utf8');
  header.write('ustar\0' + '00', 257, 'latin1');
  header.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return Buffer.concat([header, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** A pax extended header that renames the next member. */
export function paxPath(path: string): Buffer {
  let record = ` path=${path}\n`;
  let length = record.length + 1;
  while (`${length}${record}`.length !== length) length = `${length}${record}`.length;
  return tarMember({ name: 'PaxHeader', type: 'x', data: Buffer.from(`${length}${record}`) });
}

/** Members followed by the two zero blocks that end an archive, gzipped. */
export function tarGz(members: Buffer[]): Buffer {
  return gzipSync(Buffer.concat([...members, Buffer.alloc(1024)]));
}

/** The CIFAR-10 archive's layout with `recordsPerFile` records per batch. */
export function cifarArchive(recordsPerFile: number): Buffer {
  return tarGz([
    tarMember({ name: 'cifar-10-batches-bin/', type: '5' }),
    ...CIFAR_FILE_NAMES.map((name, f) =>
      tarMember({ name: `cifar-10-batches-bin/${name}`, data: cifarFileBytes(f * recordsPerFile, recordsPerFile) }),
    ),
    tarMember({ name: 'cifar-10-batches-bin/batches.meta.txt', data: Buffer.from('airplane\nautomobile\n') }),
    tarMember({ name: 'cifar-10-batches-bin/readme.html', data: Buffer.from('<html></html>\n') }),
  ]);
}
