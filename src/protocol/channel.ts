/**
 * A message channel over a byte stream (the worker's fd 3, a Unix socket pair): frames out, frames in.
 * Both the coordinator's WorkerHandle and the worker's main loop use it.
 */
import type { Duplex } from 'node:stream';
import { encodeFrame, FrameDecoder, type BulkSink, type BulkSource } from './frame.js';

export interface ChannelEvents {
  message(m: Record<string, unknown>): void;
  /** The stream ended or broke; `error` is set when it broke or ended inside a frame. */
  close(error: Error | null): void;
}

export interface ChannelBulk {
  /** Where this side's large outgoing attachments go. */
  out?: BulkSink;
  /** Where the peer's large attachments are read from. */
  in?: BulkSource;
}

export class Channel {
  private readonly decoder: FrameDecoder;
  private closed = false;

  constructor(
    private readonly stream: Duplex,
    private readonly events: ChannelEvents,
    private readonly bulk: ChannelBulk = {},
  ) {
    this.decoder = new FrameDecoder(bulk.in);
    stream.on('data', (chunk: Buffer) => {
      let messages: Record<string, unknown>[];
      try {
        messages = this.decoder.push(chunk);
      } catch (e) {
        this.finish(e as Error);
        stream.destroy();
        return;
      }
      for (const m of messages) this.events.message(m);
    });
    stream.on('error', (e) => this.finish(e));
    // 'end' is the peer closing its side; 'close' covers destruction without an end.
    const ended = () => this.finish(this.decoder.idle ? null : new Error('the stream ended inside a frame'));
    stream.on('end', ended);
    stream.on('close', ended);
  }

  /**
   * Writes one message. Resolves once the bytes are handed to the OS; typed arrays in `message` are
   * written from their own memory and must stay unchanged until then.
   */
  send(message: object): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the channel is closed'));
    let parts: Uint8Array[];
    try {
      parts = encodeFrame(message, this.bulk.out);
    } catch (e) {
      // A region that cannot be written (a full /dev/shm): the send fails now, not at the step's timeout.
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.stream.cork();
      for (let i = 0; i < parts.length - 1; i++) this.stream.write(parts[i]);
      this.stream.write(parts[parts.length - 1], (e) => (e ? reject(e) : resolve()));
      process.nextTick(() => this.stream.uncork());
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.stream.end();
  }

  destroy(): void {
    this.stream.destroy();
  }

  private finish(error: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.events.close(error);
  }
}
