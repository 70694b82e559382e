import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { InvalidOptionError } from './errors.js';
import { type Logger, silentLogger } from './logger.js';
import { AdminServer, HttpMetrics, type Readiness, type StageSample, createRegistry } from './metrics/index.js';
import { integerIn, nonEmptyString, oneOf, withDefaults } from './options.js';
import { Proxy } from './proxy/index.js';
import { ButterflyServer, PipelineClient, SERVER_DEFAULTS, type EngineName, type ServerOptions } from './server/index.js';
import { type PipelineDescription, type WorkerTransport, importStage, isPrimePipeline, validatePipeline } from './stages/index.js';
import { WorkerPool } from './worker/index.js';

/** Options of a whole pipeline in one command: front end, proxies and worker pools. */
export interface ButterflyOptions {
  /** The stages, in order. Default: the built-in is_prime pipeline. */
  pipeline: PipelineDescription;
  /** Workers per stage unless the stage says otherwise. Default 2. */
  workers: number;
  /**
   * Processes or threads, unless the stage says otherwise. Default `process`: a process
   * that blocks or dies can be killed and replaced; a thread holding ZeroMQ sockets cannot
   * be terminated without taking the whole process down.
   */
  transport: WorkerTransport;
  /** Start the HTTP front end (false for simulation and programmatic use). Default true. */
  http: boolean;
  host: string;
  port: number;
  engine: EngineName;
  healthPath: string;
  /** Time from accepting a request to its answer, at most, in ms (504 past it). Default 30000. */
  requestTimeoutMs: number;
  /** Requests in flight at most (503 past it). Default 10000. */
  maxInFlight: number;
  /** Jobs waiting per stage at most (503 past it), unless the stage says otherwise. Default 1024. */
  maxQueue: number;
  /** Heartbeat interval between proxies and workers, in ms. Default 1000. */
  heartbeatMs: number;
  /** Heartbeats missed before a worker counts as dead. Default 3. */
  liveness: number;
  /** Time `close()` lets requests in flight finish, in ms; the rest are answered 503. Default 10000. */
  drainTimeoutMs: number;
  /** Extra front-end limits (see `ServerOptions`). */
  server: Partial<Omit<ServerOptions, 'client' | 'host' | 'port' | 'engine' | 'healthPath' | 'logger'>>;
  /** pino level for worker threads and processes. Default `info`. */
  workerLogLevel: string;
  /**
   * Largest ZeroMQ message on every socket, in bytes (a message carries the records of one
   * event-loop turn). A peer that sends a larger one is disconnected. Default 64 MiB; at
   * least the largest body plus 64 KiB.
   */
  maxMessageBytes: number;
  /** Port of the admin server (`/metrics`, `/health`, `/ready`); 0 picks a free one; undefined for none. Default none. */
  adminPort: number | undefined;
  /** Address the admin server listens on. Default `127.0.0.1`. */
  adminHost: string;
  /** Count requests and stages for `registry` even without an admin port. Default false. */
  metrics: boolean;
  /** Paths counted as their own `route` label; any other path counts as `other`. Default none. */
  metricsRoutes: readonly string[];
  /** Add `Server-Timing: pipeline;dur=MS` to every answer from the pipeline. Default false. */
  serverTiming: boolean;
  /** Where one JSON line per answered request goes; undefined for no access log. Default none. */
  accessLog: Logger | undefined;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const BUTTERFLY_DEFAULTS = Object.freeze({
  workers: 2,
  transport: 'thread' as WorkerTransport,
  http: true,
  host: '127.0.0.1',
  port: 8002,
  engine: 'node' as EngineName,
  healthPath: '/health',
  requestTimeoutMs: 30_000,
  maxInFlight: 10_000,
  maxQueue: 1024,
  heartbeatMs: 1000,
  liveness: 3,
  drainTimeoutMs: 10_000,
  server: {},
  workerLogLevel: 'info',
  maxMessageBytes: 64 * 1024 * 1024,
  adminPort: undefined,
  adminHost: '127.0.0.1',
  metrics: false,
  metricsRoutes: Object.freeze([]) as readonly string[],
  serverTiming: false,
  accessLog: undefined,
  logger: silentLogger,
});

/** Room a request needs in a message beyond its body: target, headers, record header. */
export const MESSAGE_HEADROOM_BYTES = 64 * 1024;

/** A running pipeline started by `startButterfly`. */
export interface Butterfly {
  /** The HTTP front end, when `http` is on. */
  readonly server: ButterflyServer | undefined;
  /** The port listened on (0 without HTTP). */
  readonly port: number;
  /** Submits jobs to stage 1 and receives their answers, without HTTP. */
  readonly client: PipelineClient;
  readonly proxies: readonly Proxy[];
  readonly pools: readonly WorkerPool[];
  /** The admin server, when `adminPort` is set. */
  readonly admin: AdminServer | undefined;
  /** The admin port listened on (0 without an admin server). */
  readonly adminPort: number;
  /** The metrics, when `adminPort` is set or `metrics` is on. */
  readonly registry: Registry | undefined;
  /** True while serving with a live worker in every stage; what `/ready` answers. */
  ready(): Readiness;
  /** Process ids of every worker process (empty with thread workers). */
  workerPids(): number[];
  /** Graceful: stop accepting, let requests in flight finish (up to `drainTimeoutMs`), then stop everything. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts a whole pipeline in this process: the pipeline client and its loopback, one proxy
 * per stage, each stage's worker pool (threads or processes), and the HTTP front end.
 * Endpoints are `ipc://` sockets in a private temporary folder. Resolves once every worker
 * has joined and the server listens.
 * @throws InvalidOptionError for a bad option; Error naming the stage when a stage fails to start.
 */
export async function startButterfly(options: Partial<ButterflyOptions> = {}): Promise<Butterfly> {
  const o = withDefaults<ButterflyOptions>({ ...BUTTERFLY_DEFAULTS, pipeline: isPrimePipeline() } as ButterflyOptions, options);
  const pipeline = validatePipeline(o.pipeline, process.cwd());
  integerIn('workers', o.workers, 1, 256);
  oneOf('transport', o.transport, ['thread', 'process']);
  integerIn('requestTimeoutMs', o.requestTimeoutMs, 1);
  integerIn('drainTimeoutMs', o.drainTimeoutMs, 0);
  integerIn('maxMessageBytes', o.maxMessageBytes, 1024);
  const maxBody = o.server.maxBodyBytes ?? SERVER_DEFAULTS.maxBodyBytes;
  if (o.http && o.maxMessageBytes < maxBody + MESSAGE_HEADROOM_BYTES) {
    throw new InvalidOptionError('maxMessageBytes', `at least server.maxBodyBytes + ${MESSAGE_HEADROOM_BYTES} (${maxBody + MESSAGE_HEADROOM_BYTES})`, o.maxMessageBytes);
  }
  if (o.adminPort !== undefined) integerIn('adminPort', o.adminPort, 0, 65535);
  nonEmptyString('adminHost', o.adminHost);
  const logger = o.logger;
  const maxMessageBytes = o.maxMessageBytes;
  const withMetrics = o.metrics || o.adminPort !== undefined;
  const http = o.http && (withMetrics || o.accessLog !== undefined)
    ? new HttpMetrics({ routes: o.metricsRoutes, healthPath: o.healthPath, accessLog: o.accessLog })
    : undefined;

  const dir = mkdtempSync(join(tmpdir(), 'butterfly-'));
  const address = (name: string): string => `ipc://${join(dir, name)}`;
  const frontends = pipeline.stages.map((_, i) => address(`stage-${i}-in`));
  const loopback = address('loopback');
  const proxies: Proxy[] = [];
  // Within this process the client, the proxies and thread workers hand records to each
  // other directly; the sockets are there for worker processes.
  const client = new PipelineClient({
    loopback,
    stages: frontends,
    localStages: frontends.map((_, i) => (records, frame) => proxies[i]?.acceptRecords(records, frame)),
    maxInFlight: o.maxInFlight,
    requestTimeoutMs: o.requestTimeoutMs,
    maxMessageBytes,
    logger,
  });
  const pools: WorkerPool[] = [];
  const names: string[] = [];
  let server: ButterflyServer | undefined;
  let admin: AdminServer | undefined;

  const stageSamples = (): StageSample[] =>
    proxies.map((proxy, index) => ({
      index,
      name: names[index]!,
      up: proxy.state === 'running',
      stats: proxy.stats(),
      pool: pools[index] === undefined ? undefined : { running: pools[index].alive, restarts: pools[index].restarts },
    }));
  const ready = (): Readiness => {
    const stages = proxies.map((proxy, index) => ({ index, name: names[index]!, workers: proxy.stats().workers }));
    const serving = client.state === 'running' && (!o.http || server?.state === 'running');
    return { ready: serving && stages.length > 0 && stages.every((s) => s.workers > 0), stages };
  };
  const registry = withMetrics ? createRegistry({ stages: stageSamples, client, ...(http === undefined ? {} : { http }) }) : undefined;

  /** Stops everything; `graceful` lets idle workers leave cleanly, otherwise they are stopped at once. */
  const stopAll = async (graceful = true): Promise<void> => {
    await server?.close();
    await admin?.close();
    // Anything still in flight is answered 503 before the workers go.
    await client.close();
    await Promise.all(pools.map((p) => (graceful ? p.close() : p.destroy())));
    await Promise.all(proxies.map((p) => p.close()));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await client.start();
    const stages = await Promise.all(pipeline.stages.map((s) => importStage(s.module)));
    for (let i = 0; i < pipeline.stages.length; i++) {
      const stage = stages[i]!;
      const desc = pipeline.stages[i]!;
      names.push(stage.name);
      const proxy = new Proxy({
        stage: i,
        name: stage.name,
        frontend: frontends[i]!,
        backend: address(`stage-${i}-workers`),
        next: frontends[i + 1] ?? null,
        loopback,
        maxQueue: desc.maxQueue ?? o.maxQueue,
        heartbeatMs: o.heartbeatMs,
        liveness: o.liveness,
        idempotent: stage.idempotent === true,
        maxMessageBytes,
        // A worker found stuck past a deadline is killed by its pool, which starts another.
        onStuck: (label) => pools[i]?.kill(label),
        localLoopback: (records) => client.acceptAnswers(records),
        localNext: (records, frame) => proxies[i + 1]?.acceptRecords(records, frame),
        logger,
      });
      proxies.push(proxy);
      await proxy.start();
      pools.push(
        new WorkerPool({
          name: stage.name,
          module: desc.module,
          connect: address(`stage-${i}-workers`),
          workers: desc.workers ?? o.workers,
          transport: desc.transport ?? o.transport,
          concurrency: desc.concurrency,
          prefetch: desc.prefetch,
          attach: () => proxy.attachPort(),
          maxMessageBytes,
          timeoutMs: desc.timeoutMs,
          // The proxy hears of a worker's exit at once, not a liveness window later.
          onWorkerExit: (label) => proxy.workerGone(label),
          logLevel: o.workerLogLevel,
          logger,
        }),
      );
    }
    await Promise.all(pools.map((p) => p.start()));
    if (o.http) {
      server = new ButterflyServer({
        ...o.server,
        client,
        host: o.host,
        port: o.port,
        engine: o.engine,
        healthPath: o.healthPath,
        observer: http,
        serverTiming: o.serverTiming,
        logger,
      });
      await server.listen();
    }
    if (o.adminPort !== undefined && registry !== undefined) {
      admin = new AdminServer({ host: o.adminHost, port: o.adminPort, registry, ready, logger });
      await admin.listen();
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      logger.info({ inFlight: client.inFlight }, 'draining');
      // Stop accepting now; the listener itself closes only once its connections have, so
      // the drain time runs from here, not from then.
      void server?.close();
      const timer = new Promise<void>((resolve) => setTimeout(resolve, o.drainTimeoutMs).unref());
      const drained = await Promise.race([client.drain().then(() => true), timer.then(() => false)]);
      await stopAll(drained);
      logger.info({}, 'closed');
    })();
    return closing;
  };

  return {
    server,
    port: server?.port ?? 0,
    client,
    proxies,
    pools,
    admin,
    adminPort: admin?.port ?? 0,
    registry,
    ready,
    workerPids: () => pools.flatMap((p) => p.pids),
    close,
    [Symbol.asyncDispose]: close,
  };
}
