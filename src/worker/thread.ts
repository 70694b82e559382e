import { type MessagePort, Worker } from 'node:worker_threads';
import { WORKER_ENTRY, type ThreadLaunch, type WorkerCommand, type WorkerLaunch, type WorkerReport } from './launch.js';
import type { WorkerHandle } from './handle.js';

/**
 * Starts a stage worker as a thread of this process. With `port` (from `Proxy.attachPort`)
 * the thread opens no socket at all, and `kill` terminates it at once, even while a
 * handler blocks; without, it talks ZeroMQ and is asked to close its sockets itself.
 */
export function startThreadWorker(launch: WorkerLaunch, port?: MessagePort): WorkerHandle {
  const workerData: ThreadLaunch = { launch, port };
  const thread = new Worker(WORKER_ENTRY, { workerData, transferList: port === undefined ? [] : [port] });
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
      if (port === undefined) thread.postMessage({ type: 'destroy' } satisfies WorkerCommand);
      else void thread.terminate();
    },
  };
}
