/**
 * Both ends of a connection between hosts say something every `intervalMs`, and each counts the other as gone
 * after `silentMs` without a byte from it: a link that goes down (a cable, a switch, a host that froze) gives
 * no socket error for minutes, and a step would otherwise wait for it until its timeout.
 */
import type { Socket } from 'node:net';

export const HEARTBEAT_MS = 1_000;
export const SILENT_MS = 10_000;

/** Starts beating on `socket` with `beat()`; calls `silent()` once if the peer says nothing for `silentMs`. Returns stop. */
export function heartbeat(socket: Socket, beat: () => void, silent: (ms: number) => void, o: { intervalMs?: number; silentMs?: number } = {}): () => void {
  const intervalMs = o.intervalMs ?? HEARTBEAT_MS;
  const silentMs = o.silentMs ?? SILENT_MS;
  let heard = Date.now();
  const onData = () => {
    heard = Date.now();
  };
  socket.on('data', onData);
  const timer = setInterval(() => {
    if (Date.now() - heard > silentMs) {
      stop();
      silent(Date.now() - heard);
      return;
    }
    beat();
  }, intervalMs);
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    socket.off('data', onData);
  };
  socket.once('close', stop);
  return stop;
}
