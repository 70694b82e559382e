/**
 * `butterfly/stages`: the built-in stages, the is_prime demo that `butterflyd` runs by
 * default: stage 1 parses `GET /is_prime?possible_prime=N` and answers the cheap cases,
 * stage 2 checks by trial division.
 */
export { BUILTIN_STAGES, isPrimePipeline } from './pipeline.js';
export { parsePossiblePrime, MAX_POSSIBLE_PRIME } from './is-prime/parse.js';
export { isPrime } from './is-prime/check.js';
