import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Logger, silentLogger } from './logger.js';
import { integerIn, oneOf, withDefaults } from './options.js';
import { Proxy } from './proxy/index.js';
import { ButterflyServer, PipelineClient, type EngineName, type ServerOptions } from './server/index.js';
import { type PipelineDescription, type WorkerTransport, importStage, isPrimePipeline, validatePipeline } from './stages/index.js';
import { WorkerPool } from './worker/index.js';

/** Options of a whole pipeline in one command: front end, proxies and worker pools. */
export interface ButterflyOptions {
  /** The stages, in order. Default: the built-in is_prime pipeline. */
  pipeline: PipelineDescription;
  /** Workers per stage unless the stage says otherwise. Default 2. */
  workers: number;
  /** Threads or processes, unless the stage says otherwise. Default `thread`. */
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
  logger: silentLogger,
});

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
  const logger = o.logger;

  const dir = mkdtempSync(join(tmpdir(), 'butterfly-'));
  const address = (name: string): string => `ipc://${join(dir, name)}`;
  const frontends = pipeline.stages.map((_, i) => address(`stage-${i}-in`));
  const loopback = address('loopback');
  const client = new PipelineClient({ loopback, stages: frontends, maxInFlight: o.maxInFlight, requestTimeoutMs: o.requestTimeoutMs, logger });
  const proxies: Proxy[] = [];
  const pools: WorkerPool[] = [];
  let server: ButterflyServer | undefined;

  const stopAll = async (): Promise<void> => {
    await server?.close();
    await Promise.all(pools.map((p) => p.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await client.close();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await client.start();
    const stages = await Promise.all(pipeline.stages.map((s) => importStage(s.module)));
    for (let i = 0; i < pipeline.stages.length; i++) {
      const stage = stages[i]!;
      const desc = pipeline.stages[i]!;
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
          logLevel: o.workerLogLevel,
          logger,
        }),
      );
    }
    await Promise.all(pools.map((p) => p.start()));
    if (o.http) {
      server = new ButterflyServer({ ...o.server, client, host: o.host, port: o.port, engine: o.engine, healthPath: o.healthPath, logger });
      await server.listen();
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      logger.info({ inFlight: client.inFlight }, 'draining');
      await server?.close();
      const timer = new Promise<void>((resolve) => setTimeout(resolve, o.drainTimeoutMs).unref());
      await Promise.race([client.drain(), timer]);
      await stopAll();
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
    workerPids: () => pools.flatMap((p) => p.pids),
    close,
    [Symbol.asyncDispose]: close,
  };
}
