import { defineStage } from 'butterfly';
import { COST_BYTES, sumDigits } from './sum.js';

/** One chunk of the digit file in (a job's bytes: the cost, then the digits), the sum of its digits out. */
export default defineStage({
  name: 'digits.sum',
  // A chunk's sum is the same however often it is computed: a job whose worker died may run again.
  idempotent: true,
  handle(job, ctx) {
    return ctx.respond({ sum: sumDigits(job.subarray(COST_BYTES), job.readUInt32LE(0)) });
  },
});
