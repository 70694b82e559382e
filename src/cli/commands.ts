/**
 * The daemon's commands: the whole pipeline in one process tree (`serve`), the
 * simulation, and the three split-mode daemons (`server`, `proxy`, `worker`).
 */
import { hostname, availableParallelism } from 'node:os';
import { pino } from 'pino';
import { type ButterflyOptions, MESSAGE_HEADROOM_BYTES, startButterfly } from '../embedded.js';
import { InvalidOptionError } from '../errors.js';
import type { Logger } from '../logger.js';
import { AdminServer, HttpMetrics, type Readiness, type StageSample, StageBoard, StageReporter, createRegistry } from '../metrics/index.js';
import { Proxy } from '../proxy/index.js';
import { ButterflyServer, PipelineClient, SERVER_DEFAULTS } from '../server/index.js';
import { type PipelineDescription, importStage, loadPipelineFile, resolveModule, validatePipeline } from '../stages/index.js';
import { RequestData, type ErrorData, type ResponseData } from '../wire/index.js';
import { StageWorker, WorkerPool } from '../worker/index.js';
import { type Settings, UsageError } from './settings.js';

const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const DEFAULT_PORT = 8002;
const DEFAULT_ADMIN_HOST = '127.0.0.1';
const DEFAULT_HOST = '127.0.0.1';
/** The built-in pipeline's route; a route never requested costs nothing and shows nothing. */
const DEFAULT_METRICS_ROUTES: readonly string[] = ['/is_prime'];

type PinoLogger = ReturnType<typeof pino>;

function makeLogger(s: Settings, role: string, fallback = 'info'): { level: string; logger: PinoLogger } {
  const level = s.logLevel ?? fallback;
  return { level, logger: pino({ level, base: { pid: process.pid, role } }) };
}

/** The access log: its own child logger at info, so that `--access-log` shows even at a quieter level. */
function accessLog(s: Settings, logger: PinoLogger): Logger | undefined {
  return s.accessLog === true ? logger.child({ log: 'access' }, { level: 'info' }) : undefined;
}

/** SIGTERM or SIGINT run `stop` once; a second signal exits at once. */
function onSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) process.exit(1);
    stopping = true;
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

/** A message must hold the largest request: its body plus room for target and headers. */
function maxMessageBytes(s: Settings, http: boolean): number {
  const max = s.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const body = s.maxBody ?? SERVER_DEFAULTS.maxBodyBytes;
  if (http && max < body + MESSAGE_HEADROOM_BYTES) {
    throw new UsageError(`--max-message-bytes must be at least --max-body + ${MESSAGE_HEADROOM_BYTES} (${body + MESSAGE_HEADROOM_BYTES}), got ${max}`);
  }
  return max;
}

async function loadPipeline(s: Settings): Promise<PipelineDescription | undefined> {
  const source = s.pipeline;
  if (source === undefined) return undefined;
  try {
    if ('file' in source) {
      const { resolve } = await import('node:path');
      return await loadPipelineFile(resolve(source.file.base, source.file.value));
    }
    return validatePipeline(source.inline, source.base);
  } catch (err) {
    if (!(err instanceof InvalidOptionError)) throw err;
    if ('file' in source) throw new UsageError(`--pipeline: ${err.message}`);
    throw new UsageError(`${source.label}.${err.message}`);
  }
}

function pipelineOptions(s: Settings, pipeline: PipelineDescription | undefined): Partial<ButterflyOptions> {
  const o: Partial<ButterflyOptions> = { workers: s.workers ?? availableParallelism() };
  if (pipeline !== undefined) o.pipeline = pipeline;
  if (s.transport !== undefined) o.transport = s.transport;
  if (s.requestTimeout !== undefined) o.requestTimeoutMs = s.requestTimeout;
  if (s.maxInFlight !== undefined) o.maxInFlight = s.maxInFlight;
  if (s.maxQueue !== undefined) o.maxQueue = s.maxQueue;
  if (s.heartbeat !== undefined) o.heartbeatMs = s.heartbeat;
  if (s.drainTimeout !== undefined) o.drainTimeoutMs = s.drainTimeout;
  return o;
}

/** `butterflyd`: the whole pipeline in one process tree. */
export async function serve(s: Settings): Promise<void> {
  const { level, logger } = makeLogger(s, 'embedded');
  const pipeline = await loadPipeline(s);
  const butterfly = await startButterfly({
    ...pipelineOptions(s, pipeline),
    host: s.host ?? DEFAULT_HOST,
    port: s.port ?? DEFAULT_PORT,
    engine: s.engine ?? 'node',
    healthPath: s.healthPath ?? '/health',
    server: s.maxBody === undefined ? {} : { maxBodyBytes: s.maxBody },
    maxMessageBytes: maxMessageBytes(s, true),
    adminPort: s.adminPort,
    adminHost: s.adminHost ?? DEFAULT_ADMIN_HOST,
    metricsRoutes: s.metricsRoutes ?? DEFAULT_METRICS_ROUTES,
    serverTiming: s.serverTiming === true,
    accessLog: accessLog(s, logger),
    workerLogLevel: level,
    logger,
  });
  onSignals(() => butterfly.close());
}

/** `butterflyd simulate COUNT`: every number from 1 to COUNT through the pipeline, no HTTP. */
export async function simulate(s: Settings, countText: string | undefined): Promise<void> {
  if (countText === undefined || !/^[0-9]+$/.test(countText) || Number(countText) < 1 || Number(countText) > 1e9) {
    throw new UsageError(`simulate needs COUNT, an integer from 1 to 1000000000, got ${JSON.stringify(countText ?? '')}`);
  }
  const count = Number(countText);
  const { logger, level } = makeLogger(s, 'simulate', 'warn');
  const options = pipelineOptions(s, await loadPipeline(s));
  // Keep every request admissible: no more in flight than one stage's queue can hold.
  const window = Math.min(2048, options.maxInFlight ?? 2048);
  const maxQueue = Math.max(window, options.maxQueue ?? window);
  const butterfly = await startButterfly({
    ...options,
    http: false,
    maxInFlight: window,
    maxQueue,
    maxMessageBytes: maxMessageBytes(s, false),
    workerLogLevel: level,
    logger,
  });
  const client = butterfly.client;
  const started = process.hrtime.bigint();
  let nextNumber = 1;
  let answered = 0;
  let primes = 0;
  let failures = 0;
  const failureCodes = new Map<string, number>();
  await new Promise<void>((resolve) => {
    const onAnswer = (response: ResponseData | null, error: ErrorData | null): void => {
      answered++;
      if (error !== null) {
        failures++;
        failureCodes.set(error.code, (failureCodes.get(error.code) ?? 0) + 1);
      } else if (response === null || response.status !== 200) failures++;
      else if (response.body.includes('"is_prime":true')) primes++;
      if (nextNumber <= count) submit();
      if (answered === count) resolve();
    };
    const submit = (): void => {
      const n = nextNumber++;
      client.submit(new RequestData('GET', `/is_prime?possible_prime=${n}`, [], Buffer.alloc(0), 'simulation'), onAnswer);
    };
    while (nextNumber <= count && nextNumber <= window) submit();
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await butterfly.close();
  console.log(`checked ${count} numbers from 1 to ${count}: ${primes} primes, ${failures} failures`);
  if (failures > 0) console.log(`failures by code: ${[...failureCodes].map(([code, n]) => `${code} ${n}`).join(', ')}`);
  console.log(`${seconds.toFixed(2)} s, ${Math.round(count / seconds)} checks/s`);
  process.exitCode = failures === 0 ? 0 : 1;
}

function required<K extends keyof Settings>(s: Settings, key: K, command: string, flag: string, arg: string): NonNullable<Settings[K]> {
  const value = s[key];
  if (value === undefined) throw new UsageError(`${command} needs --${flag} ${arg}`);
  return value as NonNullable<Settings[K]>;
}

/** Starts the admin server when `--admin-port` is given; undefined otherwise. */
async function startAdmin(s: Settings, sources: Parameters<typeof createRegistry>[0], ready: () => Readiness, logger: Logger): Promise<AdminServer | undefined> {
  if (s.adminPort === undefined) return undefined;
  const admin = new AdminServer({ host: s.adminHost ?? DEFAULT_ADMIN_HOST, port: s.adminPort, registry: createRegistry(sources), ready, logger });
  await admin.listen();
  return admin;
}

/** `butterflyd server`: the HTTP front end and the loopback, alone. */
export async function server(s: Settings): Promise<void> {
  const loopback = required(s, 'loopback', 'server', 'loopback', 'ADDR');
  const stages = required(s, 'stages', 'server', 'stages', 'ADDR,ADDR,...');
  const { logger } = makeLogger(s, 'server');
  const maxBytes = maxMessageBytes(s, true);
  const client = new PipelineClient({
    loopback,
    stages,
    maxMessageBytes: maxBytes,
    ...(s.maxInFlight === undefined ? {} : { maxInFlight: s.maxInFlight }),
    ...(s.requestTimeout === undefined ? {} : { requestTimeoutMs: s.requestTimeout }),
    logger,
  });
  const board = s.stats === undefined ? undefined : new StageBoard({ address: s.stats, stages: stages.length, maxMessageBytes: maxBytes, logger });
  const access = accessLog(s, logger);
  const http =
    s.adminPort !== undefined || access !== undefined
      ? new HttpMetrics({ routes: s.metricsRoutes ?? DEFAULT_METRICS_ROUTES, healthPath: s.healthPath ?? '/health', accessLog: access })
      : undefined;
  const front = new ButterflyServer({
    client,
    host: s.host ?? DEFAULT_HOST,
    port: s.port ?? DEFAULT_PORT,
    engine: s.engine ?? 'node',
    healthPath: s.healthPath ?? '/health',
    ...(s.maxBody === undefined ? {} : { maxBodyBytes: s.maxBody }),
    observer: http,
    serverTiming: s.serverTiming === true,
    logger,
  });
  const ready = (): Readiness => {
    const stageReadiness = board?.readiness() ?? [];
    const serving = client.state === 'running' && front.state === 'running';
    return { ready: serving && stageReadiness.every((r) => r.workers !== undefined && r.workers > 0), stages: stageReadiness };
  };
  await client.start();
  await board?.start();
  const sources = { client, ...(http === undefined ? {} : { http }), ...(board === undefined ? {} : { stages: () => board.samples() }) };
  const admin = await startAdmin(s, sources, ready, logger);
  await front.listen();
  logger.info({ loopback, stages, stats: s.stats }, 'server started');
  const drainMs = s.drainTimeout ?? 10_000;
  onSignals(async () => {
    logger.info({ inFlight: client.inFlight }, 'draining');
    // Stop accepting now; the listener closes only once its connections have, so the drain
    // time runs from the signal, not from then.
    const frontClosed = front.close();
    const timer = new Promise<void>((resolve) => setTimeout(resolve, drainMs).unref());
    await Promise.race([client.drain(), timer]);
    await admin?.close();
    await board?.close();
    // Anything still in flight is answered 503; each answer closes its connection.
    await client.close();
    await Promise.race([frontClosed, new Promise<void>((resolve) => setTimeout(resolve, 1000).unref())]);
    logger.info({}, 'closed');
  });
}

/** `butterflyd proxy`: one stage's load balancer. */
export async function proxy(s: Settings): Promise<void> {
  const index = required(s, 'stageIndex', 'proxy', 'stage-index', 'I');
  const frontend = required(s, 'frontend', 'proxy', 'frontend', 'ADDR');
  const backend = required(s, 'backend', 'proxy', 'backend', 'ADDR');
  const loopback = required(s, 'loopback', 'proxy', 'loopback', 'ADDR');
  const name = s.name ?? `stage-${index}`;
  const { logger } = makeLogger(s, 'proxy');
  const maxBytes = maxMessageBytes(s, false);
  const balancer = new Proxy({
    stage: index,
    name,
    frontend,
    backend,
    next: s.next ?? null,
    loopback,
    maxMessageBytes: maxBytes,
    ...(s.maxQueue === undefined ? {} : { maxQueue: s.maxQueue }),
    ...(s.heartbeat === undefined ? {} : { heartbeatMs: s.heartbeat }),
    idempotent: s.idempotent === true,
    logger,
  });
  await balancer.start();
  const reporter = s.stats === undefined ? undefined : new StageReporter({ address: s.stats, index, name, stats: () => balancer.stats(), maxMessageBytes: maxBytes, logger });
  reporter?.start();
  const sample = (): StageSample => ({ index, name, up: balancer.state === 'running', stats: balancer.stats(), pool: undefined });
  const ready = (): Readiness => {
    const workers = balancer.stats().workers;
    return { ready: balancer.state === 'running' && workers > 0, stages: [{ index, name, workers }] };
  };
  const admin = await startAdmin(s, { stages: () => [sample()] }, ready, logger);
  onSignals(async () => {
    reporter?.close();
    await admin?.close();
    await balancer.close();
    logger.info({ stage: name }, 'closed');
  });
}

/** `butterflyd worker`: one worker of a stage in this process, or a supervised pool of them. */
export async function worker(s: Settings): Promise<void> {
  const stageRef = required(s, 'stage', 'worker', 'stage', 'NAME|FILE');
  const connect = required(s, 'connect', 'worker', 'connect', 'ADDR');
  const { level, logger } = makeLogger(s, 'worker');
  const module = resolveModule(stageRef.value, stageRef.base);
  let stage;
  try {
    stage = await importStage(module);
  } catch (err) {
    throw new UsageError(`--stage: cannot load ${JSON.stringify(stageRef.value)} (${err instanceof Error ? err.message : String(err)})`);
  }
  const maxBytes = maxMessageBytes(s, false);
  const workers = s.workers ?? 1;
  if (workers === 1) {
    const w = new StageWorker({
      stage,
      connect,
      concurrency: s.concurrency,
      maxMessageBytes: maxBytes,
      // Unique among the stage's workers, across hosts.
      label: `${hostname()}:${process.pid}`,
      // This worker is the process's main thread: it may heartbeat from a thread of its own.
      pulse: true,
      logger,
    });
    const ready = (): Readiness => ({ ready: w.state === 'running', stages: [] });
    // Signals are handled from the start: a worker may wait a long time for its proxy.
    const started: { admin?: AdminServer | undefined } = {};
    onSignals(async () => {
      await started.admin?.close();
      await w.close();
    });
    await w.start();
    started.admin = await startAdmin(s, {}, ready, logger);
    return;
  }
  const pool = new WorkerPool({
    name: stage.name,
    module,
    connect,
    workers,
    // A split pool's proxy is elsewhere: its workers hold sockets, and only processes can be killed when stuck.
    transport: s.transport ?? 'process',
    concurrency: s.concurrency,
    maxMessageBytes: maxBytes,
    logLevel: level,
    logger,
  });
  const started: { admin?: AdminServer | undefined } = {};
  onSignals(async () => {
    await started.admin?.close();
    await pool.close();
  });
  await pool.start();
  const sample = (): StageSample => ({ index: undefined, name: stage.name, up: pool.state === 'running', stats: undefined, pool: { running: pool.alive, restarts: pool.restarts } });
  const ready = (): Readiness => ({ ready: pool.state === 'running' && pool.alive > 0, stages: [] });
  started.admin = await startAdmin(s, { stages: () => [sample()] }, ready, logger);
  logger.info({ stage: stage.name, workers, connect }, 'worker pool started');
}
