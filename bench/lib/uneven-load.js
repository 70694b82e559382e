// Load generator for the uneven workload, run as its own process by bench/run.js.
//
// `--connections` clients loop on keep-alive sockets. By default (closed loop) each sends
// its next request as soon as the previous one is answered. With `--rate R` (open loop)
// request k is due at k/R seconds and is sent by the first free client; its latency
// counts from when it was due, so waiting for a free connection is not hidden.
// A seeded generator decides, request by
// request, whether it is slow (`/uneven?slow=1`, with probability `--slow-fraction`)
// or instant (`/uneven`), so every server sees the same sequence. Latencies are kept
// per type. A warm-up runs first and is not recorded. Nothing is sent after the
// deadline; requests still in flight get `--timeout-ms` to finish. Prints `measuring`
// when the warm-up ends and, at the end, one JSON line on stdout.
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '64' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '0' },
    'slow-fraction': { type: 'string', default: '0.01' },
    seed: { type: 'string', default: '1' },
    'timeout-ms': { type: 'string', default: '10000' },
    rate: { type: 'string', default: '0' },
  },
  strict: true,
});

const target = new URL(values.url ?? '');
if (target.hostname !== '127.0.0.1') {
  console.error('uneven-load: only 127.0.0.1 is allowed');
  process.exit(2);
}
const connections = Number(values.connections);
const durationMs = Number(values.duration) * 1000;
const warmupMs = Number(values.warmup) * 1000;
const slowFraction = Number(values['slow-fraction']);
const timeoutMs = Number(values['timeout-ms']);
const rate = Number(values.rate);
if (!Number.isFinite(rate) || rate < 0) {
  console.error(`uneven-load: --rate must be a non-negative number, got ${values.rate}`);
  process.exit(2);
}

// Whatever happens, this process is gone shortly after its deadline.
setTimeout(() => {
  console.error('uneven-load: hard deadline reached');
  process.exit(3);
}, warmupMs + durationMs + timeoutMs + 5000).unref();

/** mulberry32: a small seeded generator, so runs draw the same request sequence. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Latency samples in milliseconds, in a growing typed array with a fixed ceiling. */
class Samples {
  static LIMIT = 1 << 24;
  constructor() {
    this.values = new Float64Array(1 << 16);
    this.length = 0;
    this.dropped = 0;
  }
  push(ms) {
    if (this.length === this.values.length) {
      if (this.length >= Samples.LIMIT) {
        this.dropped++;
        return;
      }
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = ms;
  }
  summary() {
    const sorted = this.values.slice(0, this.length).sort();
    const at = (q) => (sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1))]);
    let sum = 0;
    for (const v of sorted) sum += v;
    return {
      count: sorted.length,
      mean: sorted.length === 0 ? null : sum / sorted.length,
      p50: at(50),
      p90: at(90),
      p99: at(99),
      p999: at(99.9),
      max: at(100),
    };
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections, scheduling: 'fifo' });
const random = seeded(Number(values.seed));
const latency = { instant: new Samples(), slow: new Samples() };
const counts = { requests: 0, non2xx: 0, errors: 0, timeouts: 0 };

function send(path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, host: target.hostname, port: target.port, path, method: 'GET' }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
      res.once('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.once('error', reject);
    req.end();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const startedAt = performance.now();
const measureFrom = startedAt + warmupMs;
const stopAt = measureFrom + durationMs;
// Tells the harness when the measured part starts, so it can open its CPU window.
setTimeout(() => process.stdout.write('measuring\n'), warmupMs);

let nextTicket = 0;

/** When the next request is due: now (closed loop) or on the fixed schedule (open loop). */
async function nextDue() {
  if (rate === 0) return performance.now();
  const due = startedAt + (nextTicket++ * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 0 && due < stopAt) await sleep(wait);
  return due;
}

async function client() {
  for (;;) {
    const dueAt = await nextDue();
    if (dueAt >= stopAt) return;
    const slow = random() < slowFraction;
    const recorded = dueAt >= measureFrom;
    try {
      const status = await send(slow ? '/uneven?slow=1' : '/uneven');
      const doneAt = performance.now();
      if (!recorded) continue;
      if (doneAt <= stopAt) counts.requests++;
      if (status >= 200 && status < 300) (slow ? latency.slow : latency.instant).push(doneAt - dueAt);
      else counts.non2xx++;
    } catch (error) {
      if (recorded) {
        counts.errors++;
        if (error?.code === 'TIMEOUT') counts.timeouts++;
      }
      // Refused or reset: back off a little rather than spin.
      await sleep(10);
    }
  }
}

await Promise.all(Array.from({ length: connections }, client));
agent.destroy();

const durationS = durationMs / 1000;
process.stdout.write(
  `${JSON.stringify({
    tool: 'node-http',
    mode: rate === 0 ? 'closed' : 'open',
    offeredRps: rate === 0 ? null : rate,
    requests: counts.requests,
    durationS,
    rps: counts.requests / durationS,
    errorsTotal: counts.errors,
    timeouts: counts.timeouts,
    non2xx: counts.non2xx,
    instant: latency.instant.summary(),
    slow: latency.slow.summary(),
    dropped: latency.instant.dropped + latency.slow.dropped,
  })}\n`,
);
