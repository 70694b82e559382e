import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { InvalidOptionError } from './errors.js';
import { type FrontEnd, startFrontEnd } from './front-end.js';
import { type EventAddresses, EventBus, Events } from './events.js';
import { Jobs } from './jobs.js';
import { type Logger, silentLogger } from './logger.js';
import type { AdminServer, Readiness, StageReadiness, StageSample } from './metrics/index.js';
import { type OptionName, check, checkMessageRoom, checkOptional, defaultsOf, withDefaults } from './options.js';
import { Proxy } from './proxy/index.js';
import { type ButterflyServer, PipelineClient, SERVER_DEFAULTS, checkServerOptions, type EngineName, type ServerOptions } from './server/index.js';
import { type PipelineDescription, type PipelineStage, type StageDefinition, type WorkerTransport, isPrimePipeline, prepareStage, validatePipeline } from './stages/index.js';
import { WorkerPool } from './worker/index.js';

/** Options of a whole pipeline in one command: front end, proxies and worker pools. */
export interface ButterflyOptions {
  /** The stages, in order. Default: the built-in is_prime pipeline. */
  pipeline: PipelineDescription;
  /** Workers per stage unless the stage says otherwise. Default 2. */
  workers: number;
  /**
   * Threads or processes, unless the stage says otherwise. Default `thread`: threads talk
   * to their proxy through ports, and a stuck one is terminated and replaced.
   */
  transport: WorkerTransport;
  /** Start the HTTP front end (false for simulation and programmatic use). Default true. */
  http: boolean;
  /**
   * Start the pipeline's event forwarder (default false): stages publish with
   * `ctx.events.publish(topic, data)`, and `Butterfly.events` publishes and subscribes;
   * other processes reach it at `Butterfly.eventAddresses`.
   */
  events: boolean;
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
  /** Paths counted as their own `route` label; any other path counts as `other`. Default: the pipeline's `routes`, else none. */
  metricsRoutes: readonly string[];
  /** Add `Server-Timing: pipeline;dur=MS` to every answer from the pipeline. Default false. */
  serverTiming: boolean;
  /** Where one JSON line per answered request goes; undefined for no access log. Default none. */
  accessLog: Logger | undefined;
  logger: Logger;
}

/** ButterflyOptions' fields that are in the option schema (`OPTIONS`), with its defaults and rules. */
const SCHEMA_FIELDS = [
  'workers',
  'transport',
  'http',
  'events',
  'host',
  'port',
  'engine',
  'healthPath',
  'requestTimeoutMs',
  'maxInFlight',
  'maxQueue',
  'heartbeatMs',
  'liveness',
  'drainTimeoutMs',
  'workerLogLevel',
  'maxMessageBytes',
  'adminHost',
  'metrics',
  'metricsRoutes',
  'serverTiming',
] as const satisfies readonly (keyof ButterflyOptions & OptionName)[];

/** Defaults for the options that have them, from the option schema. */
export const BUTTERFLY_DEFAULTS = Object.freeze({
  ...(defaultsOf(SCHEMA_FIELDS) as Pick<ButterflyOptions, (typeof SCHEMA_FIELDS)[number]>),
  server: {},
  adminPort: undefined,
  accessLog: undefined,
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
  /** Jobs from code on this pipeline: `send` one, `distribute` many; failures as `ButterflyError`s. */
  readonly jobs: Jobs;
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
  /** This process's end of the pipeline's events, with `events` on: `publish(topic, data)`, `subscribe(topic, handler)`. */
  readonly events: Events | undefined;
  /** Where other processes of this host publish and subscribe (`new Events(addresses)`), with `events` on. */
  readonly eventAddresses: EventAddresses | undefined;
  /** Graceful: stop accepting, let requests in flight finish (up to `drainTimeoutMs`), then stop everything. Idempotent. */
  close(): Promise<void>;
  /** Immediate: requests in flight are answered 503 and every worker is stopped at once. Idempotent. */
  destroy(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** One stage in this process: its proxy and its worker pool. */
interface LocalStage {
  readonly name: string;
  readonly idempotent: boolean;
  readonly proxy: Proxy;
  readonly pool: WorkerPool;
}

/** What the stages of one process tree share. */
interface StageWiring {
  readonly o: ButterflyOptions;
  readonly client: PipelineClient;
  /** The stages started so far, in order: a proxy hands jobs on to the next one's. */
  readonly stages: LocalStage[];
  /** A socket address in the pipeline's private folder. */
  address(name: string): string;
  /** Where events are published, told to workers; null without events. */
  readonly events: string | null;
}

/**
 * Starts stage `i`'s proxy and creates its pool (started by the caller). Within this
 * process the client, the proxies and thread workers hand records to each other directly;
 * the sockets are there for worker processes.
 */
async function startStage(w: StageWiring, i: number, desc: PipelineStage, stage: StageDefinition, last: boolean): Promise<LocalStage> {
  const { o, client, stages } = w;
  const backend = w.address(`stage-${i}-workers`);
  // Both are told of each other: a worker's exit and a stuck worker.
  const pool = new WorkerPool({
    name: stage.name,
    module: desc.module,
    connect: backend,
    workers: desc.workers ?? o.workers,
    transport: desc.transport ?? o.transport,
    concurrency: desc.concurrency,
    prefetch: desc.prefetch,
    attach: (whileIdle) => proxy.attachPort(whileIdle),
    maxMessageBytes: o.maxMessageBytes,
    timeoutMs: desc.timeoutMs,
    // The proxy hears of a worker's exit at once, not a liveness window later.
    onWorkerExit: (label) => proxy.workerGone(label),
    logLevel: o.workerLogLevel,
    logger: o.logger,
  });
  const proxy = new Proxy({
    stage: i,
    name: stage.name,
    frontend: w.address(`stage-${i}-in`),
    backend,
    next: last ? null : w.address(`stage-${i + 1}-in`),
    loopback: w.address('loopback'),
    maxQueue: desc.maxQueue ?? o.maxQueue,
    heartbeatMs: o.heartbeatMs,
    liveness: o.liveness,
    drainTimeoutMs: o.drainTimeoutMs,
    idempotent: stage.idempotent === true,
    maxMessageBytes: o.maxMessageBytes,
    // A worker found stuck past a deadline is killed by its pool, which starts another.
    onStuck: (label) => pool.kill(label),
    localLoopback: (records) => client.acceptAnswers(records),
    localNext: (records, frame) => stages[i + 1]?.proxy.acceptRecords(records, frame),
    events: w.events,
    logger: o.logger,
  });
  await proxy.start();
  return { name: stage.name, idempotent: stage.idempotent === true, proxy, pool };
}

/** Checks the options that the parts started later would check, so that a mistake fails before any worker starts. */
function checkOptions(o: ButterflyOptions, given: Partial<ButterflyOptions>): PipelineDescription {
  const pipeline = validatePipeline(o.pipeline, process.cwd());
  for (const name of SCHEMA_FIELDS) check(name, o[name]);
  checkOptional('adminPort', o.adminPort);
  if (given.accessLog !== undefined && (typeof given.accessLog !== 'object' || typeof given.accessLog.info !== 'function')) {
    throw new InvalidOptionError('accessLog', 'a logger', given.accessLog);
  }
  if (o.http) {
    checkServerOptions({ ...SERVER_DEFAULTS, ...o.server }, 'server.');
    checkMessageRoom(o.maxMessageBytes, o.server.maxBodyBytes ?? SERVER_DEFAULTS.maxBodyBytes, 'maxMessageBytes', 'server.maxBodyBytes');
  }
  return pipeline;
}

/**
 * Starts a whole pipeline in this process: the pipeline client and its loopback, one proxy
 * per stage, each stage's worker pool (threads or processes), and the HTTP front end.
 * Endpoints are `ipc://` sockets in a private temporary folder. Resolves once every worker
 * has joined and the server listens.
 * @throws InvalidOptionError for a bad option, StageLoadError for a stage module that is
 * not one, WorkerStartError when a stage's workers fail to start.
 */
export async function startButterfly(options: Partial<ButterflyOptions> = {}): Promise<Butterfly> {
  const o = withDefaults<ButterflyOptions>({ ...BUTTERFLY_DEFAULTS, pipeline: isPrimePipeline(options.transport) } as ButterflyOptions, options);
  const pipeline = checkOptions(o, options);
  const logger = o.logger;
  const dir = mkdtempSync(join(tmpdir(), 'butterfly-'));
  const address = (name: string): string => `ipc://${join(dir, name)}`;
  const stages: LocalStage[] = [];
  const client = new PipelineClient({
    loopback: address('loopback'),
    stages: pipeline.stages.map((_, i) => address(`stage-${i}-in`)),
    localStages: pipeline.stages.map((_, i) => (records, frame) => stages[i]?.proxy.acceptRecords(records, frame)),
    maxInFlight: o.maxInFlight,
    requestTimeoutMs: o.requestTimeoutMs,
    maxMessageBytes: o.maxMessageBytes,
    logger,
  });
  let front: FrontEnd | undefined;
  const eventAddresses: EventAddresses | undefined = o.events ? { publish: address('events-in'), subscribe: address('events-out') } : undefined;
  const bus = eventAddresses === undefined ? undefined : new EventBus({ ...eventAddresses, logger });
  const events = eventAddresses === undefined ? undefined : new Events(eventAddresses);

  /** Stops everything; `graceful` lets workers and proxies finish, otherwise they are stopped at once. */
  const stopAll = async (graceful: boolean): Promise<void> => {
    if (front !== undefined) await front.stop();
    else await client.destroy();
    await events?.close();
    await Promise.all(stages.map((s) => (graceful ? s.pool.close() : s.pool.destroy())));
    await Promise.all(stages.map((s) => (graceful ? s.proxy.close() : s.proxy.destroy())));
    await bus?.close();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await client.start();
    await bus?.start();
    const prepared = await Promise.all(pipeline.stages.map((s) => prepareStage(s.module)));
    const wiring: StageWiring = { o, client, stages, address, events: eventAddresses?.publish ?? null };
    for (let i = 0; i < prepared.length; i++) {
      // Workers import the prepared module: a TypeScript stage's JavaScript, compiled once here.
      const desc = { ...pipeline.stages[i]!, module: prepared[i]!.module };
      stages.push(await startStage(wiring, i, desc, prepared[i]!.stage, i === prepared.length - 1));
    }
    await Promise.all(stages.map((s) => s.pool.start()));
    front = await startFrontEnd({
      client,
      http: o.http,
      server: { ...o.server, host: o.host, port: o.port, engine: o.engine, serverTiming: o.serverTiming },
      adminPort: o.adminPort,
      adminHost: o.adminHost,
      metrics: o.metrics,
      metricsRoutes: options.metricsRoutes ?? pipeline.routes ?? [],
      healthPath: o.healthPath,
      accessLog: o.accessLog,
      stageSamples: (): StageSample[] =>
        stages.map(({ name, proxy, pool }, index) => ({ index, name, up: proxy.state === 'running', stats: proxy.stats(), pool: { running: pool.alive, restarts: pool.restarts } })),
      stageReadiness: (): StageReadiness[] => stages.map(({ name, proxy }, index) => ({ index, name, workers: proxy.stats().workers })),
      logger,
    });
  } catch (err) {
    await stopAll(true);
    throw err;
  }

  const started = front;
  let closing: Promise<void> | undefined;
  let destroying: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const drained = await started.drain(o.drainTimeoutMs);
      await stopAll(drained);
      logger.info({}, 'closed');
    })();
    return closing;
  };
  const destroy = (): Promise<void> => {
    destroying ??= stopAll(false);
    closing ??= destroying;
    return destroying;
  };
  return {
    server: started.server,
    port: started.server?.port ?? 0,
    client,
    jobs: new Jobs(client, stages.every((s) => s.idempotent)),
    proxies: stages.map((s) => s.proxy),
    pools: stages.map((s) => s.pool),
    admin: started.admin,
    adminPort: started.admin?.port ?? 0,
    registry: started.registry,
    ready: started.ready,
    workerPids: () => stages.flatMap((s) => s.pool.pids),
    events,
    eventAddresses,
    close,
    destroy,
    [Symbol.asyncDispose]: close,
  };
}
