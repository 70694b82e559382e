// Shared pieces of the baseline servers: command-line options, the primality check,
// the busy wait behind `/uneven?slow=1`, and the node:http request router.
import { parseArgs } from 'node:util';

/**
 * Reads `--host` and `--port` from argv. The port is required; the host defaults to
 * 127.0.0.1. Exits the process with a message when the port is missing or invalid.
 * @returns {{ host: string, port: number }}
 */
export function listenOptions() {
  const { values } = parseArgs({
    options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string' } },
    strict: true,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error(`--port must be an integer in 1..65535, got ${values.port}`);
    process.exit(2);
  }
  return { host: values.host, port };
}

/**
 * Trial division by 2, 3 and then 6k +/- 1 up to the square root. This is the
 * reference check every server and the in-process "ideal" run, so their costs per
 * request are comparable. `n` must be a non-negative safe integer.
 * @param {number} n
 * @returns {boolean}
 */
export function isPrime(n) {
  if (n < 2) return false;
  if (n < 4) return true;
  if (n % 2 === 0 || n % 3 === 0) return false;
  const limit = Math.floor(Math.sqrt(n));
  for (let i = 5; i <= limit; i += 6) {
    if (n % i === 0 || n % (i + 2) === 0) return false;
  }
  return true;
}

/** Milliseconds of busy CPU spent by a slow `/uneven` request. */
export const SLOW_MS = 200;

/**
 * Keeps the calling thread busy on the CPU for `ms` milliseconds (no sleeping), so a
 * slow request blocks whatever event loop runs it.
 * @param {number} ms
 * @returns {number} a value derived from the work, so the loop cannot be elided
 */
export function busyFor(ms) {
  const end = performance.now() + ms;
  let acc = 0;
  while (performance.now() < end) acc += Math.sqrt(acc + 1);
  return acc;
}

const DIGITS = /^\d{1,16}$/;

/**
 * Parses the `possible_prime` query value. Returns the number, or undefined when the
 * value is missing, not a plain decimal integer, or above Number.MAX_SAFE_INTEGER.
 * @param {string | null} text
 * @returns {number | undefined}
 */
export function parseCandidate(text) {
  if (text === null || !DIGITS.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * The response body butterfly's is_prime stage answers with.
 * @param {number} n
 * @param {boolean} prime
 */
export function primeBody(n, prime) {
  return `{"possible_prime":${n},"is_prime":${prime}}`;
}

/** Largest request body the baselines accept (bytes); larger bodies get 413. */
export const MAX_BODY = 8 * 1024 * 1024;

const JSON_HEADERS = { 'content-type': 'application/json' };
const TEXT_HEADERS = { 'content-type': 'text/plain' };
const BINARY_HEADERS = { 'content-type': 'application/octet-stream' };

/**
 * Builds a node:http request listener serving the benchmark routes. The three kinds of
 * work are delegated to `compute`, so one server runs them inline and another in a pool.
 *   GET  /health                        200 "ok"
 *   GET  /is_prime?possible_prime=N     200 {"possible_prime":N,"is_prime":bool}
 *   GET  /uneven[?slow=1]               200 "ok" (slow=1: 200 ms of busy CPU first)
 *   POST /echo                          200 with the request body
 * @param {{
 *   isPrime(n: number): boolean | Promise<boolean>,
 *   uneven(slow: boolean): unknown,
 *   echo(body: Buffer): Buffer | Uint8Array | Promise<Buffer | Uint8Array>,
 * }} compute
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void}
 */
export function router(compute) {
  return (req, res) => {
    const url = req.url ?? '/';
    const mark = url.indexOf('?');
    const path = mark === -1 ? url : url.slice(0, mark);
    const query = new URLSearchParams(mark === -1 ? '' : url.slice(mark + 1));
    const fail = (status, message) => {
      if (!res.headersSent) res.writeHead(status, TEXT_HEADERS);
      res.end(message);
    };
    const run = (work, answer) => {
      Promise.resolve()
        .then(work)
        .then(answer, () => fail(500, 'internal error'));
    };

    if (req.method === 'GET' && path === '/health') {
      res.writeHead(200, TEXT_HEADERS).end('ok');
    } else if (req.method === 'GET' && path === '/is_prime') {
      const n = parseCandidate(query.get('possible_prime'));
      if (n === undefined) return fail(400, 'possible_prime must be a non-negative safe integer');
      run(
        () => compute.isPrime(n),
        (prime) => res.writeHead(200, JSON_HEADERS).end(primeBody(n, prime)),
      );
    } else if (req.method === 'GET' && path === '/uneven') {
      run(
        () => compute.uneven(query.get('slow') === '1'),
        () => res.writeHead(200, TEXT_HEADERS).end('ok'),
      );
    } else if (req.method === 'POST' && path === '/echo') {
      const chunks = [];
      let size = 0;
      req.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_BODY) {
          fail(413, 'body too large');
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      req.on('end', () => {
        run(
          () => compute.echo(Buffer.concat(chunks, size)),
          (body) => res.writeHead(200, BINARY_HEADERS).end(body),
        );
      });
    } else {
      fail(404, 'not found');
    }
  };
}

/**
 * Closes a node:http server on SIGTERM: stops accepting, closes idle keep-alive
 * connections, then exits once the in-flight requests are answered (or after 2 s).
 * @param {import('node:http').Server} server
 */
export function closeOnSigterm(server) {
  process.once('SIGTERM', () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
