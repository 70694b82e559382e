// Baseline: node:http on node:cluster, one process per core, doing all the work inline
// in the process that parsed the request (no hop at all). A slow request blocks every
// other request on its process, which is what the uneven workload shows.
import cluster from 'node:cluster';
import http from 'node:http';
import os from 'node:os';
import { busyFor, closeOnSigterm, isPrime, listenOptions, router, SLOW_MS } from './common.js';

const { host, port } = listenOptions();

if (cluster.isPrimary) {
  const processes = os.availableParallelism();
  let state = 'running';
  for (let i = 0; i < processes; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (state === 'running') {
      console.error(`cluster-inline: process ${worker.process.pid} exited (${signal ?? code})`);
      process.exit(1);
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  });
  process.once('SIGTERM', () => {
    state = 'closing';
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 3000).unref();
  });
} else {
  const server = http.createServer(
    router({
      isPrime,
      uneven: (slow) => (slow ? busyFor(SLOW_MS) : 0),
      echo: (body) => body,
    }),
  );
  server.listen(port, host);
  closeOnSigterm(server);
}
