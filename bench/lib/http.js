// Small HTTP helpers for the harness: a free loopback port and a readiness probe.
import http from 'node:http';
import net from 'node:net';

/** The only address the benchmark ever talks to. */
export const HOST = '127.0.0.1';

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (bound to port 0, then released).
 * @returns {Promise<number>}
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/**
 * One request on a fresh connection. Resolves with the status code once the whole
 * response is read; rejects on a socket error or after `timeoutMs`.
 * @param {number} port
 * @param {{ method?: string, path: string, body?: Buffer | string, timeoutMs?: number }} request
 * @returns {Promise<number>}
 */
export function probe(port, { method = 'GET', path, body, timeoutMs = 2000 }) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port, method, path, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/octet-stream' } },
      (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
        res.once('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end(body);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls until the server is ready for a workload: GET /health must answer 200 (a 404
 * means this server has no health route on this port, and is skipped), then the
 * workload's own request must answer 2xx. Gives up at the deadline, or as soon as
 * `exited()` reports that the server died.
 * @param {number} port
 * @param {{ method?: string, path: string, body?: Buffer | string }} request the workload's probe
 * @param {{ deadlineMs: number, exited: () => string | undefined }} options
 */
export async function waitReady(port, request, { deadlineMs, exited }) {
  const deadline = Date.now() + deadlineMs;
  let healthy = false;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    const death = exited();
    if (death !== undefined) throw new Error(death);
    try {
      if (!healthy) {
        const status = await probe(port, { path: '/health' });
        healthy = status === 200 || status === 404;
        last = `GET /health answered ${status}`;
      }
      if (healthy) {
        const status = await probe(port, request);
        if (status >= 200 && status < 300) return;
        last = `${request.method ?? 'GET'} ${request.path} answered ${status}`;
      }
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
    }
    await sleep(50);
  }
  throw new Error(`not ready after ${deadlineMs} ms (${last})`);
}
