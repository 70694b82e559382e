/**
 * The daemon's commands: the whole pipeline in one process tree (`serve`), the
 * simulation, and the three split-mode daemons (`server`, `proxy`, `worker`).
 */
import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { pino } from 'pino';
import { type ButterflyOptions, startButterfly } from '../embedded.js';
import { InvalidOptionError } from '../errors.js';
import { EventBus } from '../events.js';
import { startFrontEnd } from '../front-end.js';
import type { Logger } from '../logger.js';
import { type Readiness, type StageSample, StageBoard, StageReporter, createRegistry, AdminServer } from '../metrics/index.js';
import { COMMAND_NAMES, type Command, type OptionName, checkMessageRoom, defaultOf, flagOf, specOf } from '../options.js';
import { Proxy } from '../proxy/index.js';
import { PipelineClient, SERVER_OPTION_NAMES, type ServerOptions } from '../server/index.js';
import { type PipelineDescription, loadPipelineFile, prepareStage, resolveModule, validatePipeline } from '../stages/index.js';
import { RequestData, type ErrorData, type LinkSecurity, type ResponseData, isLocalAddress, readAllowList, readKeyFile, writeKeyPair } from '../wire/index.js';
import { StageWorker, WorkerPool } from '../worker/index.js';
import { type FileRef, type Settings, UsageError } from './settings.js';

type PinoLogger = ReturnType<typeof pino>;

/** A setting, or the schema's default for the command. */
function get<K extends keyof Settings & OptionName>(s: Settings, key: K, command: Command): NonNullable<Settings[K]> {
  return (s[key] ?? defaultOf(key, command)) as NonNullable<Settings[K]>;
}

function makeLogger(s: Settings, role: string, command: Command): { level: string; logger: PinoLogger } {
  const level = get(s, 'logLevel', command);
  return { level, logger: pino({ level, base: { pid: process.pid, role } }) };
}

/** The access log: its own child logger at info, so that `--access-log` shows even at a quieter level. */
function accessLog(s: Settings, logger: PinoLogger): Logger | undefined {
  return s.accessLog === true ? logger.child({ log: 'access' }, { level: 'info' }) : undefined;
}

/**
 * Handles SIGTERM and SIGINT from now on, so that a signal arriving while the command starts
 * is not fatal: the first signal runs the `stop` later given to the returned function (at
 * once if it came before), then exits 0, or 1 if `stop` failed; a second signal exits 1 at once.
 */
function onSignals(): (stop: () => Promise<void>) => void {
  let stop: (() => Promise<void>) | undefined;
  let signalled = false;
  const run = (): void => {
    stop!().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  const handler = (): void => {
    if (signalled) process.exit(1);
    signalled = true;
    if (stop !== undefined) run();
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return (given) => {
    stop = given;
    if (signalled) run();
  };
}

/** A message must hold the largest request: its body plus room for target and headers. */
function maxMessageBytes(s: Settings, command: Command, http: boolean): number {
  const max = get(s, 'maxMessageBytes', command);
  if (http) {
    try {
      checkMessageRoom(max, get(s, 'maxBodyBytes', command), '--max-message-bytes', '--max-body');
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  return max;
}

async function loadPipeline(s: Settings): Promise<PipelineDescription | undefined> {
  const source = s.pipeline;
  if (source === undefined) return undefined;
  try {
    if ('file' in source) return await loadPipelineFile(resolve(source.file.base, source.file.value));
    return validatePipeline(source.inline, source.base);
  } catch (err) {
    if (!(err instanceof InvalidOptionError)) throw err;
    if ('file' in source) throw new UsageError(`--pipeline: ${err.message}`);
    throw new UsageError(`${source.label}.${err.message}`);
  }
}

/** The front end's options that were set. */
function serverOptions(s: Settings): Partial<ServerOptions> {
  const o: Record<string, unknown> = {};
  for (const name of SERVER_OPTION_NAMES) if (s[name] !== undefined) o[name] = s[name];
  return o as Partial<ServerOptions>;
}

function pipelineOptions(s: Settings, command: Command, pipeline: PipelineDescription | undefined): Partial<ButterflyOptions> {
  const o: Partial<ButterflyOptions> = { workers: get(s, 'workers', command) };
  if (pipeline !== undefined) o.pipeline = pipeline;
  for (const name of ['transport', 'requestTimeoutMs', 'maxInFlight', 'maxQueue', 'heartbeatMs', 'liveness', 'drainTimeoutMs'] as const) {
    if (s[name] !== undefined) (o as Record<string, unknown>)[name] = s[name];
  }
  return o;
}

/** `butterflyd`: the whole pipeline in one process tree. */
export async function serve(s: Settings): Promise<void> {
  const { level, logger } = makeLogger(s, 'embedded', 'serve');
  const stopOnSignal = onSignals();
  const pipeline = await loadPipeline(s);
  const butterfly = await startButterfly({
    ...pipelineOptions(s, 'serve', pipeline),
    host: get(s, 'host', 'serve'),
    port: get(s, 'port', 'serve'),
    engine: get(s, 'engine', 'serve'),
    healthPath: get(s, 'healthPath', 'serve'),
    server: serverOptions(s),
    maxMessageBytes: maxMessageBytes(s, 'serve', true),
    adminPort: s.adminPort,
    adminHost: get(s, 'adminHost', 'serve'),
    ...(s.metricsRoutes === undefined ? {} : { metricsRoutes: s.metricsRoutes }),
    serverTiming: s.serverTiming === true,
    accessLog: accessLog(s, logger),
    workerLogLevel: level,
    logger,
  });
  stopOnSignal(() => butterfly.close());
}

/**
 * `butterflyd simulate COUNT`: COUNT requests through the pipeline, no HTTP: `GET` of the
 * target with `{n}` replaced by 1 to COUNT. Prints the answers by status and the rate;
 * with the built-in is_prime pipeline, also the count of primes.
 */
export async function simulate(s: Settings, countText: string | undefined): Promise<void> {
  if (countText === undefined || !/^[0-9]+$/.test(countText) || Number(countText) < 1 || Number(countText) > 1e9) {
    throw new UsageError(`simulate needs COUNT, an integer from 1 to 1000000000, got ${JSON.stringify(countText ?? '')}`);
  }
  const count = Number(countText);
  const { logger, level } = makeLogger(s, 'simulate', 'simulate');
  const pipeline = await loadPipeline(s);
  const target = get(s, 'target', 'simulate');
  if (!target.startsWith('/')) throw new UsageError(`--target must start with /, got ${JSON.stringify(target)}`);
  const options = pipelineOptions(s, 'simulate', pipeline);
  // Keep every request admissible: no more in flight than one stage's queue can hold.
  const window = Math.min(2048, options.maxInFlight ?? 2048);
  const maxQueue = Math.max(window, options.maxQueue ?? window);
  const butterfly = await startButterfly({
    ...options,
    http: false,
    maxInFlight: window,
    maxQueue,
    maxMessageBytes: maxMessageBytes(s, 'simulate', false),
    workerLogLevel: level,
    logger,
  });
  const client = butterfly.client;
  const started = process.hrtime.bigint();
  const countPrimes = pipeline === undefined;
  let nextNumber = 1;
  let answered = 0;
  let primes = 0;
  let failures = 0;
  const statuses = new Map<number, number>();
  const failureCodes = new Map<string, number>();
  await new Promise<void>((resolve) => {
    const onAnswer = (response: ResponseData | null, error: ErrorData | null): void => {
      answered++;
      const status = response?.status ?? error?.status ?? 0;
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (error !== null) {
        failures++;
        failureCodes.set(error.code, (failureCodes.get(error.code) ?? 0) + 1);
      } else if (response === null || response.status >= 400) failures++;
      else if (countPrimes && response.body.includes('"is_prime":true')) primes++;
      if (nextNumber <= count) submit();
      if (answered === count) resolve();
    };
    const submit = (): void => {
      const n = nextNumber++;
      client.submit(new RequestData('GET', target.replaceAll('{n}', String(n)), [], Buffer.alloc(0), 'simulation'), onAnswer);
    };
    while (nextNumber <= count && nextNumber <= window) submit();
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await butterfly.close();
  if (countPrimes) console.log(`checked ${count} numbers from 1 to ${count}: ${primes} primes, ${failures} failures`);
  else console.log(`sent ${count} requests to ${target}: ${failures} failures`);
  console.log(`answers by status: ${[...statuses].sort((x, y) => x[0] - y[0]).map(([status, n]) => `${status} ${n}`).join(', ')}`);
  if (failures > 0 && failureCodes.size > 0) console.log(`failures by code: ${[...failureCodes].map(([code, n]) => `${code} ${n}`).join(', ')}`);
  console.log(`${seconds.toFixed(2)} s, ${Math.round(count / seconds)} ${countPrimes ? 'checks' : 'requests'}/s`);
  process.exitCode = failures === 0 ? 0 : 1;
}

function required<K extends keyof Settings & OptionName>(s: Settings, key: K, command: Command): NonNullable<Settings[K]> {
  const value = s[key];
  if (value === undefined) throw new UsageError(`${COMMAND_NAMES[command].replace(/^butterflyd /, '')} needs --${flagOf(key)} ${specOf(key).arg ?? ''}`.trimEnd());
  return value as NonNullable<Settings[K]>;
}

/** Starts the admin server when `--admin-port` is given; undefined otherwise. */
async function startAdmin(s: Settings, command: Command, sources: Parameters<typeof createRegistry>[0], ready: () => Readiness, logger: Logger): Promise<AdminServer | undefined> {
  if (s.adminPort === undefined) return undefined;
  const admin = new AdminServer({ host: get(s, 'adminHost', command), port: s.adminPort, registry: createRegistry(sources), ready, logger });
  await admin.listen();
  return admin;
}

/** Reads a key setting's file, or fails naming its flag. */
async function keyFileOf<T>(name: 'curveKey' | 'curveServerKey' | 'curveAllow', ref: FileRef, read: (path: string) => Promise<T>): Promise<T> {
  const path = resolve(ref.base, ref.value);
  try {
    return await read(path);
  } catch (err) {
    throw new UsageError(`--${flagOf(name)}: ${(err as Error).message}`);
  }
}

/**
 * The CURVE keys of a split-mode daemon, from its key files (undefined without
 * --curve-key), after checking what it binds: tcp:// on an address other than loopback
 * needs keys, or --insecure, which is logged.
 */
async function linkSecurity(s: Settings, command: 'server' | 'proxy' | 'worker', binds: readonly (readonly [OptionName, string | undefined])[], logger: Logger): Promise<LinkSecurity | undefined> {
  const name = COMMAND_NAMES[command].replace(/^butterflyd /, '');
  if (s.curveKey === undefined) {
    for (const option of ['curveServerKey', 'curveAllow'] as const) {
      if (s[option] !== undefined) throw new UsageError(`${name}: --${flagOf(option)} needs --curve-key FILE`);
    }
    for (const [option, address] of binds) {
      if (address === undefined || isLocalAddress(address)) continue;
      if (s.insecure !== true) {
        throw new UsageError(
          `${name}: --${flagOf(option)} ${address} binds tcp:// on an address other than loopback without keys; give --curve-key FILE and --curve-allow FILE|DIR (butterflyd keygen makes keys), or --insecure to accept plaintext`,
        );
      }
      logger.warn({ option: `--${flagOf(option)}`, address }, 'insecure: plaintext link on a network address; anyone who can reach it can take or answer requests');
    }
    return undefined;
  }
  const own = await keyFileOf('curveKey', s.curveKey, readKeyFile);
  if (own.secretKey === undefined) throw new UsageError(`--curve-key: ${s.curveKey.value} holds no secret key; give the NAME.key_secret file butterflyd keygen wrote`);
  const mode = (await stat(resolve(s.curveKey.base, s.curveKey.value))).mode;
  // Group-readable is how Kubernetes mounts a Secret for a non-root user (fsGroup); readable by all is a leak.
  if ((mode & 0o007) !== 0) logger.warn({ file: s.curveKey.value, mode: (mode & 0o777).toString(8) }, 'secret key file readable by every user; chmod 600 it');
  const serverKey = s.curveServerKey === undefined ? own.publicKey : (await keyFileOf('curveServerKey', s.curveServerKey, readKeyFile)).publicKey;
  let allow: string[] = [];
  if (command !== 'worker') allow = await keyFileOf('curveAllow', required(s, 'curveAllow', command), readAllowList);
  return { publicKey: own.publicKey, secretKey: own.secretKey, serverKey, allow };
}

/** `butterflyd keygen NAME`: writes NAME.key and NAME.key_secret. */
export async function keygen(args: readonly string[]): Promise<void> {
  if (args.length !== 1 || args[0] === '' || args[0]!.startsWith('-')) throw new UsageError('keygen takes one NAME: butterflyd keygen NAME writes NAME.key and NAME.key_secret');
  try {
    const { publicFile, secretFile, publicKey } = await writeKeyPair(args[0]!);
    process.stdout.write(`${secretFile}: secret key (mode 0600), for this daemon's --curve-key\n${publicFile}: public key ${publicKey}, for its peers' --curve-allow (and --curve-server-key)\n`);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EEXIST') throw new UsageError(`keygen: ${args[0]}.key_secret or ${args[0]}.key already exists; it is left as it is`);
    throw err;
  }
}

/** `butterflyd server`: the HTTP front end and the loopback, alone; the same front end as `butterflyd`'s. */
export async function server(s: Settings): Promise<void> {
  const loopback = required(s, 'loopback', 'server');
  const stages = required(s, 'stages', 'server');
  const { logger } = makeLogger(s, 'server', 'server');
  const stopOnSignal = onSignals();
  const maxBytes = maxMessageBytes(s, 'server', true);
  const security = await linkSecurity(s, 'server', [['loopback', loopback], ['stats', s.stats], ['eventsPublish', s.eventsPublish], ['eventsSubscribe', s.eventsSubscribe], ['clients', s.clients]], logger);
  if ((s.eventsPublish === undefined) !== (s.eventsSubscribe === undefined)) throw new UsageError('server: --events-publish and --events-subscribe go together (the event forwarder binds both)');
  const bus = s.eventsPublish === undefined || s.eventsSubscribe === undefined ? undefined : new EventBus({ publish: s.eventsPublish, subscribe: s.eventsSubscribe, security, logger });
  const client = new PipelineClient({
    loopback,
    stages,
    security,
    hub: s.clients,
    maxMessageBytes: maxBytes,
    maxInFlight: get(s, 'maxInFlight', 'server'),
    requestTimeoutMs: get(s, 'requestTimeoutMs', 'server'),
    logger,
  });
  const board = s.stats === undefined ? undefined : new StageBoard({ address: s.stats, stages: stages.length, maxMessageBytes: maxBytes, security, logger });
  await client.start();
  await board?.start();
  await bus?.start();
  const front = await startFrontEnd({
    client,
    http: true,
    server: { ...serverOptions(s), host: get(s, 'host', 'server'), port: get(s, 'port', 'server'), engine: get(s, 'engine', 'server'), serverTiming: s.serverTiming === true },
    adminPort: s.adminPort,
    adminHost: get(s, 'adminHost', 'server'),
    metrics: false,
    metricsRoutes: get(s, 'metricsRoutes', 'server'),
    healthPath: get(s, 'healthPath', 'server'),
    accessLog: accessLog(s, logger),
    stageSamples: () => board?.samples() ?? [],
    stageReadiness: () => board?.readiness() ?? [],
    logger,
  });
  logger.info({ loopback, stages, stats: s.stats, events: s.eventsPublish }, 'server started');
  stopOnSignal(async () => {
    await front.drain(get(s, 'drainTimeoutMs', 'server'));
    await board?.close();
    await bus?.close();
    // Connections still open a second after the rest is answered are left to the exit.
    await front.stop(1000);
    logger.info({}, 'closed');
  });
}

/** `butterflyd proxy`: one stage's load balancer. */
export async function proxy(s: Settings): Promise<void> {
  const index = required(s, 'stageIndex', 'proxy');
  const frontend = required(s, 'frontend', 'proxy');
  const backend = required(s, 'backend', 'proxy');
  const loopback = required(s, 'loopback', 'proxy');
  const name = s.name ?? `stage-${index}`;
  const { logger } = makeLogger(s, 'proxy', 'proxy');
  const stopOnSignal = onSignals();
  const maxBytes = maxMessageBytes(s, 'proxy', false);
  const security = await linkSecurity(s, 'proxy', [['frontend', frontend], ['backend', backend]], logger);
  const balancer = new Proxy({
    security,
    stage: index,
    name,
    frontend,
    backend,
    next: s.next ?? null,
    loopback,
    events: s.eventsPublish ?? null,
    maxMessageBytes: maxBytes,
    maxQueue: get(s, 'maxQueue', 'proxy'),
    maxQueueBytes: get(s, 'maxQueueBytes', 'proxy'),
    heartbeatMs: get(s, 'heartbeatMs', 'proxy'),
    liveness: get(s, 'liveness', 'proxy'),
    drainTimeoutMs: get(s, 'drainTimeoutMs', 'proxy'),
    idempotent: s.idempotent === true,
    logger,
  });
  await balancer.start();
  const reporter = s.stats === undefined ? undefined : new StageReporter({ address: s.stats, index, name, stats: () => balancer.stats(), maxMessageBytes: maxBytes, security, logger });
  reporter?.start();
  const sample = (): StageSample => ({ index, name, up: balancer.state === 'running', stats: balancer.stats(), pool: undefined });
  const ready = (): Readiness => {
    const workers = balancer.stats().workers;
    return { ready: balancer.state === 'running' && workers > 0, stages: [{ index, name, workers }] };
  };
  const admin = await startAdmin(s, 'proxy', { stages: () => [sample()] }, ready, logger);
  stopOnSignal(async () => {
    await admin?.close();
    // Jobs already here finish (or time out) before the reports stop.
    await balancer.close();
    await reporter?.close();
    logger.info({ stage: name }, 'closed');
  });
}

/** `butterflyd worker`: one worker of a stage in this process, or a supervised pool of them. */
export async function worker(s: Settings): Promise<void> {
  const stageRef = required(s, 'stage', 'worker');
  const connect = required(s, 'connect', 'worker');
  const transport = get(s, 'transport', 'worker');
  if (transport === 'inline' || transport === 'adaptive') {
    throw new UsageError(`--transport must be thread or process for worker, whose proxy runs in another process, got "${transport}"`);
  }
  const { level, logger } = makeLogger(s, 'worker', 'worker');
  const stopOnSignal = onSignals();
  let stage;
  let module: string;
  try {
    // The pool's workers import the prepared module: a TypeScript stage's JavaScript, compiled once here.
    ({ stage, module } = await prepareStage(resolveModule(stageRef.value, stageRef.base)));
  } catch (err) {
    throw new UsageError(`--stage: cannot load ${JSON.stringify(stageRef.value)} (${err instanceof Error ? err.message : String(err)})`);
  }
  const maxBytes = maxMessageBytes(s, 'worker', false);
  const security = await linkSecurity(s, 'worker', [], logger);
  const workers = get(s, 'workers', 'worker');
  if (workers === 1) {
    const w = new StageWorker({
      stage,
      connect,
      concurrency: s.concurrency,
      prefetch: s.prefetch,
      maxMessageBytes: maxBytes,
      // Unique among the stage's workers, across hosts, containers whose pid is always 1 too.
      label: `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
      security,
      // This worker is the process's main thread: it may heartbeat from a thread of its own.
      pulse: true,
      logger,
    });
    const ready = (): Readiness => ({ ready: w.state === 'running', stages: [] });
    // Signals are handled from the start: a worker may wait a long time for its proxy.
    const started: { admin?: AdminServer | undefined } = {};
    stopOnSignal(async () => {
      await started.admin?.close();
      await w.close();
    });
    await w.start();
    started.admin = await startAdmin(s, 'worker', {}, ready, logger);
    return;
  }
  const pool = new WorkerPool({
    name: stage.name,
    module,
    connect,
    workers,
    // A split pool's proxy is elsewhere: its workers hold sockets, and only processes can be killed when stuck.
    transport: get(s, 'transport', 'worker'),
    concurrency: s.concurrency,
    prefetch: s.prefetch,
    maxMessageBytes: maxBytes,
    logLevel: level,
    security,
    logger,
  });
  const started: { admin?: AdminServer | undefined } = {};
  stopOnSignal(async () => {
    await started.admin?.close();
    await pool.close();
  });
  await pool.start();
  const sample = (): StageSample => ({ index: undefined, name: stage.name, up: pool.state === 'running', stats: undefined, pool: { running: pool.alive, restarts: pool.restarts } });
  const ready = (): Readiness => ({ ready: pool.state === 'running' && pool.alive > 0, stages: [] });
  started.admin = await startAdmin(s, 'worker', { stages: () => [sample()] }, ready, logger);
  logger.info({ stage: stage.name, workers, connect }, 'worker pool started');
}
