// Load generators for the fixed-path workloads: wrk (preferred) and autocannon's
// programmatic API as a fallback when wrk is not installed. Both report the same shape.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, writeFileSync } from 'node:fs';
import path from 'node:path';
import autocannon from 'autocannon';

/**
 * @typedef {object} LoadResult
 * @property {string} tool
 * @property {number} requests completed requests
 * @property {number} durationS measured time, seconds
 * @property {number} rps completed requests per second
 * @property {{ mean: number, p50: number, p90: number, p99: number, p999: number, max: number }} latencyMs
 * @property {{ connect: number, read: number, write: number, timeout: number }} errors socket-level failures
 * @property {number} errorsTotal
 * @property {number} non2xx answers with a failure status (wrk counts status >= 400)
 */

/**
 * @typedef {object} LoadSpec
 * @property {string} url
 * @property {number} connections
 * @property {number} durationS whole seconds
 * @property {'GET' | 'POST'} [method]
 * @property {number} [bodyBytes] size of the request body to send
 * @property {number} timeoutS a request without an answer after this long counts as a timeout
 */

/**
 * Path of the wrk binary: /usr/bin/wrk, else the first `wrk` on PATH.
 * @returns {string | undefined}
 */
export function findWrk() {
  const candidates = ['/usr/bin/wrk', ...(process.env.PATH ?? '').split(':').filter(Boolean).map((dir) => path.join(dir, 'wrk'))];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** @param {string} wrk */
export function wrkVersion(wrk) {
  const out = spawnSync(wrk, ['-v'], { encoding: 'utf8', timeout: 5000 });
  const first = `${out.stdout ?? ''}${out.stderr ?? ''}`.split('\n')[0] ?? '';
  return first.replace(/\s*Copyright.*$/, '').trim() || 'wrk';
}

// wrk's done() hook runs once with the merged figures of all threads; latencies are in
// microseconds. The text report wrk prints itself has no p99.9, hence the hook.
const DONE_HOOK = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"mean_us":%.3f,"max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
`;

/**
 * Writes the Lua script for one kind of request into `dir` and returns its path.
 * @param {string} dir
 * @param {LoadSpec} spec
 */
function wrkScript(dir, spec) {
  const method = spec.method ?? 'GET';
  const bytes = spec.bodyBytes ?? 0;
  const file = path.join(dir, `wrk-${method.toLowerCase()}-${bytes}.lua`);
  const request =
    method === 'GET'
      ? ''
      : `wrk.method = "${method}"\nwrk.body = string.rep("x", ${bytes})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`;
  writeFileSync(file, `-- Request and report hooks for bench/run.js.\n${request}${DONE_HOOK}`);
  return file;
}

/**
 * Runs wrk once. The process is killed if it outlives its duration plus the request
 * timeout plus 10 s.
 * @param {string} wrk
 * @param {LoadSpec} spec
 * @param {{ scriptDir: string, track: (child: import('node:child_process').ChildProcess | undefined) => void }} options
 * @returns {Promise<LoadResult>}
 */
export function runWrk(wrk, spec, { scriptDir, track }) {
  const threads = spec.connections >= 16 ? 2 : 1;
  const args = [
    '-t', String(threads),
    '-c', String(spec.connections),
    '-d', `${spec.durationS}s`,
    '--timeout', `${spec.timeoutS}s`,
    '--latency',
    '-s', wrkScript(scriptDir, spec),
    spec.url,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(wrk, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    const killer = setTimeout(() => child.kill('SIGKILL'), (spec.durationS + spec.timeoutS + 10) * 1000);
    child.once('error', (error) => {
      clearTimeout(killer);
      track(undefined);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(killer);
      track(undefined);
      const line = stdout.split('\n').find((l) => l.startsWith('BENCH_RESULT '));
      if (!line) {
        reject(new Error(`wrk exited (${signal ?? code}) without a result: ${(stderr || stdout).trim().slice(-400)}`));
        return;
      }
      const raw = JSON.parse(line.slice('BENCH_RESULT '.length));
      const durationS = raw.duration_us / 1e6;
      const errors = { connect: raw.connect, read: raw.read, write: raw.write, timeout: raw.timeout };
      resolve({
        tool: 'wrk',
        requests: raw.requests,
        durationS,
        rps: durationS > 0 ? raw.requests / durationS : 0,
        latencyMs: {
          mean: raw.mean_us / 1000,
          p50: raw.p50_us / 1000,
          p90: raw.p90_us / 1000,
          p99: raw.p99_us / 1000,
          p999: raw.p999_us / 1000,
          max: raw.max_us / 1000,
        },
        errors,
        errorsTotal: errors.connect + errors.read + errors.write + errors.timeout,
        non2xx: raw.status,
      });
    });
  });
}

/**
 * Runs autocannon once, in this process.
 * @param {LoadSpec} spec
 * @returns {Promise<LoadResult>}
 */
export async function runAutocannon(spec) {
  const method = spec.method ?? 'GET';
  const result = await autocannon({
    url: spec.url,
    connections: spec.connections,
    duration: spec.durationS,
    timeout: spec.timeoutS,
    method,
    ...(method === 'GET'
      ? {}
      : { body: Buffer.alloc(spec.bodyBytes ?? 0, 'x'), headers: { 'content-type': 'application/octet-stream' } }),
  });
  const latency = result.latency;
  const errors = { connect: 0, read: Math.max(0, result.errors - result.timeouts), write: 0, timeout: result.timeouts };
  return {
    tool: 'autocannon',
    requests: result.requests.total,
    durationS: result.duration,
    rps: result.duration > 0 ? result.requests.total / result.duration : 0,
    latencyMs: {
      mean: latency.mean,
      p50: latency.p50,
      p90: latency.p90,
      p99: latency.p99,
      p999: latency.p99_9,
      max: latency.max,
    },
    errors,
    errorsTotal: result.errors,
    non2xx: result.non2xx,
  };
}
