#!/usr/bin/env node
/**
 * Scatter-gather over a file of digits: the classic load-balancer demo. It writes a file of
 * random decimal digits (seeded), sums them with a plain loop in this thread, then cuts the
 * file into fixed-size chunks that a pipeline of 1, 2, 3... workers sums, and adds up their
 * partial sums here. It prints one line per run; --json prints them as JSON.
 *
 *   node examples/digits/digits.js [--size BYTES] [--chunk BYTES] [--workers 1,2,3,4]
 *                                  [--cost K] [--seed N] [--repeat N] [--file PATH] [--json]
 *
 * --cost K repeats the per-byte work K times (the sum stays the same), to make the work as
 * heavy as it is in the original, whose plain loop took 1.6 s for 30 MB.
 *
 * Every figure is the fastest of --repeat runs (default 5), the plain loop's too, so that
 * both sides are timed with their code compiled; the first, cold run is printed beside it.
 */
import { createWriteStream, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chunks, startButterfly } from 'butterfly';
import { sumDigits } from './sum.js';

const STAGE = new URL('./stage.js', import.meta.url).href;

function fail(message) {
  console.error(`digits: ${message}`);
  process.exit(2);
}

function positive(name, text) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) fail(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

/** A small seeded generator (mulberry32): the same seed writes the same file. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes `size` random digits to `path`, 1 MiB at a time. */
async function writeDigits(path, size, seed) {
  const next = random(seed);
  const out = createWriteStream(path);
  const block = Buffer.alloc(1024 * 1024);
  for (let left = size; left > 0; left -= block.length) {
    const n = Math.min(left, block.length);
    for (let i = 0; i < n; i++) block[i] = 48 + Math.floor(next() * 10);
    if (!out.write(Buffer.from(block.subarray(0, n)))) await new Promise((resolve) => out.once('drain', resolve));
  }
  await new Promise((resolve, reject) => out.end((err) => (err ? reject(err) : resolve())));
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '30000000' },
      chunk: { type: 'string', default: '30000' },
      workers: { type: 'string', default: '1,2,3,4' },
      cost: { type: 'string', default: '1' },
      seed: { type: 'string', default: '1' },
      repeat: { type: 'string', default: '5' },
      file: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const size = positive('size', values.size);
  const chunk = positive('chunk', values.chunk);
  const cost = positive('cost', values.cost);
  const seed = positive('seed', values.seed);
  const repeat = positive('repeat', values.repeat);
  const counts = values.workers.split(',').map((w) => positive('workers', w.trim()));
  const path = values.file ?? join(tmpdir(), `butterfly-digits-${size}-${seed}.txt`);
  if (!existsSync(path) || statSync(path).size !== size) await writeDigits(path, size, seed);
  const pieces = Math.ceil(size / chunk);

  // The plain loop: the same chunks, summed one after another in this thread.
  let plainSum = 0;
  const plainTimes = [];
  for (let round = 0; round < repeat; round++) {
    const started = performance.now();
    plainSum = 0;
    for await (const piece of chunks(path, chunk)) plainSum += sumDigits(piece, cost);
    plainTimes.push((performance.now() - started) / 1000);
  }
  const plain = Math.min(...plainTimes);
  if (!values.json) {
    console.log(`${size} digits in ${pieces} chunks of ${chunk}, cost ${cost}; each time the fastest of ${repeat} run${repeat === 1 ? '' : 's'} (first run in brackets)`);
    console.log(`plain loop: ${plain.toFixed(3)} s (${plainTimes[0].toFixed(3)}), sum ${plainSum}`);
  }

  const runs = [];
  // The stage reads the cost from its environment, which each worker thread copies from this one's.
  process.env.BUTTERFLY_DIGITS_COST = String(cost);
  for (const workers of counts) {
    // One pool of worker threads per worker count, started before the clock; each run sums the whole file.
    const bf = await startButterfly({ http: false, workers, pipeline: { stages: [{ module: STAGE }] }, workerLogLevel: 'warn' });
    try {
      const times = [];
      let sum = 0;
      for (let round = 0; round < repeat; round++) {
        const started = performance.now();
        let total = 0;
        for await (const settled of bf.jobs.distribute(chunks(path, chunk), { concurrency: workers * 4 })) {
          if (!settled.ok) throw settled.error;
          total += settled.value.sum;
        }
        times.push((performance.now() - started) / 1000);
        // A run whose sum is wrong is the one reported.
        if (round === 0 || sum === plainSum) sum = total;
      }
      const seconds = Math.min(...times);
      runs.push({ workers, seconds, first: times[0], sum });
      if (!values.json) {
        const perChunk = workers === 1 ? `, ${(((seconds - plain) / pieces) * 1e6).toFixed(0)} µs per chunk over the plain loop` : '';
        console.log(`${workers} worker${workers === 1 ? ' ' : 's'}: ${seconds.toFixed(3)} s (${times[0].toFixed(3)}), sum ${sum}${sum === plainSum ? '' : ' (WRONG)'}${perChunk}`);
      }
    } finally {
      await bf.close();
    }
  }
  if (values.json) console.log(JSON.stringify({ plain, plainFirst: plainTimes[0], sum: plainSum, chunks: pieces, runs }));
  if (runs.some((r) => r.sum !== plainSum)) process.exit(1);
}

main().catch((err) => {
  console.error(`digits: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
