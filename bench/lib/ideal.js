// The "ideal" for the heavy workload: one worker thread per core, each running the
// heavy primality check back to back in-process, with no HTTP and no hops.
import os from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Runs the ideal and returns the total checks per second over all threads.
 * @param {{ candidate: number, durationS: number, warmupS: number, threads?: number }} options
 * @returns {Promise<{ threads: number, checks: number, checksPerSecond: number, perThread: number[], microsPerCheck: number }>}
 */
export async function runIdeal({ candidate, durationS, warmupS, threads = os.availableParallelism() }) {
  const runs = await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise((resolve, reject) => {
          const worker = new Worker(new URL('./ideal-worker.js', import.meta.url), {
            workerData: { candidate, warmupMs: warmupS * 1000, durationMs: durationS * 1000 },
          });
          worker.once('message', resolve);
          worker.once('error', reject);
          worker.once('exit', (code) => reject(new Error(`ideal worker exited with ${code}`)));
        }),
    ),
  );
  const perThread = runs.map((run) => (run.checks * 1000) / run.elapsedMs);
  const checks = runs.reduce((sum, run) => sum + run.checks, 0);
  const checksPerSecond = perThread.reduce((sum, rate) => sum + rate, 0);
  return { threads, checks, checksPerSecond, perThread, microsPerCheck: (threads * 1e6) / checksPerSecond };
}
