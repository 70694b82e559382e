// The piscina pool's task: one request's work, run in a worker thread.
import { move } from 'piscina';
import { busyFor, isPrime, SLOW_MS } from './common.js';

/**
 * @param {{ kind: 'is_prime', n: number } | { kind: 'uneven', slow: boolean } | { kind: 'echo', body: Uint8Array }} task
 */
export default function run(task) {
  switch (task.kind) {
    case 'is_prime':
      return isPrime(task.n);
    case 'uneven':
      return task.slow ? busyFor(SLOW_MS) : 0;
    case 'echo':
      return move(task.body);
    default:
      throw new Error('unknown task');
  }
}
