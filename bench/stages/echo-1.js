// Benchmark stage 1 of the echo pipeline: passes the request body on to stage 2
// unchanged, so a large body crosses the pipeline twice (in, then out).
import { defineStage } from 'butterfly';

export default defineStage({
  name: 'echo-in',
  concurrency: 1,
  handle(req, ctx) {
    return ctx.next(req.body);
  },
});
