import { availableParallelism } from 'node:os';
import { BUTTERFLY_DEFAULTS } from '../embedded.js';

/** `butterflyd --help`. */
export function helpText(version: string): string {
  return `butterflyd ${version}: pipelined worker-layer HTTP server

Usage:
  butterflyd [options]                      the whole pipeline (default: is_prime) with its HTTP front end,
                                            proxies and worker pools in one process tree
  butterflyd simulate COUNT [options]       check every number from 1 to COUNT through the is_prime
                                            pipeline without HTTP; print the count of primes and the rate
  butterflyd server --loopback ADDR --stages ADDR,ADDR,... [options]
                                            split mode: the HTTP front end alone; it binds the loopback
                                            and sends jobs to stage 1's proxy at the first ADDR
  butterflyd proxy --stage-index I --frontend ADDR --backend ADDR [--next ADDR] --loopback ADDR [options]
                                            split mode: the load balancer of one stage
  butterflyd worker --stage NAME|FILE --connect ADDR [--workers N] [options]
                                            a worker of one stage (or a pool of N) joining the proxy at ADDR;
                                            start more at any time to add capacity, SIGTERM one to remove it

Addresses (ADDR) are ZeroMQ endpoints: ipc://PATH (one host) or tcp://HOST:PORT. Built-in
stages: is_prime.parse, is_prime.check.

General (every command):
  --config FILE             JSON file of settings, fields named as the flags in camel case
                            ("port", "maxMessageBytes", ...); also BUTTERFLY_CONFIG
  --log-level LEVEL         fatal, error, warn, info, debug, trace or silent (default info)
  --max-message-bytes N     largest ZeroMQ message on every socket; a peer sending more is
                            disconnected; at least --max-body + 65536 (default 67108864)
  -h, --help                print this help
  -v, --version             print the version

Admin port (butterflyd, server, proxy, worker):
  --admin-port PORT         serve /metrics (Prometheus), /health and /ready on this port, 0 for
                            any free one (default: no admin port)
  --admin-host HOST         address of the admin port (default 127.0.0.1)

HTTP front end (butterflyd, server):
  --host HOST               address to listen on (default 127.0.0.1)
  --port PORT               port to listen on, 0 for any free one (default 8002)
  --engine node|uws         HTTP engine (default node): node serves HTTP/1.0 and 1.1, every client;
                            uws (uWebSockets.js) is faster but serves only HTTP/1.1 with Host
  --max-body BYTES          largest request body before 413 (default 10485760)
  --health-path PATH        path answered 200 by the server itself (default /health)
  --drain-timeout MS        on SIGTERM, time to finish requests in flight (default 10000)
  --access-log              log one JSON line per request (method, url, status, ms, remote)
  --server-timing           add a Server-Timing header with the time spent in the pipeline
  --metrics-routes PATHS    comma-separated paths with their own route label in the metrics;
                            others count as "other" (default /is_prime)
  --request-timeout MS      time to answer a request before 504 (default 30000; also simulate)
  --max-in-flight N         requests in flight before 503 (default 10000; also simulate)

Pipeline (butterflyd, simulate):
  --pipeline FILE           JSON pipeline description (default: the built-in is_prime)
  --workers N               workers per stage (default: the number of cores, ${availableParallelism()})
  --transport thread|process  how workers run (default ${BUTTERFLY_DEFAULTS.transport}: threads talk to their
                            proxy through ports, without sockets)
  --max-queue N             jobs waiting per stage, at a proxy or prefetched by its workers,
                            before 503 (default 1024; also proxy)
  --heartbeat MS            heartbeat interval between proxies and workers (default 1000; also proxy)

Split mode, server and proxy:
  --loopback ADDR           where final answers go: the server binds it, proxies connect to it
  --stages ADDR,ADDR,...    (server) every stage proxy's --frontend, in order
  --stats ADDR              stage reports: the server binds ADDR and each proxy sends its stage's
                            counts there every second, so that the server's /metrics and /ready
                            cover the whole pipeline
  --stage-index I           (proxy) the stage's position, 0 for the first
  --frontend ADDR           (proxy) where its jobs arrive (bound)
  --backend ADDR            (proxy) where its workers connect (bound)
  --next ADDR               (proxy) the next stage's --frontend; none for the last stage
  --name NAME               (proxy) the stage's name in logs and metrics (default stage-I)
  --idempotent              (proxy) re-send once a job whose worker died, instead of 502

Worker:
  --stage NAME|FILE         the stage: a built-in name or a module whose default export is the stage
  --connect ADDR            the stage proxy's --backend
  --concurrency N           jobs one worker holds at once (default: the stage's own)
  --workers N               workers this process runs (default 1; more run as a supervised pool
                            that restarts them)
  --transport thread|process  how a pool's workers run (default process)

Every option can also be set by an environment variable, BUTTERFLY_ and the flag in upper
snake case (BUTTERFLY_PORT, BUTTERFLY_HOST, BUTTERFLY_ENGINE, BUTTERFLY_WORKERS,
BUTTERFLY_LOG_LEVEL, BUTTERFLY_ADMIN_PORT, ...), or a field of the --config file. Flags win
over the environment, the environment over the file. All addresses bind to 127.0.0.1
unless told otherwise. SIGTERM or SIGINT drains and exits 0; a second signal exits at once.
`;
}
