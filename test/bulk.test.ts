/**
 * Frames at their edges (every attachment kind, the bulk threshold, frames split anywhere, headers that
 * fill the frame) and the bulk regions themselves (bulk.ts): where they live, writes of several parts,
 * the shared weights written once per version, and short or closed regions.
 */
import { fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { BULK_THRESHOLD, BulkFile, bulkDirectory, RegionSink, RegionSource, SharedState } from '../src/protocol/bulk.js';
import { encodeFrame, FrameDecoder } from '../src/protocol/frame.js';

const concat = (parts: Buffer[]) => Buffer.concat(parts);
const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-bulk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const region = () => BulkFile.create(dir);

/** One array of each kind a frame carries, `n` values each. */
const everyKind = (n: number) => ({
  f32: Float32Array.from({ length: n }, (_, i) => i / 7),
  u8: Uint8Array.from({ length: n }, (_, i) => i % 251),
  i32: Int32Array.from({ length: n }, (_, i) => -i * 3),
  u32: Uint32Array.from({ length: n }, (_, i) => 4e9 - i),
  f64: Float64Array.from({ length: n }, (_, i) => Math.PI * i),
});

describe('frame attachments of every kind', () => {
  it.each([
    ['in the frame', 5, false],
    ['in a bulk region', 70_000, true],
  ])('come back %s with their own type and values', (_where, n, bulk) => {
    const file = region();
    const arrays = everyKind(n);
    const parts = encodeFrame({ type: 'x', ...arrays }, bulk ? new RegionSink(file) : undefined);
    // In a region, none of the 70,000-value arrays (the u8 one too: 70 kB is over the threshold) is in the frame itself.
    if (bulk) expect(concat(parts).length).toBeLessThan(400);
    const [m] = new FrameDecoder(new RegionSource({ 0: file })).push(concat(parts));
    for (const [kind, array] of Object.entries(arrays)) {
      expect(Object.getPrototypeOf(m[kind]), kind).toBe(Object.getPrototypeOf(array));
      expect(m[kind], kind).toEqual(array);
    }
    file.close();
  });

  it('goes to a region from exactly the threshold up, and stays in the frame below it', () => {
    const file = region();
    const sink = new RegionSink(file);
    const at = concat(encodeFrame({ v: new Uint8Array(BULK_THRESHOLD) }, sink)).length;
    const below = concat(encodeFrame({ v: new Uint8Array(BULK_THRESHOLD - 1) }, sink)).length;
    expect(at).toBeLessThan(100);
    expect(below).toBeGreaterThan(BULK_THRESHOLD);
    file.close();
  });
});

describe('frame decoder', () => {
  const message = { type: 'gradientsComputed', id: 3, grads: Float32Array.from({ length: 301 }, (_, i) => Math.cos(i)), labels: new Uint8Array([9, 8, 7]) };
  const frame = concat(encodeFrame(message));

  it.each([1, 3, 5, 7, 13])('reassembles frames split into chunks of %i bytes, the length field too', (size) => {
    const decoder = new FrameDecoder();
    const twice = Buffer.concat([frame, frame]);
    const out: Record<string, unknown>[] = [];
    for (let at = 0; at < twice.length; at += size) out.push(...decoder.push(twice.subarray(at, at + size)));
    expect(out).toHaveLength(2);
    for (const m of out) expect(m).toEqual({ ...message });
    expect(decoder.idle).toBe(true);
  });

  it('is idle only between frames: not with part of a length field, nor of a body', () => {
    const decoder = new FrameDecoder();
    expect(decoder.idle).toBe(true);
    decoder.push(frame.subarray(0, 2));
    expect(decoder.idle).toBe(false);
    decoder.push(frame.subarray(2, 10));
    expect(decoder.idle).toBe(false);
    expect(decoder.push(frame.subarray(10))).toHaveLength(1);
    expect(decoder.idle).toBe(true);
  });

  it('decodes a header that fills its frame exactly (header lengths of every remainder mod 8)', () => {
    for (let n = 0; n < 16; n++) {
      const m = { type: 'x', pad: 'p'.repeat(n) };
      expect(new FrameDecoder().push(concat(encodeFrame(m)))).toEqual([m]);
    }
  });

  it('refuses a length below 4 (no room for the header length) before allocating anything', () => {
    const bad = Buffer.alloc(8);
    bad.writeUInt32LE(3, 0);
    expect(() => new FrameDecoder().push(bad)).toThrow(`frame length 3 is outside 4..${2 ** 30}`);
  });
});

describe('bulk regions', () => {
  it('live in /dev/shm when it has room for twice the need, else in the temp folder', () => {
    expect(bulkDirectory(1e18)).toBe(os.tmpdir());
    // This machine's /dev/shm (where there is one) has room for 1 MB twice over.
    expect(bulkDirectory(1 << 20)).toBe(process.platform === 'linux' ? '/dev/shm' : os.tmpdir());
  });

  it('write several parts (empty ones too) one after another at an offset, and read back any range', () => {
    const file = region();
    file.write([Uint8Array.of(1, 2), new Uint8Array(0), Uint8Array.of(3), Uint8Array.of(4, 5, 6)], 10);
    const back = new Uint8Array(6);
    file.readInto(back, 10);
    expect(Array.from(back)).toEqual([1, 2, 3, 4, 5, 6]);
    const middle = new Uint8Array(3);
    file.readInto(middle, 11);
    expect(Array.from(middle)).toEqual([2, 3, 4]);
    file.close();
  });

  it('say how far a short region reaches when an attachment runs past its end', () => {
    const file = region();
    file.write([new Uint8Array(100)], 0);
    expect(() => file.readInto(new Uint8Array(30), 80)).toThrow('bulk region ended at 100 bytes, 10 short of an attachment: this is a bug');
    file.close();
  });

  it('refuse an inherited descriptor that is not open, at once rather than at the first read', () => {
    const file = region();
    const { fd } = file;
    file.close();
    expect(() => BulkFile.fromFd(fd)).toThrow(/EBADF/);
  });

  it('write the shared weights once per version, and again for a new version or another array', () => {
    const shared = new SharedState(region());
    const write = vi.spyOn(shared.file, 'write');
    const a = new Float32Array(10).fill(1);
    shared.publish(1, a);
    shared.publish(1, a);
    expect(write).toHaveBeenCalledTimes(1);
    shared.publish(2, a);
    expect(write).toHaveBeenCalledTimes(2);
    const b = new Float32Array(10).fill(2);
    shared.publish(2, b);
    expect(write).toHaveBeenCalledTimes(3);
    expect(shared.holds(b)).toBe(true);
    expect(shared.holds(a)).toBe(false);
    shared.file.close();
  });

  it('carry the shared weights by reference and every other large attachment in the own region, 8-aligned', () => {
    const own = region();
    const shared = new SharedState(region());
    const state = Float32Array.from({ length: 20_000 }, (_, i) => i);
    shared.publish(1, state);
    const grads = Float32Array.from({ length: 20_001 }, (_, i) => -i);
    const stats = Float32Array.from({ length: 30_000 }, (_, i) => i / 3);
    const place = vi.spyOn(RegionSink.prototype, 'place');
    const parts = encodeFrame({ type: 'x', state, grads, stats }, new RegionSink(own, shared));
    expect(place.mock.results.map((r) => r.value)).toEqual([
      { region: 1, offset: 0 },
      { region: 0, offset: 0 },
      { region: 0, offset: 80_008 }, // 80,004 bytes of grads, padded to 8
    ]);
    place.mockRestore();
    const source = new RegionSource({ 0: own, 1: shared.file });
    const [m] = new FrameDecoder(source).push(concat(parts));
    expect(m.state).toEqual(state);
    expect(m.grads).toEqual(grads);
    expect(m.stats).toEqual(stats);
    // A field of another size gets a buffer of its own; the same size reuses the field's buffer.
    const again = source.buffer('grads', 80_004);
    expect(again.buffer).toBe((m.grads as Float32Array).buffer);
    expect(source.buffer('grads', 16).byteLength).toBe(16);
    own.close();
    shared.file.close();
  });

  it('start every frame’s attachments at offset 0 of the own region, so it never grows past one frame', () => {
    const own = region();
    const sink = new RegionSink(own);
    const place = vi.spyOn(sink, 'place');
    const big = new Float32Array(20_000);
    encodeFrame({ a: big, b: big }, sink);
    encodeFrame({ a: big }, sink);
    expect(place.mock.results.map((r) => r.value.offset)).toEqual([0, 80_000, 0]);
    own.close();
  });

  it('name a region the receiving side does not have', () => {
    expect(() => new RegionSource({}).read(1, 0, new Uint8Array(4))).toThrow('no bulk region 1 on this side of the channel: this is a bug');
  });
});

describe('a region that cannot be written (a full disk: /dev/full answers every write with ENOSPC)', () => {
  const full = () => BulkFile.fromFd(openSync('/dev/full', 'r+'));

  it('says so in one line naming the region and the cause, and a channel send rejects instead of throwing', async () => {
    const f = full();
    expect(() => f.write([new Uint8Array(8)], 0)).toThrow(new RegExp(`^could not write an exchange region \\(descriptor ${f.fd}\\): no space left on the device \\(ENOSPC\\)$`));
    const { Channel } = await import('../src/protocol/channel.js');
    const channel = new Channel(new PassThrough(), { message: () => {}, close: () => {} }, { out: new RegionSink(f) });
    await expect(channel.send({ type: 'x', big: new Float32Array(BULK_THRESHOLD) })).rejects.toMatchObject({ code: 'OUTPUT' });
    channel.destroy();
    f.close();
  });

  it('preallocation fails at once, in one line; a region made in a folder with room holds its bytes', () => {
    const f = full();
    expect(() => f.preallocate(1 << 20)).toThrow(new RegExp(`^could not reserve 1\\.0 MB for an exchange region in descriptor ${f.fd}: no space left on the device \\(ENOSPC\\)$`));
    f.close();
    const r = BulkFile.createReserved(dir, 100_000);
    expect(fstatSync(r.fd).size).toBe(100_000);
    expect(fstatSync(r.fd).blocks * 512).toBeGreaterThanOrEqual(100_000); // allocated, not a hole
    r.close();
  });
});

