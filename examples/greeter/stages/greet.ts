import { defineStage } from 'butterfly';
import type { Greeting } from './parse.ts';

/** Stage 2: answers the greeting as JSON. */
export default defineStage<Greeting, never>({
  name: 'greeter.greet',
  handle(job, ctx) {
    return ctx.respond({ greeting: `hello, ${job.name}` });
  },
});
