/**
 * The program a worker thread or worker process runs (see `runWorker`): a thread hears
 * from its pool through its parent port, a process through IPC.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { ProcessLaunch, ThreadLaunch, WorkerCommand } from './launch.js';
import { runWorker } from './run.js';

const exit = (code: number): never => process.exit(code);

if (!isMainThread && parentPort !== null) {
  const parent = parentPort;
  const { launch, port } = workerData as ThreadLaunch;
  // A worker thread cannot own a heartbeat thread safely.
  void runWorker(launch, port, { report: (r) => parent.postMessage(r), onCommand: (fn) => parent.on('message', fn), exit, pulse: false });
} else if (process.send !== undefined) {
  // Without its pool, a worker process has no one to answer to.
  process.on('disconnect', () => process.exit(0));
  process.once('message', (first: ProcessLaunch) => {
    void runWorker(first.launch, undefined, {
      report: (r) => process.send?.(r),
      onCommand: (fn) => {
        process.on('message', (m) => fn(m as WorkerCommand));
        process.on('SIGTERM', () => fn({ type: 'close' }));
      },
      exit,
      pulse: true,
    });
  });
}
