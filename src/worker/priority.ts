import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import type { Logger } from '../logger.js';

/** The most a worker's nice value is raised by (Unix nice values end at 19). */
export const MAX_WORKER_NICE = 19;

/**
 * Lowers the scheduling priority of the calling thread by `nice` (0 leaves it). Stage
 * work runs below the front end and the proxies, so that on a machine whose cores are all
 * busy with jobs, the thread that takes requests and hands out jobs is not left waiting
 * for a time slice: a worker never waits for work because the dispatcher waits for a core.
 * Per thread on Linux (a worker thread reads its own thread id from /proc); where that
 * cannot be done, it logs at debug level and changes nothing.
 */
export function lowerPriority(nice: number, logger: Logger): void {
  if (nice <= 0) return;
  try {
    const tid = isMainThread ? process.pid : Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return;
    setPriority(tid, Math.min(MAX_WORKER_NICE, getPriority(tid) + nice));
  } catch (err) {
    logger.debug({ err }, 'worker priority left unchanged');
  }
}

