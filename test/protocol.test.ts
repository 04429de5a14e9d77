import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Channel } from '../src/protocol/channel.js';
import { Packr } from 'msgpackr';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from '../src/protocol/frame.js';
import { asFromWorker, asToWorker } from '../src/protocol/messages.js';

const concat = (parts: Buffer[]) => Buffer.concat(parts);

describe('frame codec', () => {
  it('round-trips scalars, nested objects and typed arrays', () => {
    const grads = Float32Array.from({ length: 1001 }, (_, i) => Math.sin(i));
    const labels = new Uint8Array([3, 1, 4]);
    const frame = concat(encodeFrame({ type: 'gradientsComputed', id: 7, grads, labels, loss: 0.25, extra: { a: [1, 'b'] } }));
    const [m] = new FrameDecoder().push(frame);
    expect(m).toMatchObject({ type: 'gradientsComputed', id: 7, loss: 0.25, extra: { a: [1, 'b'] } });
    expect(m.grads).toBeInstanceOf(Float32Array);
    expect(m.grads).toEqual(grads);
    expect(m.labels).toEqual(labels);
  });

  it('returns 8-byte-aligned views whatever the header length', () => {
    for (let pad = 0; pad < 9; pad++) {
      const frame = concat(encodeFrame({ type: 'x', s: 'y'.repeat(pad), a: new Float64Array([1.5, 2.5]) }));
      const [m] = new FrameDecoder().push(frame);
      const a = m.a as Float64Array;
      expect(a.byteOffset % 8).toBe(0);
      expect(Array.from(a)).toEqual([1.5, 2.5]);
    }
  });

  it('sends a typed array from its own memory (a view of a larger buffer included)', () => {
    const big = new Float32Array([9, 8, 7, 6]);
    const parts = encodeFrame({ type: 'x', v: big.subarray(1, 3) });
    const attachment = parts.find((p) => p.length === 8 && p.buffer === big.buffer);
    expect(attachment).toBeDefined();
    const [m] = new FrameDecoder().push(concat(parts));
    expect(Array.from(m.v as Float32Array)).toEqual([8, 7]);
  });

  it('reassembles frames split at every byte and several frames in one chunk', () => {
    const a = concat(encodeFrame({ type: 'a', v: new Uint8Array([1, 2, 3]) }));
    const b = concat(encodeFrame({ type: 'b', n: 2 }));
    const stream = Buffer.concat([a, b, a]);
    const d = new FrameDecoder();
    const got: unknown[] = [];
    for (let i = 0; i < stream.length; i++) got.push(...d.push(stream.subarray(i, i + 1)));
    expect(got.map((m) => (m as { type: string }).type)).toEqual(['a', 'b', 'a']);
    expect(d.idle).toBe(true);
    expect(new FrameDecoder().push(stream).length).toBe(3);
  });

  it('rejects an absurd frame length instead of allocating it', () => {
    const bad = Buffer.alloc(8);
    bad.writeUInt32LE(0xfffffff0, 0);
    expect(() => new FrameDecoder().push(bad)).toThrow(/frame length 4294967280 is outside/);
  });

  it('rejects a frame too short to hold its header length, naming the limits', () => {
    for (const length of [0, 3]) {
      const bad = Buffer.alloc(8);
      bad.writeUInt32LE(length, 0);
      expect(() => new FrameDecoder().push(bad), `length ${length}`).toThrow(`frame length ${length} is outside 4..${2 ** 30}`);
    }
  });

  it('rejects a header length that overruns its frame', () => {
    const frame = concat(encodeFrame({ type: 'x', n: 1 }));
    frame.writeUInt32LE(frame.length, 4); // the header now claims more bytes than the frame has
    expect(() => new FrameDecoder().push(frame)).toThrow(`frame header of ${frame.length} bytes overruns a ${frame.length - 4}-byte frame`);
  });

  it('rejects an attachment that overruns its frame, naming the field', () => {
    const frame = concat(encodeFrame({ type: 'x', grads: new Float32Array(4) }));
    // Cut the last attachment's bytes off, and make the length field agree with the shorter frame.
    const cut = frame.subarray(0, frame.length - 8);
    cut.writeUInt32LE(cut.length - 4, 0);
    expect(() => new FrameDecoder().push(cut)).toThrow('frame attachment grads overruns the frame');
  });
});

describe('frame codec: what goes on the wire, and malformed attachments', () => {
  const packr = new Packr({ useRecords: false });
  /** A frame whose header is `header` as given, followed by `body` bytes: what a broken peer could send. */
  const rawFrame = (header: object, body = Buffer.alloc(0)) => {
    const head = packr.pack(header);
    const headEnd = Math.ceil((8 + head.length) / 8) * 8;
    const frame = Buffer.alloc(headEnd + body.length);
    frame.writeUInt32LE(frame.length - 4, 0);
    frame.writeUInt32LE(head.length, 4);
    head.copy(frame, 8);
    body.copy(frame, headEnd);
    return frame;
  };

  it('leaves out undefined fields, and the attachment list when there are no attachments', () => {
    const parts = encodeFrame({ type: 'x', id: undefined, n: 1 });
    expect(packr.unpack(parts[1])).toEqual({ type: 'x', n: 1 });
    expect(Object.keys(packr.unpack(parts[1]) as object)).toEqual(['type', 'n']);
    const [m] = new FrameDecoder().push(concat(parts));
    expect(Object.keys(m)).toEqual(['type', 'n']);
  });

  it('adds padding only where a part does not end on 8 bytes: no empty buffers for the socket', () => {
    for (const s of ['', 'a', 'ab', 'abcdefgh']) {
      for (const n of [1, 2, 8, 9]) {
        const parts = encodeFrame({ type: 'x', s, a: new Uint8Array(n), b: new Float64Array(1) });
        expect(parts.every((p) => p.length > 0), `s=${JSON.stringify(s)} n=${n}`).toBe(true);
        expect(concat(parts).length % 8).toBe(0);
      }
    }
  });

  it('refuses to encode a frame over MAX_FRAME_BYTES, naming its size', () => {
    // Zero-filled typed arrays are mapped lazily: a 1 GiB one costs no memory until it is written.
    const big = new Uint8Array(MAX_FRAME_BYTES);
    expect(() => encodeFrame({ type: 'x', big })).toThrow(/^frame of \d+ bytes exceeds the 1073741824-byte limit$/);
  });

  it('accepts a frame length of exactly MAX_FRAME_BYTES and waits for its body', () => {
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32LE(MAX_FRAME_BYTES, 0);
    const d = new FrameDecoder();
    expect(d.push(prefix)).toEqual([]);
    expect(d.idle).toBe(false);
  });

  it('rejects an attachment of an unknown kind, and one in a bulk region on a channel without regions', () => {
    expect(() => new FrameDecoder().push(rawFrame({ type: 'x', $bins: [{ field: 'w', kind: 'f16', length: 2 }] }, Buffer.alloc(8)))).toThrow(
      'frame attachment w has unknown kind f16',
    );
    expect(() => new FrameDecoder().push(rawFrame({ type: 'x', $bins: [{ field: 'w', kind: 'f32', length: 2, region: 1, offset: 0 }] }))).toThrow(
      'frame attachment w is in bulk region 1, but this channel has none',
    );
  });
});

describe('message narrowing', () => {
  it('names an unknown message type', () => {
    expect(() => asToWorker({ type: 'explode' })).toThrow('unexpected message to a worker: "explode"');
    expect(() => asFromWorker({ type: 'init' })).toThrow('unexpected message from a worker: "init"');
    for (const type of ['init', 'computeGradients', 'evaluate', 'shutdown']) expect(asToWorker({ type }).type).toBe(type);
    for (const type of ['ready', 'gradientsComputed', 'evaluated', 'failed']) expect(asFromWorker({ type }).type).toBe(type);
    expect(() => asToWorker({ type: 'ready' })).toThrow('unexpected message to a worker: "ready"');
  });
});

/** Two Duplex ends joined back to back, like a socket pair (Node 20 has no stream.duplexPair). */
function pair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (other: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _encoding, done) {
        other().push(chunk);
        done();
      },
      final(done) {
        other().push(null);
        done();
      },
    });
  ends.push(make(() => ends[1]), make(() => ends[0]));
  return [ends[0], ends[1]];
}

describe('Channel', () => {
  it('delivers messages in order and reports a clean close', async () => {
    const [a, b] = pair();
    const got: Record<string, unknown>[] = [];
    const closed = new Promise<Error | null>((resolve) => {
      new Channel(b, { message: (m) => got.push(m), close: resolve });
    });
    const tx = new Channel(a, { message: () => {}, close: () => {} });
    await tx.send({ type: 'one', v: new Float32Array([1, 2]) });
    await tx.send({ type: 'two' });
    tx.close();
    expect(await closed).toBeNull();
    expect(got.map((m) => m.type)).toEqual(['one', 'two']);
  });

  it('reports a stream that ends inside a frame as an error', async () => {
    const [a, b] = pair();
    const closed = new Promise<Error | null>((resolve) => {
      new Channel(b, { message: () => {}, close: resolve });
    });
    const frame = concat(encodeFrame({ type: 'x', v: new Uint8Array(100) }));
    a.write(frame.subarray(0, 50));
    a.end();
    expect((await closed)?.message).toBe('the stream ended inside a frame');
  });
});

describe('Channel: errors and closing', () => {
  /** A channel on `b` recording its close calls. */
  const watched = (b: Duplex) => {
    const closes: (Error | null)[] = [];
    const got: Record<string, unknown>[] = [];
    const channel = new Channel(b, { message: (m) => got.push(m), close: (e) => closes.push(e) });
    return { channel, closes, got };
  };

  it("a malformed frame closes the channel with the decoder's error and destroys the stream", async () => {
    const [a, b] = pair();
    const { channel, closes } = watched(b);
    const bad = Buffer.alloc(8);
    bad.writeUInt32LE(2, 0);
    a.write(bad);
    await new Promise((r) => setImmediate(r));
    expect(closes.map((e) => e?.message)).toEqual([`frame length 2 is outside 4..${MAX_FRAME_BYTES}`]);
    expect(channel.isClosed).toBe(true);
    expect(b.destroyed).toBe(true);
    await expect(channel.send({ type: 'late' })).rejects.toThrow('the channel is closed');
  });

  it('a stream error closes it with that error, once, though the stream also emits close afterwards', async () => {
    const [, b] = pair();
    const { channel, closes } = watched(b);
    expect(channel.isClosed).toBe(false);
    b.destroy(new Error('EPIPE, say'));
    await new Promise((r) => setImmediate(r));
    expect(closes.map((e) => e?.message)).toEqual(['EPIPE, say']);
    expect(channel.isClosed).toBe(true);
  });

  it('destroy() without an end still closes it, cleanly between frames, and only once', async () => {
    const [a, b] = pair();
    const rx = watched(b);
    const tx = watched(a);
    await tx.channel.send({ type: 'one' });
    await new Promise((r) => setImmediate(r));
    rx.channel.destroy();
    await new Promise((r) => setImmediate(r));
    expect(rx.got.map((m) => m.type)).toEqual(['one']);
    expect(rx.closes).toEqual([null]);
    expect(b.destroyed).toBe(true);
  });
});

describe('bulk regions', () => {
  it('carries large attachments through a region and small ones in the frame', async () => {
    const { BulkFile, RegionSink, RegionSource } = await import('../src/protocol/bulk.js');
    const file = BulkFile.create(os.tmpdir());
    const big = Float32Array.from({ length: 40_000 }, (_, i) => i);
    const small = new Uint8Array([1, 2, 3]);
    const parts = encodeFrame({ type: 'x', big, small }, new RegionSink(file));
    // The frame itself stays small: the 160 kB array is not in it.
    expect(concat(parts).length).toBeLessThan(200);
    const [m] = new FrameDecoder(new RegionSource({ 0: file })).push(concat(parts));
    expect(m.big).toEqual(big);
    expect(m.small).toEqual(small);
    file.close();
  });

  it('refers to the shared weights without writing them again, and reuses receive buffers per field', async () => {
    const { BulkFile, RegionSink, RegionSource, SharedState } = await import('../src/protocol/bulk.js');
    const own = BulkFile.create(os.tmpdir());
    const shared = new SharedState(BulkFile.create(os.tmpdir()));
    const weights = Float32Array.from({ length: 20_000 }, (_, i) => -i);
    shared.publish(1, weights);
    const source = new RegionSource({ 0: own, 1: shared.file });
    const decoder = new FrameDecoder(source);
    const [a] = decoder.push(concat(encodeFrame({ type: 'x', state: weights }, new RegionSink(own, shared))));
    expect(a.state).toEqual(weights);
    weights[0] = 42; // same array, next version: published again before it is sent
    shared.publish(2, weights);
    const [b] = decoder.push(concat(encodeFrame({ type: 'x', state: weights }, new RegionSink(own, shared))));
    expect((b.state as Float32Array)[0]).toBe(42);
    expect((b.state as Float32Array).buffer).toBe((a.state as Float32Array).buffer);
    own.close();
    shared.file.close();
  });

  it('leaves no file behind: a region is unlinked as soon as it is created', async () => {
    const { readdirSync, mkdtempSync, rmSync } = await import('node:fs');
    const { BulkFile } = await import('../src/protocol/bulk.js');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bulk-'));
    const f = BulkFile.create(dir);
    f.write([new Uint8Array([1, 2, 3])], 0);
    expect(readdirSync(dir)).toEqual([]);
    const back = new Uint8Array(3);
    f.readInto(back, 0);
    expect(Array.from(back)).toEqual([1, 2, 3]);
    f.close();
    rmSync(dir, { recursive: true });
  });
});
