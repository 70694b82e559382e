import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WORKER_ENTRY, type WorkerCommand, type WorkerLaunch, type WorkerReport } from './launch.js';
import type { WorkerHandle } from './handle.js';

/** Starts a stage worker as a child process. */
export function startProcessWorker(launch: WorkerLaunch): WorkerHandle {
  const child = fork(fileURLToPath(WORKER_ENTRY), [JSON.stringify(launch)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return {
    id: `pid-${child.pid ?? 'unknown'}`,
    pid: child.pid,
    onReport(fn: (r: WorkerReport) => void): void {
      child.on('message', (m) => fn(m as WorkerReport));
    },
    onExit(fn: (code: number | null, signal: string | null) => void): void {
      child.once('exit', (code, signal) => fn(code, signal));
    },
    command(c: WorkerCommand): void {
      if (child.connected) child.send(c);
    },
    kill(): void {
      child.kill('SIGKILL');
    },
  };
}
