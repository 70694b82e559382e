// Baseline: a bare uWebSockets.js server answering every request with one fixed body,
// the same bytes butterfly answers `/is_prime?possible_prime=7` with. It is the upper
// bound of what one uWS event loop can do here.
import uWS from 'uWebSockets.js';
import { listenOptions, primeBody } from './common.js';

const { host, port } = listenOptions();

// The package silently swaps in a slow pure-JS copy when its native addon does not
// load; a baseline measured on that copy would be meaningless.
if (!String(uWS.App).includes('[native code]')) {
  console.error('uws-hello: the uWebSockets.js native addon did not load');
  process.exit(1);
}

const body = primeBody(7, true);
let listenSocket = null;

uWS
  .App()
  .any('/*', (res) => {
    res.cork(() => {
      res.writeHeader('content-type', 'application/json').end(body);
    });
  })
  .listen(host, port, (socket) => {
    if (!socket) {
      console.error(`uws-hello: cannot listen on ${host}:${port}`);
      process.exit(1);
    }
    listenSocket = socket;
  });

process.once('SIGTERM', () => {
  if (listenSocket) uWS.us_listen_socket_close(listenSocket);
  process.exit(0);
});
