// Baseline: one node:http process handing every request's work to a piscina thread
// pool with one thread per core. Request bodies move to the pool and back without a
// copy (transferred ArrayBuffers).
import http from 'node:http';
import os from 'node:os';
import { Piscina } from 'piscina';
import { closeOnSigterm, listenOptions, router } from './common.js';

const { host, port } = listenOptions();
const threads = os.availableParallelism();
const pool = new Piscina({
  filename: new URL('./piscina-task.js', import.meta.url).href,
  minThreads: threads,
  maxThreads: threads,
});

const server = http.createServer(
  router({
    isPrime: (n) => pool.run({ kind: 'is_prime', n }),
    uneven: (slow) => pool.run({ kind: 'uneven', slow }),
    echo: (body) => {
      // A body from Buffer.concat may share its ArrayBuffer; transfer a private copy.
      const own = new Uint8Array(body.length);
      own.set(body);
      return pool.run({ kind: 'echo', body: own }, { transferList: [own.buffer] });
    },
  }),
);
server.listen(port, host);
closeOnSigterm(server);
