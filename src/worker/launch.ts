import type { MessagePort } from 'node:worker_threads';
import type { LinkSecurity } from '../wire/index.js';

/** What a pool hands a worker it starts (thread or process): plain data, cloneable. */
export interface WorkerLaunch {
  /** Module whose default export is the stage. */
  readonly module: string;
  /** The stage proxy's backend address. */
  readonly connect: string;
  /** Jobs run at once; undefined for the stage's own default. */
  readonly concurrency: number | undefined;
  /** Jobs kept waiting beyond those running; undefined for the stage's own default. */
  readonly prefetch: number | undefined;
  /** The stage's time budget per job, in ms; undefined for the stage's own. */
  readonly timeoutMs: number | undefined;
  /** The worker's name for its proxy and supervisor. */
  readonly label: string;
  readonly maxMessageBytes: number;
  /** pino level for the worker's own log lines. */
  readonly logLevel: string;
  /** CURVE keys for the worker's sockets; undefined for plaintext. Never on a command line: a process gets its launch over IPC. */
  readonly security: LinkSecurity | undefined;
}

/** What a worker thread is started with: its launch, and a port to its proxy when the proxy is in this process. */
export interface ThreadLaunch {
  readonly launch: WorkerLaunch;
  readonly port: MessagePort | undefined;
}

/** Messages a worker sends its pool. */
export type WorkerReport = { readonly type: 'ready' } | { readonly type: 'failed'; readonly message: string };

/** Messages a pool sends its worker. */
export type WorkerCommand = { readonly type: 'close' } | { readonly type: 'destroy' };

/** A worker process's first message from its pool: what to run. */
export interface ProcessLaunch {
  readonly type: 'launch';
  readonly launch: WorkerLaunch;
}

/** The compiled entry module both transports start. */
export const WORKER_ENTRY = new URL('./entry.js', import.meta.url);
