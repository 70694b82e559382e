/** The worker runtime: one stage's handler in a thread or a process, and the pool that keeps them running. */
export { StageWorker, WORKER_DEFAULTS, type StageWorkerOptions } from './worker.js';
export { WorkerPool, POOL_DEFAULTS, type WorkerPoolOptions } from './pool.js';
