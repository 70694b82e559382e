// Benchmark stage 2 of the echo pipeline: answers with the bytes stage 1 passed on.
import { defineStage } from 'butterfly';

export default defineStage({
  name: 'echo-out',
  concurrency: 1,
  handle(body, ctx) {
    return ctx.respond(body, { status: 200, headers: { 'content-type': 'application/octet-stream' } });
  },
});
