// One thread of the "ideal" heavy run: checks the heavy candidate back to back until
// the deadline and reports how many checks it completed.
import { parentPort, workerData } from 'node:worker_threads';
import { isPrime } from '../servers/common.js';

const { candidate, warmupMs, durationMs } = workerData;

let end = performance.now() + warmupMs;
while (performance.now() < end) isPrime(candidate);

let checks = 0;
let primes = 0;
const start = performance.now();
end = start + durationMs;
while (performance.now() < end) {
  if (isPrime(candidate)) primes++;
  checks++;
}
parentPort?.postMessage({ checks, primes, elapsedMs: performance.now() - start });
