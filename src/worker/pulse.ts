import { Worker } from 'node:worker_threads';
import type { LinkSecurity } from '../wire/index.js';

/** What the pulse thread needs. */
export interface PulseLaunch {
  readonly connect: string;
  /** The worker's CURVE keys, for the pulse's own socket; undefined for plaintext. */
  readonly security: LinkSecurity | undefined;
  readonly label: string;
  /** The worker's identity token: a heartbeat without it keeps no worker alive. */
  readonly token: Uint8Array;
  readonly stage: number;
  readonly heartbeatMs: number;
  /**
   * The watchdog's one slot (a Float64Array over it): the time, in ms since the epoch,
   * past which a job still held means the worker's event loop is blocked; 0 while none is.
   * The worker's own sweep keeps it current; past it, the pulse ends the process, and its
   * pool starts another.
   */
  readonly watch: SharedArrayBuffer;
}

const PULSE_ENTRY = new URL('./pulse-entry.js', import.meta.url);

/** A running pulse thread; `stop()` closes its socket before the thread ends. */
export interface Pulse {
  stop(): Promise<void>;
}

/** Starts heartbeating for a worker from a thread of its own. */
export function startPulse(launch: PulseLaunch): Pulse {
  const thread = new Worker(PULSE_ENTRY, { workerData: launch });
  thread.unref();
  let stopping: Promise<void> | undefined;
  return {
    stop(): Promise<void> {
      stopping ??= new Promise<void>((resolve) => {
        thread.once('exit', () => resolve());
        thread.postMessage('stop');
      });
      return stopping;
    },
  };
}
