/**
 * The program a worker thread or worker process runs: imports the stage, joins its
 * proxy, reports `ready` (or `failed` with a message) to its pool, and closes on command.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { importStage } from '../stages/index.js';
import type { MessagePort } from 'node:worker_threads';
import type { ProcessLaunch, ThreadLaunch, WorkerCommand, WorkerLaunch, WorkerReport } from './launch.js';
import { StageWorker } from './worker.js';

async function run(
  launch: WorkerLaunch,
  port: MessagePort | undefined,
  report: (r: WorkerReport) => void,
  onCommand: (fn: (c: WorkerCommand) => void) => void,
): Promise<void> {
  const logger = pino({ level: launch.logLevel, base: { pid: process.pid, role: 'worker' } });
  let worker: StageWorker;
  try {
    const stage = await importStage(launch.module);
    worker = new StageWorker({
      stage,
      connect: launch.connect,
      port,
      concurrency: launch.concurrency,
      prefetch: launch.prefetch,
      timeoutMs: launch.timeoutMs,
      label: launch.label,
      // A worker process heartbeats from a thread of its own; a worker thread cannot own one safely.
      pulse: isMainThread,
      maxMessageBytes: launch.maxMessageBytes,
      security: launch.security,
      logger,
    });
    onCommand((command) => {
      const stop = command.type === 'close' ? worker.close() : worker.destroy();
      void stop.then(() => process.exit(0));
    });
    await worker.start();
  } catch (err) {
    report({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
  report({ type: 'ready' });
}

if (!isMainThread && parentPort !== null) {
  const parent = parentPort;
  const { launch, port } = workerData as ThreadLaunch;
  void run(
    launch,
    port,
    (r) => parent.postMessage(r),
    (fn) => parent.on('message', fn),
  );
} else if (process.send !== undefined) {
  // Without its pool, a worker process has no one to answer to.
  process.on('disconnect', () => process.exit(0));
  process.once('message', (first: ProcessLaunch) => {
    void run(
      first.launch,
      undefined,
      (r) => process.send?.(r),
      (fn) => {
        process.on('message', (m) => fn(m as WorkerCommand));
        process.on('SIGTERM', () => fn({ type: 'close' }));
      },
    );
  });
}
