// Benchmark stage for the uneven workload: `/uneven?slow=1` spends 200 ms of busy CPU
// in the worker before answering, every other request is answered at once. One job per
// worker, so a slow request holds its worker the whole time, as it holds a cluster
// process in the baseline.
import { defineStage } from 'butterfly';

const SLOW_MS = 200;

function busyFor(ms) {
  const end = performance.now() + ms;
  let acc = 0;
  while (performance.now() < end) acc += Math.sqrt(acc + 1);
  return acc;
}

export default defineStage({
  name: 'uneven',
  concurrency: 1,
  handle(req, ctx) {
    if (req.query.slow === '1') busyFor(SLOW_MS);
    return ctx.respond('ok', { status: 200, headers: { 'content-type': 'text/plain' } });
  },
});
