import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WORKER_ENTRY, type ProcessLaunch, type WorkerCommand, type WorkerLaunch, type WorkerReport } from './launch.js';
import type { WorkerHandle } from './handle.js';

/** Starts a stage worker as a child process. */
export function startProcessWorker(launch: WorkerLaunch): WorkerHandle {
  // The launch goes over IPC, not the command line: it may hold a secret key. The command
  // line only names the stage and the worker, for ps and top.
  const child = fork(fileURLToPath(WORKER_ENTRY), [`stage=${launch.module}`, `worker=${launch.label}`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.send({ type: 'launch', launch } satisfies ProcessLaunch);
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
