import { ButterflyError } from '../../errors.js';
import { defineStage } from '../stage.js';
import { answer } from './answer.js';

/** Iterations between deadline checks in the trial-division loop. */
const CHECK_EVERY = 1 << 20;

/**
 * Stage 2 of is_prime: trial division by 6k ± 1 from 101 up to √n. Stage 1 has already
 * ruled out every factor below 101. Gives up with 504 once the request's deadline passes.
 */
export default defineStage<number>({
  name: 'is_prime.check',
  concurrency: 2,
  handle(n, ctx) {
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 2) {
      throw new ButterflyError('BF_ERR_BAD_REQUEST', 'is_prime.check expects an integer >= 2');
    }
    const limit = Math.floor(Math.sqrt(n));
    let countdown = CHECK_EVERY;
    // 101 = 6*17 - 1: start on the 6k - 1 line.
    for (let d = 101; d <= limit; d += 6) {
      if (n % d === 0 || n % (d + 2) === 0) return answer(ctx, n, false);
      if (--countdown === 0) {
        countdown = CHECK_EVERY;
        if (ctx.deadline !== 0 && Date.now() > ctx.deadline) throw new ButterflyError('BF_ERR_DEADLINE', 'deadline reached');
      }
    }
    return answer(ctx, n, true);
  },
});

/** True when n is prime; plain trial division, for tests and the simulation's check. */
export function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}
