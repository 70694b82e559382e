import type { WorkerCommand, WorkerReport } from './launch.js';

/** A started worker, whatever runs it (thread or process). */
export interface WorkerHandle {
  /** For logs: `thread-N` or `pid-N`. */
  readonly id: string;
  /** The process id, for a worker process. */
  readonly pid?: number | undefined;
  onReport(fn: (r: WorkerReport) => void): void;
  /** Called once when the worker has stopped. */
  onExit(fn: (code: number | null, signal: string | null) => void): void;
  command(c: WorkerCommand): void;
  /** Stops it at once. */
  kill(): void;
}
