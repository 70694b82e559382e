import type { MessagePort } from 'node:worker_threads';
import type { WorkerCommand, WorkerLaunch, WorkerReport } from './launch.js';
import type { WorkerHandle } from './handle.js';
import { runWorker } from './run.js';

let inlineCount = 0;

/**
 * Runs a stage worker in this thread, the one that holds its proxy, on a port whose two
 * ends are both here: its jobs cost no other thread's wake-up and no copy into another
 * thread's memory, which is what a light stage (a few microseconds of work) pays most for.
 * Its handler runs on the front end's event loop: a handler that blocks stops the whole
 * server, and `kill` can only close it, so only light, non-blocking stages belong here.
 */
export function startInlineWorker(launch: WorkerLaunch, port: MessagePort): WorkerHandle {
  const reports: ((r: WorkerReport) => void)[] = [];
  const exits: ((code: number | null, signal: string | null) => void)[] = [];
  let onCommand: ((c: WorkerCommand) => void) | undefined;
  let killed = false;
  let exited = false;
  const exit = (code: number): void => {
    if (exited) return;
    exited = true;
    // The pool hears of it as it would of a thread's exit: in a later turn.
    setImmediate(() => {
      for (const fn of exits) fn(code, null);
    });
  };
  void runWorker(launch, port, {
    report: (r) => setImmediate(() => reports.forEach((fn) => fn(r))),
    onCommand: (fn) => {
      onCommand = fn;
      // Killed while its stage was still loading: it stops as soon as it can.
      if (killed) fn({ type: 'destroy' });
    },
    exit,
    pulse: false,
  });
  return {
    id: `inline-${++inlineCount}`,
    onReport(fn: (r: WorkerReport) => void): void {
      reports.push(fn);
    },
    onExit(fn: (code: number | null, signal: string | null) => void): void {
      exits.push(fn);
    },
    command(c: WorkerCommand): void {
      onCommand?.(c);
    },
    kill(): void {
      killed = true;
      onCommand?.({ type: 'destroy' });
    },
  };
}
