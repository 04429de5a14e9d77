/**
 * The handshake between hosts (src/protocol/handshake.ts) over loopback TCP: a peer with the secret gets
 * through and its first frames arrive whole; a wrong secret on either side, garbage, a flood, a replayed
 * proof and a silent peer are each refused with one line, and the coordinator goes on accepting others.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Channel } from '../src/protocol/channel.js';
import { acceptPeer, connectPeer, HELLO_BYTES, OK_BYTES, PROOF_BYTES, readSecret, type Accepted } from '../src/protocol/handshake.js';

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef0123456789abcdef');
const RUN_ID = randomBytes(16);

interface Coordinator {
  port: number;
  /** Each connection's outcome, in order: the accepted peer and its socket, or the refusal's message. */
  outcomes: Promise<{ accepted: Accepted; socket: net.Socket } | { refused: string }>[];
  close(): Promise<void>;
}

const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function coordinator(secret = SECRET, timeoutMs = 2_000): Promise<Coordinator> {
  const outcomes: Coordinator['outcomes'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    outcomes.push(acceptPeer(socket, { secret, runId: RUN_ID, timeoutMs }).then((accepted) => ({ accepted, socket }), (e: Error) => ({ refused: e.message })));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const c = {
    port: (server.address() as net.AddressInfo).port,
    outcomes,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  open.push(c);
  return c;
}

function dial(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** Bytes `socket` receives until it closes. */
function drain(socket: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  socket.on('data', (b: Buffer) => parts.push(b));
  return new Promise((resolve) => socket.on('close', () => resolve(Buffer.concat(parts))));
}

const until = async (c: Coordinator, n: number) => {
  while (c.outcomes.length < n) await new Promise((r) => setTimeout(r, 5));
  return c.outcomes[n - 1];
};

describe('the handshake between hosts', () => {
  it('lets a peer with the secret through both ways, and the frames sent right after OK arrive whole', async () => {
    const c = await coordinator();
    const peer = await dial(c.port);
    const joined = connectPeer(peer, { secret: SECRET, nodeRank: 3 });
    const outcome = await until(c, 1);
    if (!('accepted' in outcome)) throw new Error(outcome.refused);
    expect(outcome.accepted).toEqual({ nodeRank: 3 });
    // The coordinator's first frame leaves at once, in the same packets as OK, perhaps.
    const weights = Float32Array.from({ length: 50_000 }, (_, i) => i / 7);
    const got = new Promise<Record<string, unknown>>((resolve) => {
      void joined.then(({ runId }) => {
        expect(runId.equals(RUN_ID)).toBe(true);
        new Channel(peer, { message: resolve, close: () => {} });
        peer.resume();
      });
    });
    const ours = new Channel(outcome.socket, { message: () => {}, close: () => {} });
    outcome.socket.resume();
    await ours.send({ type: 'init', weights });
    const m = await got;
    expect(m.type).toBe('init');
    expect(Array.from(m.weights as Float32Array)).toEqual(Array.from(weights));
    peer.destroy();
  });

  it('refuses a peer with another secret, and goes on accepting the next one', async () => {
    const c = await coordinator();
    const wrong = await dial(c.port);
    const refusedPeer = connectPeer(wrong, { secret: Buffer.from(SECRET).fill(0x41, 0, 1), nodeRank: 1 });
    expect(await until(c, 1)).toEqual({ refused: "the peer calling itself host 1 does not hold the run's secret (its proof does not match)" });
    await expect(refusedPeer).rejects.toThrow('the connection closed before its proof');
    const right = await dial(c.port);
    const joined = connectPeer(right, { secret: SECRET, nodeRank: 1 });
    expect(await until(c, 2)).toMatchObject({ accepted: { nodeRank: 1 } });
    await joined;
    right.destroy();
  });

  it('keeps a peer from talking to a coordinator without the secret', async () => {
    // An impostor: greets like a coordinator, takes the proof and answers OK, but cannot make OK's MAC.
    const after: Buffer[] = [];
    const impostor = net.createServer((socket) => {
      socket.write(Buffer.concat([Buffer.from('TPH1'), RUN_ID, randomBytes(32)]));
      let got = 0;
      socket.on('data', (b: Buffer) => {
        got += b.length;
        if (got > PROOF_BYTES) after.push(b.subarray(b.length - (got - PROOF_BYTES)));
        if (got >= PROOF_BYTES && got - b.length < PROOF_BYTES) socket.write(Buffer.concat([Buffer.from('TPO1'), randomBytes(32)]));
      });
    });
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    try {
      const peer = await dial((impostor.address() as net.AddressInfo).port);
      await expect(connectPeer(peer, { secret: SECRET, nodeRank: 2 })).rejects.toThrow("the coordinator does not hold the run's secret (its proof does not match)");
      expect(peer.destroyed).toBe(true);
      expect(after).toEqual([]); // nothing past the proof
    } finally {
      await new Promise((r) => impostor.close(r));
    }
  });

  it('refuses garbage, a flood and a silent peer, each in one line, without decoding a byte of them', async () => {
    const c = await coordinator(SECRET, 300);
    const garbage = await dial(c.port);
    const closedGarbage = drain(garbage);
    garbage.write(randomBytes(PROOF_BYTES));
    expect(await until(c, 1)).toEqual({ refused: 'not a trainpool peer: its first bytes are not a proof' });
    expect((await closedGarbage).length).toBe(HELLO_BYTES); // the greeting, then the connection closed

    const flood = await dial(c.port);
    const closedFlood = drain(flood);
    flood.write(Buffer.alloc(1 << 20, 7));
    expect(await until(c, 2)).toMatchObject({ refused: expect.stringMatching(/^the peer sent \d+ bytes where its proof has 72, before authenticating$/) });
    await closedFlood;

    const silent = await dial(c.port);
    const closedSilent = drain(silent);
    expect(await until(c, 3)).toEqual({ refused: 'the handshake took longer than 300 ms' });
    await closedSilent;
  });

  it('refuses a recorded proof replayed on another connection', async () => {
    const c = await coordinator();
    // A listener in the middle records what a genuine peer sends.
    const recorded: Buffer[] = [];
    const relay = net.createServer((fromPeer) => {
      const toCoordinator = net.connect(c.port, '127.0.0.1');
      fromPeer.on('data', (b: Buffer) => {
        recorded.push(b);
        toCoordinator.write(b);
      });
      toCoordinator.on('data', (b: Buffer) => fromPeer.write(b));
      toCoordinator.on('close', () => fromPeer.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    try {
      const genuine = await dial((relay.address() as net.AddressInfo).port);
      await connectPeer(genuine, { secret: SECRET, nodeRank: 1 });
      expect(await until(c, 1)).toMatchObject({ accepted: { nodeRank: 1 } });
      const proof = Buffer.concat(recorded);
      expect(proof.length).toBe(PROOF_BYTES);
      genuine.destroy();
      // The same bytes on a connection of its own: the coordinator's nonce is another one now.
      const replay = await dial(c.port);
      const closed = drain(replay);
      replay.write(proof);
      expect(await until(c, 2)).toEqual({ refused: "the peer calling itself host 1 does not hold the run's secret (its proof does not match)" });
      expect((await closed).length).toBe(HELLO_BYTES); // no OK
    } finally {
      await new Promise((r) => relay.close(r));
    }
  });

  it('records have the sizes the header gives', () => {
    expect([HELLO_BYTES, PROOF_BYTES, OK_BYTES]).toEqual([4 + 16 + 32, 4 + 4 + 32 + 32, 4 + 32]);
  });
});

describe('the run’s secret', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'trainpool-secret-'));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is the file’s bytes less a trailing newline, at least 32 of them', () => {
    const file = path.join(dir, 'secret');
    writeFileSync(file, `${'ab'.repeat(32)}\n`);
    expect(readSecret(file).toString()).toBe('ab'.repeat(32));
    writeFileSync(file, 'short\r\n');
    expect(() => readSecret(file)).toThrow(`TRAINPOOL_SECRET_FILE must hold at least 32 bytes (openssl rand -hex 32 > file). Received: 5 bytes in ${file}`);
    expect(() => readSecret(path.join(dir, 'absent'))).toThrow(`TRAINPOOL_SECRET_FILE must name a readable file. Received: ${path.join(dir, 'absent')} (ENOENT)`);
  });
});
