import { defineStage } from 'butterfly';
import { sumDigits } from './sum.js';

/**
 * How many times over the work is done: the demo sets it for the worker threads it starts
 * (each thread gets a copy of its parent's environment), so that a job is the chunk's bytes
 * as read from the file, never copied into a message of the demo's own.
 */
const COST = Number(process.env.BUTTERFLY_DIGITS_COST ?? '1');

/** One chunk of the digit file in, the sum of its digits out. */
export default defineStage({
  name: 'digits.sum',
  // A chunk's sum is the same however often it is computed: a job whose worker died may run again.
  idempotent: true,
  // A worker keeps four chunks waiting beyond the one it sums, so that it never waits for the next.
  prefetch: 4,
  handle(job, ctx) {
    return ctx.respond({ sum: sumDigits(job, COST) });
  },
});
