import { ButterflyError } from '../../errors.js';
import { type HttpRequest, defineStage } from '../stage.js';
import { answer } from './answer.js';

/** Primes below 100: numbers they divide are answered by this stage without stage 2. */
const SMALL_PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97];

/** The largest number accepted: 2^53 - 1, the largest integer a double holds exactly. */
export const MAX_POSSIBLE_PRIME = Number.MAX_SAFE_INTEGER;

/**
 * Stage 1 of is_prime: answers `GET /is_prime?possible_prime=N`. Refuses a missing,
 * negative, non-integer or too large N with 400, answers the cheap cases itself (N < 2,
 * N with a prime factor below 100) and passes the rest to stage 2 as a number.
 */
export default defineStage<HttpRequest>({
  name: 'is_prime.parse',
  concurrency: 64,
  handle(req, ctx) {
    if (req.path !== '/is_prime') throw new ButterflyError('BF_ERR_NOT_FOUND', `no route for ${req.path}; try /is_prime?possible_prime=N`);
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new ButterflyError('BF_ERR_METHOD_NOT_ALLOWED', 'use GET /is_prime?possible_prime=N');
    const n = parsePossiblePrime(req.query.possible_prime);
    if (n < 2) return answer(ctx, n, false);
    for (const p of SMALL_PRIMES) {
      if (n % p === 0) return answer(ctx, n, n === p);
    }
    if (n < 101 * 101) return answer(ctx, n, true);
    return ctx.next(n);
  },
});

/**
 * Reads `possible_prime`: decimal digits only, at most `MAX_POSSIBLE_PRIME`.
 * @throws ButterflyError 400 naming what is wrong.
 */
export function parsePossiblePrime(text: string | undefined): number {
  if (text === undefined || text === '') throw new ButterflyError('BF_ERR_BAD_REQUEST', 'possible_prime is required: /is_prime?possible_prime=N');
  if (!/^[0-9]+$/.test(text)) {
    throw new ButterflyError('BF_ERR_BAD_REQUEST', `possible_prime must be a non-negative integer, got ${JSON.stringify(text.slice(0, 32))}`);
  }
  const n = text.length > 16 ? Infinity : Number(text);
  if (n > MAX_POSSIBLE_PRIME) throw new ButterflyError('BF_ERR_BAD_REQUEST', `possible_prime must be at most ${MAX_POSSIBLE_PRIME}`);
  return n;
}
