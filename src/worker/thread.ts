import { Worker } from 'node:worker_threads';
import { WORKER_ENTRY, type WorkerCommand, type WorkerLaunch, type WorkerReport } from './launch.js';
import type { WorkerHandle } from './handle.js';

/** Starts a stage worker as a thread of this process. */
export function startThreadWorker(launch: WorkerLaunch): WorkerHandle {
  const thread = new Worker(WORKER_ENTRY, { workerData: launch });
  return {
    id: `thread-${thread.threadId}`,
    onReport(fn: (r: WorkerReport) => void): void {
      thread.on('message', (m: WorkerReport) => fn(m));
    },
    onExit(fn: (code: number | null, signal: string | null) => void): void {
      thread.once('error', () => {});
      thread.once('exit', (code) => fn(code, null));
    },
    command(c: WorkerCommand): void {
      thread.postMessage(c);
    },
    // A thread with open ZeroMQ sockets must not be terminated: it closes them itself on `destroy`.
    kill(): void {
      thread.postMessage({ type: 'destroy' } satisfies WorkerCommand);
    },
  };
}
