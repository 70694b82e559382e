#!/usr/bin/env node
/**
 * Automatic offload: ten concurrent calls of a function that takes about 190 ms, first
 * plainly in this thread (one after another, since it blocks), then through `offload`,
 * batch after batch. The first offloaded call runs here and is timed; the function proves
 * slow, so the calls after it go to a pool of worker threads, and a batch takes about
 * ceil(calls / workers) x 190 ms.
 *
 *   node examples/offload/offload.js [--calls 10] [--batches 3] [--ms 190] [--workers N] [--json]
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { offload } from 'butterfly';
import { work } from './work.js';

function positive(name, text) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(`offload: --${name} must be a positive integer, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '10' },
    batches: { type: 'string', default: '3' },
    ms: { type: 'string', default: '190' },
    workers: { type: 'string', default: String(availableParallelism()) },
    json: { type: 'boolean', default: false },
  },
});
const calls = positive('calls', values.calls);
const batches = positive('batches', values.batches);
const ms = positive('ms', values.ms);
const workers = positive('workers', values.workers);

const seconds = (since) => (performance.now() - since) / 1000;

let started = performance.now();
for (let i = 0; i < calls; i++) work(ms);
const plain = seconds(started);
if (!values.json) console.log(`plain: ${calls} calls of ${ms} ms in ${plain.toFixed(3)} s`);

const offloaded = offload(new URL('./work.js', import.meta.url), 'work', { thresholdMs: Math.floor(ms / 2), workers });
const runs = [];
try {
  for (let batch = 1; batch <= batches; batch++) {
    started = performance.now();
    await Promise.all(Array.from({ length: calls }, () => offloaded(ms)));
    const s = seconds(started);
    runs.push({ batch, seconds: s, mode: offloaded.mode });
    if (!values.json) console.log(`batch ${batch}: ${calls} calls in ${s.toFixed(3)} s (${offloaded.mode === 'pool' ? `on ${workers} workers` : 'here'})`);
  }
} finally {
  await offloaded.close();
}
if (values.json) console.log(JSON.stringify({ plain, workers, calls, ms, batches: runs }));
