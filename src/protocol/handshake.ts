/**
 * Mutual authentication of a connection between hosts, before a single byte of it is decoded as a frame.
 *
 * PyTorch's distributed stack has no authentication ("not built for untrusted environments"); a port that
 * decodes whatever arrives is how remote-code-execution reports against training clusters start. Here a
 * peer proves it holds the run's shared secret, and the coordinator proves it back, with HMAC-SHA256 over
 * fresh nonces of both sides:
 *
 *   coordinator → peer   HELLO  "TPH1", run id (16 bytes), coordinator nonce (32)
 *   peer → coordinator   PROOF  "TPP1", node rank (u32 BE), peer nonce (32), HMAC(secret, "peer" ‖ …)
 *   coordinator → peer   OK     "TPO1", HMAC(secret, "coordinator" ‖ …)
 *
 * where … is the run id, both nonces and the node rank. Each record has a fixed size and is read by offset:
 * nothing before OK goes through msgpack or allocates by a length the peer chose. A fresh coordinator nonce
 * per connection makes a recorded PROOF useless on another connection (a replay); the two labels keep one
 * side's proof from being reflected as the other's; the MACs are compared with timingSafeEqual. A peer
 * sends nothing after its PROOF until it has checked OK, so it never talks to a coordinator without the
 * secret. Bytes beyond a record, a wrong magic, a wrong proof or a peer that takes longer than the timeout
 * end the connection with a HandshakeError, which says why in one line.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';

const HELLO = Buffer.from('TPH1');
const PROOF = Buffer.from('TPP1');
const OK = Buffer.from('TPO1');
const NONCE = 32;
const MAC = 32;
const RUN_ID = 16;
export const HELLO_BYTES = 4 + RUN_ID + NONCE;
export const PROOF_BYTES = 4 + 4 + NONCE + MAC;
export const OK_BYTES = 4 + MAC;
/** The shortest secret accepted: 32 bytes (`openssl rand -hex 32` gives 64 characters). */
export const MIN_SECRET_BYTES = 32;
const DEFAULT_TIMEOUT_MS = 10_000;

export class HandshakeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HandshakeError';
  }
}

export interface Accepted {
  nodeRank: number;
}

/** The coordinator's side: resolves with the peer's node rank once its proof holds, or rejects and destroys the socket. */
export async function acceptPeer(socket: Socket, o: { secret: Buffer; runId: Buffer; timeoutMs?: number }): Promise<Accepted> {
  checkRunId(o.runId);
  const mine = randomBytes(NONCE);
  return withSocket(socket, o.timeoutMs, async (read) => {
    socket.write(Buffer.concat([HELLO, o.runId, mine]));
    const proof = await read(PROOF_BYTES, 'its proof');
    if (!proof.subarray(0, 4).equals(PROOF)) throw new HandshakeError('not a trainpool peer: its first bytes are not a proof');
    const nodeRank = proof.readUInt32BE(4);
    const theirs = proof.subarray(8, 8 + NONCE);
    const expected = mac(o.secret, 'peer', o.runId, mine, theirs, nodeRank);
    if (!timingSafeEqual(proof.subarray(8 + NONCE), expected)) throw new HandshakeError(`the peer calling itself host ${nodeRank} does not hold the run's secret (its proof does not match)`);
    socket.write(Buffer.concat([OK, mac(o.secret, 'coordinator', o.runId, mine, theirs, nodeRank)]));
    return { nodeRank };
  }, true);
}

/** A peer's side: resolves with the run's id once the coordinator has proved it holds the secret too. */
export async function connectPeer(socket: Socket, o: { secret: Buffer; nodeRank: number; timeoutMs?: number }): Promise<{ runId: Buffer }> {
  const mine = randomBytes(NONCE);
  return withSocket(socket, o.timeoutMs, async (read) => {
    const hello = await read(HELLO_BYTES, 'its greeting');
    if (!hello.subarray(0, 4).equals(HELLO)) throw new HandshakeError('not a trainpool coordinator: its first bytes are not a greeting');
    const runId = Buffer.from(hello.subarray(4, 4 + RUN_ID));
    const theirs = hello.subarray(4 + RUN_ID);
    const rank = Buffer.alloc(4);
    rank.writeUInt32BE(o.nodeRank);
    socket.write(Buffer.concat([PROOF, rank, mine, mac(o.secret, 'peer', runId, theirs, mine, o.nodeRank)]));
    const ok = await read(OK_BYTES, 'its proof');
    if (!ok.subarray(0, 4).equals(OK) || !timingSafeEqual(ok.subarray(4), mac(o.secret, 'coordinator', runId, theirs, mine, o.nodeRank))) {
      throw new HandshakeError("the coordinator does not hold the run's secret (its proof does not match)");
    }
    return { runId };
  }, false);
}

/**
 * The run's shared secret from `file` (TRAINPOOL_SECRET_FILE): its bytes, less a trailing newline. Throws
 * one line naming the file where it cannot be read or is shorter than MIN_SECRET_BYTES.
 */
export function readSecret(file: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new HandshakeError(`TRAINPOOL_SECRET_FILE must name a readable file. Received: ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const secret = bytes.subarray(0, bytes.length - (bytes.at(-1) === 0x0a ? (bytes.at(-2) === 0x0d ? 2 : 1) : 0));
  if (secret.length < MIN_SECRET_BYTES) {
    throw new HandshakeError(`TRAINPOOL_SECRET_FILE must hold at least ${MIN_SECRET_BYTES} bytes (openssl rand -hex 32 > file). Received: ${secret.length} bytes in ${file}`);
  }
  return Buffer.from(secret);
}

function checkRunId(runId: Buffer): void {
  if (runId.length !== RUN_ID) throw new Error(`a run id of ${RUN_ID} bytes, not ${runId.length}: this is a bug`);
}

function mac(secret: Buffer, who: 'peer' | 'coordinator', runId: Buffer, coordinatorNonce: Buffer, peerNonce: Buffer, nodeRank: number): Buffer {
  const rank = Buffer.alloc(4);
  rank.writeUInt32BE(nodeRank);
  return createHmac('sha256', secret).update(`trainpool ${who} v1`).update(runId).update(coordinatorNonce).update(peerNonce).update(rank).digest();
}

type Reader = (bytes: number, what: string) => Promise<Buffer>;

/**
 * Runs `steps` with a reader of exact byte counts on `socket`; on success the socket is handed on paused,
 * with whatever followed the last record pushed back (the first frames: the caller attaches its reader and
 * resumes it); on failure it is destroyed.
 * `strict`: bytes beyond the record being read are an error (the coordinator's side: a peer sends nothing
 * after its proof until OK).
 */
async function withSocket<T>(socket: Socket, timeoutMs = DEFAULT_TIMEOUT_MS, steps: (read: Reader) => Promise<T>, strict: boolean): Promise<T> {
  let held = Buffer.alloc(0);
  let want: { bytes: number; what: string; resolve(b: Buffer): void; reject(e: Error): void } | null = null;
  let failure: Error | null = null;
  const fail = (e: Error) => {
    failure ??= e;
    want?.reject(failure);
    want = null;
  };
  const serve = () => {
    if (!want) return;
    if (strict && held.length > want.bytes) return fail(new HandshakeError(`the peer sent ${held.length} bytes where ${want.what} has ${want.bytes}, before authenticating`));
    if (held.length < want.bytes) return;
    const out = held.subarray(0, want.bytes);
    held = held.subarray(want.bytes);
    const w = want;
    want = null;
    w.resolve(Buffer.from(out));
  };
  // A read is served as soon as its record is complete, so no more than a record and one chunk are ever
  // held: a flood is refused (strict) or fails its record's check, never buffered.
  const onData = (chunk: Buffer) => {
    held = Buffer.concat([held, chunk]);
    serve();
  };
  const onEnd = () => fail(new HandshakeError(want ? `the connection closed before ${want.what}` : 'the connection closed during the handshake'));
  const onError = (e: Error) => fail(new HandshakeError(`the connection failed during the handshake: ${e.message}`));
  const timer = setTimeout(() => fail(new HandshakeError(`the handshake took longer than ${timeoutMs} ms`)), timeoutMs);
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onEnd);
  socket.on('error', onError);
  const read: Reader = (bytes, what) =>
    new Promise<Buffer>((resolve, reject) => {
      if (failure) return reject(failure);
      want = { bytes, what, resolve, reject };
      serve();
    });
  try {
    const result = await steps(read);
    if (failure) throw failure;
    return result;
  } catch (e) {
    socket.destroy();
    throw e;
  } finally {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('close', onEnd);
    socket.off('error', onError);
    if (!socket.destroyed) {
      socket.pause();
      if (held.length > 0) socket.unshift(held);
    }
  }
}
