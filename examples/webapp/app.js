#!/usr/bin/env node
/**
 * A small web app on a butterfly pipeline: its own node:http server, whose route
 * `POST /orders` (a JSON body `{ "item": "...", "quantity": N }`) hands the order to the
 * pipeline as a job and answers with the result; the pipeline's workers publish an
 * `orders.placed` event for each order, which `watcher.js`, another process, prints.
 *
 *   node examples/webapp/app.js [--port 8080] [--workers 2]
 *
 * It prints one JSON line when it is ready: {"port", "events"}; give `events` to watcher.js.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { ButterflyError, startButterfly } from 'butterfly';

const { values } = parseArgs({ options: { port: { type: 'string', default: '8080' }, workers: { type: 'string', default: '2' } } });
const bf = await startButterfly({
  http: false,
  events: true,
  workerLogLevel: 'warn',
  workers: Number(values.workers),
  pipeline: { stages: [{ module: new URL('./orders.js', import.meta.url).href }] },
});

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/orders') return reply(res, 404, { error: 'POST /orders' });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    let order;
    try {
      order = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return reply(res, 400, { error: 'the body is not JSON' });
    }
    try {
      reply(res, 201, await bf.jobs.send(order, { timeoutMs: 5000 }));
    } catch (err) {
      const e = err instanceof ButterflyError ? err : new ButterflyError('BF_ERR_INTERNAL', String(err));
      reply(res, e.status, { error: e.code, message: e.message });
    }
  });
});
server.listen(Number(values.port), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port, events: bf.eventAddresses.subscribe }));
});

const stop = () => server.close(() => void bf.close().then(() => process.exit(0)));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
