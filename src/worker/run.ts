import type { MessagePort } from 'node:worker_threads';
import { pino } from 'pino';
import { importStage } from '../stages/index.js';
import type { WorkerCommand, WorkerLaunch, WorkerReport } from './launch.js';
import { StageWorker } from './worker.js';

/** Where a running worker reports to and hears from its pool, and how it ends. */
export interface WorkerHost {
  report(r: WorkerReport): void;
  onCommand(fn: (c: WorkerCommand) => void): void;
  /** Called once the worker has closed (0) or failed to start (1). */
  exit(code: number): void;
  /** Heartbeats from a thread of its own: a worker process's main thread only. */
  readonly pulse: boolean;
}

/**
 * What every worker runs, whatever holds it (a thread, a process, or the proxy's own thread):
 * imports the stage, joins its proxy, reports `ready` (or `failed` with a message) to its
 * pool, and closes on command.
 */
export async function runWorker(launch: WorkerLaunch, port: MessagePort | undefined, host: WorkerHost): Promise<void> {
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
      pulse: host.pulse,
      maxMessageBytes: launch.maxMessageBytes,
      security: launch.security,
      logger,
    });
    host.onCommand((command) => {
      const stop = command.type === 'close' ? worker.close() : worker.destroy();
      void stop.then(() => host.exit(0));
    });
    await worker.start();
  } catch (err) {
    host.report({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
    host.exit(1);
    return;
  }
  host.report({ type: 'ready' });
}
